"""The command line: summary, train, evaluate; --json; one-line errors."""
import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.model.checkpoint import CONFIG_DIGEST_KEY, header_digest
from cli_errors import one_line_error

FAST = ["--preset", "small", "--limit", "64", "--val-limit", "32", "--batch-size", "32",
        "--timesteps", "2", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = invoke("train", "--data", "synthetic", "--epochs", "2", "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    return out


def test_summary_json_paper():
    result = invoke("summary", "--preset", "paper", "--timesteps", "4", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["total_params"] == 21_531_136
    assert data["mult_adds"] == 427_920_896
    assert round(data["mult_adds"] / 1e6, 2) == 427.92


def test_summary_table():
    result = invoke("summary", "--preset", "small")
    assert result.exit_code == 0
    assert "total trainable parameters: 626,000" in result.stdout
    assert "lif_out" in result.stdout


def test_train_writes_the_run_folder(trained):
    for name in ("best.pt", "last.pt", "metrics.json", "curves.png", "confusion.png"):
        assert (trained / name).stat().st_size > 0, name
    assert any((trained / "tensorboard").iterdir())
    metrics = json.loads((trained / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert 0.0 <= metrics["best_accuracy"] <= 1.0
    assert metrics["best_accuracy"] == max(e["val_accuracy"] for e in metrics["epochs"])
    assert metrics["config"]["model"]["class_names"][3] == "happy"
    assert metrics["config"]["training"]["batch_size"] == 32
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    assert ckpt["epoch"] == metrics["best_epoch"]


def test_evaluate_json(trained):
    result = invoke("evaluate", trained / "best.pt", "--data", "synthetic", "--split", "test",
                    "--limit", "70", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n"] == 70
    assert 0.0 <= data["accuracy"] <= 1.0
    assert set(data["per_class"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert sum(v["n"] for v in data["per_class"].values()) == 70
    assert sum(map(sum, data["confusion"])) == 70
    # the run's own PublicTest figure (the chosen checkpoint, evaluated once) is reproduced by evaluate
    test = invoke("evaluate", trained / "best.pt", "--data", "synthetic", "--limit", "32", "--json")
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["test"]["n"] == 32
    assert json.loads(test.stdout)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert json.loads(test.stdout)["macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])


def test_resume_continues_from_last(trained, tmp_path):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    result = invoke("train", "--data", "synthetic", "--epochs", "3", "--resume", "--out", run, *FAST)
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 3


def test_resume_is_exact(tmp_path):
    """2 epochs, then 1 more with --resume == 3 epochs in one go."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("train", "--data", "synthetic", "--epochs", "3", "--out", a, *FAST).exit_code == 0
    assert invoke("train", "--data", "synthetic", "--epochs", "2", "--out", b, *FAST).exit_code == 0
    assert invoke("train", "--data", "synthetic", "--epochs", "3", "--resume", "--out", b, *FAST).exit_code == 0
    wa = torch.load(a / "last.pt", weights_only=True)["state_dict"]
    wb = torch.load(b / "last.pt", weights_only=True)["state_dict"]
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.mark.parametrize("args, fragments", [
    (["evaluate", "missing.pt"], ["missing.pt", "no such checkpoint"]),
    (["train", "--data", "nowhere.csv", "--out", "{tmp}/r"], ["nowhere.csv", "no such file"]),
    (["evaluate", "{ckpt}", "--split", "holdout"], ["unknown split", "holdout"]),
    (["train", "--data", "synthetic", "--ferplus", "x.csv", "--out", "{tmp}/r"], ["--ferplus"]),
    (["train", "--out", "{tmp}/r", "--resume"], ["nothing to resume"]),
    (["train", "--out", "{run}"], ["already holds a training run", "--resume"]),
    (["train", "--out", "{tmp}/r", "--device", "tpu"], ["device"]),
])
def test_errors_are_one_line(args, fragments, trained, tmp_path):
    args = [a.format(tmp=tmp_path, ckpt=trained / "best.pt", run=trained) for a in args]
    one_line_error(invoke(*args), *fragments)


def test_checkpoint_of_another_model(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    one_line_error(invoke("evaluate", tmp_path / "other.pt"), "not a fer2neuro checkpoint")


def test_class_mismatch_between_checkpoint_and_data(trained, tmp_path):
    # a FER2013-style CSV whose labels are fine, but evaluated with an 8-class checkpoint
    raw = torch.load(trained / "best.pt", weights_only=True)
    raw["config"]["class_names"] = list("abcdefg")
    raw[CONFIG_DIGEST_KEY] = header_digest(raw["config"], raw["deployment"])   # the config's own SHA-256
    torch.save(raw, tmp_path / "renamed.pt")
    one_line_error(invoke("evaluate", tmp_path / "renamed.pt", "--data", "synthetic", "--limit", "7"),
                   "trained on 7 classes")


def test_json_is_one_object_on_stdout(trained):
    result = invoke("evaluate", trained / "best.pt", "--limit", "14", "--json")
    assert len(result.stdout.strip().splitlines()) == 1
    json.loads(result.stdout)


def test_console_script_and_module_entry_point():
    result = subprocess.run([sys.executable, "-m", "fer2neuro", "summary", "--preset", "paper", "--json"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["total_params"] == 21_531_136
    bad = subprocess.run([sys.executable, "-m", "fer2neuro", "evaluate", "/no/such.pt"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines() == ["Error: /no/such.pt: no such checkpoint file"]


def test_every_command_has_examples_in_help():
    for command in ("summary", "train", "evaluate", "export", "simulate", "verify", "report", "visualize"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Examples:" in result.stdout, command


def test_quickstart_example_runs(tmp_path):
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
    result = subprocess.run([sys.executable, str(script), "--steps", "3", "--out", str(tmp_path / "q.pt")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "accuracy" in result.stdout and (tmp_path / "q.pt").is_file()


def test_reproduce_table6_quick_runs_every_variant(tmp_path):
    import json
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "examples" / "reproduce_table6.py"
    result = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path / "t6")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "t6" / "table6.md").read_text()
    for variant in ("T=4", "T=8 + Poisson + STDP", "CNN (CPCPCPFF)"):
        assert f"| {variant} |" in table
    results = json.loads((tmp_path / "t6" / "table6.json").read_text())
    assert all(0 <= r["synthetic"] <= 100 for r in results.values())
    stdp_run = tmp_path / "t6" / "synthetic" / "T=8_Poisson_STDP" / "metrics.json"
    assert "stdp" in json.loads(stdp_run.read_text())["epochs"][0]


def test_cpu_hour_example_refuses_bad_arguments_and_missing_data(tmp_path):
    import os
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "examples" / "train_cpu_hour.sh"
    for args, env, fragment in ((["--minutes", "x"], {}, "--minutes"), (["--samples", "0"], {}, "--samples"),
                                ([], {"FER2NEURO_DATA": str(tmp_path)}, "FER2NEURO_DATA"),
                                (["--qat-limit", "-3"], {}, "--qat-limit"), (["--bogus"], {}, "unknown argument")):
        result = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=60,
                                env={**os.environ, **env}, cwd=tmp_path)
        assert result.returncode == 2 and fragment in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.skipif(not __import__("os").environ.get("FER2NEURO_DATA"), reason="FER2NEURO_DATA is not set")
def test_cpu_hour_example_trains_the_deep_preset_and_verifies_it(tmp_path):
    """The documented hour-of-CPU command, for a few seconds: it trains the
    deep preset on the whole of FER2013, evaluates PublicTest (with and
    without flip TTA), verifies the chosen model spike-exact on NIR, Lava and
    ONNX, fine-tunes it for Loihi and verifies that bit-exact."""
    import os
    from pathlib import Path
    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "hour"
    result = subprocess.run(["bash", "examples/train_cpu_hour.sh", "--minutes", "0.1", "--samples", "2",
                             "--qat-limit", "16", "--out", str(out)], capture_output=True, text=True, timeout=900,
                            cwd=repo,
                            env={**os.environ, "PY": sys.executable})
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["model"]["preset"] == "deep" and metrics["config"]["recipe"]["loss"] == "current-ce"
    assert metrics["data"]["train_samples"] == 25_837 and metrics["test"]["n"] == 3_589
    assert metrics["test"]["tta"] == "flip" and 0 <= metrics["test"]["without_tta"]["accuracy"] <= 1
    report = json.loads((out / "verify.json").read_text())
    assert report["equivalent"] is True
    assert set(report["backends"]) >= {"nir", "lava", "onnx"}
    qat = json.loads((out / "qat" / "metrics.json").read_text())
    assert qat["after"]["samples"] == 16
    deployed = json.loads((out / "qat" / "verify.json").read_text())
    assert deployed["equivalent"] is True and deployed["qat"] == "loihi"
    assert all(entry["bit_exact"] for entry in deployed["qat_model_agreement"].values())


def test_malformed_csv_row_is_one_line_error_naming_file_and_line(tmp_path, trained):
    good = " ".join(["128"] * 2304)
    csv = tmp_path / "fer.csv"
    csv.write_text("emotion,pixels,Usage\n"
                   f"3,{good},Training\n"
                   f"3,{' '.join(['1'] * 2303)},Training\n"
                   f"3,{good},PublicTest\n")
    for args in (["train", "--data", csv, "--out", tmp_path / "r", "--no-progress"],
                 ["evaluate", trained / "best.pt", "--data", csv, "--split", "train"]):
        one_line_error(invoke(*args), str(csv), "line 3", "2303")
