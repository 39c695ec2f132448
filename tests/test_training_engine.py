"""train --engine / --precision, the fused Adam and the CUDA-ready batch loop, on the CPU."""
import json
import math

import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.data import load_split
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import ENGINES, build_model
from fer2neuro.training.device import autocast
from fer2neuro.training.loop import Batches, train_epoch
from fer2neuro.training.losses import output_loss
from fer2neuro.training.optim import build_optimizer, implementation

TINY = ["--data", "synthetic", "--preset", "small", "--epochs", "1", "--limit", "64", "--val-limit", "32",
        "--timesteps", "2", "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def train_tiny(out, *extra):
    result = invoke("train", *TINY, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("engine", ENGINES)
def test_each_engine_trains_and_is_recorded(engine, tmp_path):
    metrics = train_tiny(tmp_path / engine, "--engine", engine)
    options = metrics["config"]["training"]
    assert options["engine"] == engine and options["precision"] == "fp32"
    assert metrics["optimizer"] == "Adam (fused)"
    assert math.isfinite(metrics["epochs"][0]["train_loss"])


def test_bf16_trains_on_cpu_and_keeps_float32_weights(tmp_path):
    metrics = train_tiny(tmp_path / "bf16", "--precision", "bf16")
    assert metrics["config"]["training"]["precision"] == "bf16"
    epoch = metrics["epochs"][0]
    assert math.isfinite(epoch["train_loss"]) and math.isfinite(epoch["val_loss"])
    last = torch.load(tmp_path / "bf16" / "last.pt", weights_only=True)
    assert {v.dtype for v in last["state_dict"].values() if v.is_floating_point()} == {torch.float32}
    moments = [t for s in last["train_state"]["optimizer"]["state"].values() for t in s.values()]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    # evaluate in bf16 reproduces the bf16 run's own PublicTest figure
    result = invoke("evaluate", tmp_path / "bf16" / "best.pt", "--limit", "32", "--precision", "bf16", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


@pytest.mark.parametrize("option, value", [("--engine", "cuda-graphs"), ("--precision", "fp16")])
def test_bad_values_are_click_errors(option, value, tmp_path):
    result = invoke("train", *TINY, "--out", tmp_path / "r", option, value)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and option in errors[0] and value in errors[0], result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "r").exists()


def test_resume_may_change_engine_not_precision(tmp_path):
    run = tmp_path / "run"
    train_tiny(run, "--engine", "fused")
    result = invoke("train", *TINY, "--epochs", "2", "--resume", "--out", run, "--precision", "bf16")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: --resume: option 'precision' was 'fp32' in {run / 'last.pt'}, now 'bf16'"]
    metrics = train_tiny(run, "--epochs", "2", "--resume", "--engine", "snntorch")
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert metrics["config"]["training"]["engine"] == "snntorch"


def test_runs_saved_before_engine_and_precision_existed_resume(tmp_path):
    run = tmp_path / "run"
    train_tiny(run)
    raw = torch.load(run / "last.pt", weights_only=True)
    for key in ("engine", "precision"):
        del raw["train_state"]["options"][key]
    torch.save(raw, run / "last.pt")
    assert [e["epoch"] for e in train_tiny(run, "--epochs", "2", "--resume")["epochs"]] == [1, 2]


def small_model(seed=0):
    torch.manual_seed(seed)
    return build_model(preset_config("small", timesteps=2))


def test_bf16_autocast_reaches_the_layers_and_not_the_loss():
    model = small_model()
    seen = []
    model.fc1.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    x, y = torch.rand(4, 1, 48, 48), torch.tensor([0, 1, 2, 3])
    with autocast("cpu", "bf16"):
        loss = output_loss(model(x), y, 0.1)
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32
    loss.backward()
    assert model.fc1.weight.grad.dtype == torch.float32


def test_fused_adam_stays_close_to_the_for_loop_adam():
    models = [small_model(), small_model()]
    optimizers = [build_optimizer(models[0].parameters(), 1e-3, "cpu"),
                  torch.optim.Adam(models[1].parameters(), lr=1e-3, foreach=False)]
    assert implementation(optimizers[0]) == "fused" and implementation(optimizers[1]) == "for-loop"
    for step in range(3):
        torch.manual_seed(100 + step)
        grads = [torch.randn_like(p) * 1e-2 for p in models[0].parameters()]
        for model, opt in zip(models, optimizers):
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_build_optimizer_falls_back_to_foreach_where_fused_is_refused(monkeypatch):
    real = torch.optim.Adam

    def adam(params, **kwargs):
        if kwargs.get("fused"):
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                               "supported devices")
        return real(params, **kwargs)

    monkeypatch.setattr(torch.optim, "Adam", adam)
    assert implementation(build_optimizer(small_model().parameters(), 1e-3, "cpu")) == "foreach"


def test_a_run_saved_with_the_loop_adam_resumes_exactly_with_it(tmp_path, monkeypatch):
    """Runs started before the fused Adam keep theirs on --resume: 2 + 1
    resumed epochs == 3 epochs, all with torch's default Adam."""
    from fer2neuro.training import run

    def run_with(out, epochs, resume=False):
        options = dict(out=str(out), data="synthetic", preset="small", limit=64, val_limit=32, timesteps=2,
                       batch_size=32, progress=False)
        return run.train(run.TrainOptions(epochs=epochs, resume=resume, **options))

    with monkeypatch.context() as m:
        m.setattr(run, "build_optimizer", lambda params, lr, device, weight_decay=0.0: torch.optim.Adam(params, lr=lr))
        assert run_with(tmp_path / "a", 3)["optimizer"] == "Adam (for-loop)"
        run_with(tmp_path / "b", 2)
    assert run_with(tmp_path / "b", 3, resume=True)["optimizer"] == "Adam (for-loop)"
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_batches_flip_follows_the_generator():
    data = load_split("synthetic", "PublicTest", limit=20)
    plain = torch.cat([x for x, _ in Batches(data, 8, torch.device("cpu"))])
    flipped = torch.cat([x for x, _ in Batches(data, 8, torch.device("cpu"), flip=True,
                                                 generator=torch.Generator().manual_seed(3))])
    g = torch.Generator().manual_seed(3)
    mirror = torch.cat([torch.rand(n, generator=g) < 0.5 for n in (8, 8, 4)])
    assert 0 < mirror.sum() < 20
    assert torch.equal(flipped[mirror], plain[mirror].flip(-1))
    assert torch.equal(flipped[~mirror], plain[~mirror])


def test_train_epoch_reports_the_same_figures_without_a_progress_bar():
    data = load_split("synthetic", "Training", limit=32)
    results = []
    for progress in (True, False):
        model = small_model()
        opt = build_optimizer(model.parameters(), 1e-3, "cpu")
        batches = Batches(data, 16, torch.device("cpu"), shuffle=True, generator=torch.Generator().manual_seed(0))
        results.append(train_epoch(model, batches, opt, smoothing=0.1, progress=progress))
    assert results[0] == results[1]
    assert results[0]["train_samples"] == 32 and 0.0 <= results[0]["train_accuracy"] <= 1.0


@pytest.mark.slow
@pytest.mark.lava
def test_a_checkpoint_trained_with_the_fused_engine_verifies_on_every_float_backend(tmp_path):
    run = tmp_path / "run"
    result = invoke("train", "--data", "synthetic", "--preset", "small", "--epochs", "2", "--limit", "480",
                    "--val-limit", "64", "--engine", "fused", "--no-progress", "--out", run)
    assert result.exit_code == 0, result.output
    for target, path in (("nir", run / "model.nir"), ("lava", run / "lava"), ("onnx", run / "model.onnx")):
        exported = invoke("export", run / "best.pt", "--target", target, "--out", path)
        assert exported.exit_code == 0, exported.output
    result = invoke("verify", run / "best.pt", "--backends", "snntorch,nir,lava,onnx", "--nir", run / "model.nir",
                    "--lava", run / "lava", "--onnx", run / "model.onnx", "--samples", "3", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["equivalent"]
    assert set(report["backends"]) == {"nir", "lava", "onnx"}
    for name, backend in report["backends"].items():
        assert backend["exact_required"] and backend["counts_equal"], name
        layers = backend["layers"]
        assert layers["lif1"]["reference_spikes"] > 0 and layers["if2"]["reference_spikes"] > 0
        assert all(layer["match_fraction"] == 1.0 for layer in layers.values()), name
