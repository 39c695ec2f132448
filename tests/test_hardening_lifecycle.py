"""Issue 27, the run lifecycle and the kernel cache: --resume completes what a
kill left missing (the test evaluation, best.pt), the last line says what
happened, data that cannot teach or validate is reported at load time,
--reset-offset alone is refused, and a damaged or foreign cached kernel is
rebuilt or set aside with a warning instead of crashing the process."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.training import run
from cli_errors import one_line_error

# He init (--recipe paper): no feature initialisation, so a run takes a second or two
NET = ["--preset", "small", "--batch-size", "32", "--timesteps", "2", "--recipe", "paper", "--no-progress"]
FAST = ["--data", "synthetic", "--limit", "48", "--val-limit", "16", *NET]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def train(out, *extra):
    result = invoke("train", *FAST, "--out", out, *extra)
    assert result.exit_code == 0, result.output
    return result


def last_line(result) -> str:
    return result.stdout.strip().splitlines()[-1]


def metrics(out) -> dict:
    return json.loads((out / "metrics.json").read_text())


# -- --resume completes what is missing ---------------------------------------------------------------------------

def test_resume_after_a_kill_in_the_final_test_evaluation_evaluates_it(tmp_path, monkeypatch):
    out = tmp_path / "run"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt              # Ctrl-C while PublicTest is being evaluated

    with monkeypatch.context() as m:
        m.setattr(run, "_test_report", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run.train(run.TrainOptions(out=str(out), data="synthetic", preset="small", limit=48, val_limit=16,
                                       batch_size=32, timesteps=2, recipe="paper", epochs=2, progress=False))
    assert "test" not in metrics(out) and (out / "best.pt").is_file()

    resumed = train(out, "--epochs", "2", "--resume")
    test = metrics(out)["test"]
    assert test["split"] == "PublicTest" and test["n"] == 16
    assert "evaluated PublicTest" in last_line(resumed) and f"PublicTest accuracy {test['accuracy']:.4f}" \
        in last_line(resumed)

    again = train(out, "--epochs", "2", "--resume")       # now complete: nothing is evaluated or written
    assert last_line(again).endswith(f"nothing to train: {out} already holds 2 epochs (--epochs 2); "
                                     f"{out / 'best.pt'} unchanged")
    assert metrics(out)["test"] == test


def test_resume_writes_a_deleted_best_pt_again_without_changing_the_training(tmp_path):
    """best.pt deleted after epoch 1: --resume --epochs 2 ends with a best.pt,
    and its re-evaluation of last.pt draws no random numbers from the
    training (a Poisson encoder draws them): last.pt equals an uninterrupted
    run's bit for bit."""
    poisson = ("--encoder", "poisson")
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(whole, "--epochs", "2", *poisson)
    train(cut, "--epochs", "1", *poisson)
    (cut / "best.pt").unlink()
    resumed = train(cut, "--epochs", "2", "--resume", *poisson)
    assert (cut / "best.pt").is_file()
    assert "(it was missing: chosen again among last.pt and epoch 2)" in last_line(resumed)
    best = metrics(cut)["best"]
    assert best["epoch"] == 2 or (best["epoch"] == 1 and "best.pt was missing" in best["rederived"])
    assert torch.load(cut / "best.pt", weights_only=True)["epoch"] == best["epoch"] and "test" in metrics(cut)
    a = torch.load(whole / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(cut / "last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    (cut / "best.pt").unlink()                              # and with nothing left to train
    again = train(cut, "--epochs", "2", "--resume", *poisson)
    assert (cut / "best.pt").is_file() and "(it was missing: chosen again among last.pt)" in last_line(again)
    assert metrics(cut)["best"]["epoch"] == 2 and torch.load(cut / "best.pt", weights_only=True)["epoch"] == 2


def test_the_last_line_says_that_the_resumed_epochs_did_not_beat_the_best(tmp_path):
    out = tmp_path / "run"
    frozen = ("--lr", "1e-12")                  # the weights stay put: no later epoch is strictly better
    train(out, "--epochs", "1", *frozen)
    resumed = train(out, "--epochs", "3", "--resume", *frozen)
    assert [e["epoch"] for e in metrics(out)["epochs"]] == [1, 2, 3] and metrics(out)["best_epoch"] == 1
    assert last_line(resumed).endswith(f"no better epoch: epochs 2-3 did not beat epoch 1; {out / 'best.pt'} unchanged")
    assert "nothing to train" not in resumed.output

    (out / "best.pt").write_bytes((out / "best.pt").read_bytes()[:1000])     # damaged: said before training
    stamp = (out / "last.pt").stat().st_mtime_ns
    one_line_error(invoke("train", *FAST, "--out", out, "--epochs", "4", "--resume", *frozen),
                   str(out / "best.pt"), "delete it")
    assert (out / "last.pt").stat().st_mtime_ns == stamp


# -- data that cannot teach or validate ---------------------------------------------------------------------------

def write_csv(path, rows):
    """rows: (label, pixel row (2304 uint8), usage)."""
    path.write_text("emotion,pixels,Usage\n" + "".join(f"{label},{' '.join(map(str, pixels))},{usage}\n"
                                                      for label, pixels, usage in rows))
    return path


def faces(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 2304))


def test_a_one_class_training_set_is_an_error_before_any_work(tmp_path):
    images = faces(24)
    csv = write_csv(tmp_path / "one.csv", [(3, p, "Training") for p in images[:20]]
                    + [(i % 7, p, "PublicTest") for i, p in enumerate(images[20:])])
    one_line_error(invoke("train", *NET, "--data", csv, "--out", tmp_path / "r"),
                   "every training image (20) is of one class, 'happy'")
    assert not (tmp_path / "r").exists()


def test_copies_in_the_validation_split_and_missing_classes_are_warned_with_counts(tmp_path):
    images = faces(26)
    csv = write_csv(tmp_path / "six.csv", [(i % 3, p, "Training") for i, p in enumerate(images[:20]) for _ in range(6)]
                    + [(i % 3, p, "PublicTest") for i, p in enumerate(images[20:])])
    out = tmp_path / "r"
    result = invoke("train", *NET, "--data", csv, "--epochs", "1", "--out", out)
    assert result.exit_code == 0, result.output
    data = metrics(out)["data"]
    n_val = data["val_samples"]
    assert data["val_copies_of_training"] == n_val == 12          # every held-out row has 5 copies in training
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert any(f"{n_val} of {n_val} validation images (100%) are exact copies of training images" in w
               for w in warnings), result.stderr
    assert any("holds 3 of 7 classes (angry 42, disgust 42, fear 36)" in w and "happy, sad, surprise, neutral" in w
               for w in warnings), result.stderr


def test_distinct_images_give_no_copy_warning(tmp_path):
    from fer2neuro.data import load_split
    from fer2neuro.data.holdout import validation_split
    from fer2neuro.data.sanity import check_classes, copies_warning, count_copies

    full = load_split("synthetic", "Training", limit=200)
    train_set, val_set = validation_split(full, 0.1)
    assert check_classes(full) is None                              # all 7 classes
    assert count_copies(val_set, train_set) == 0 and copies_warning(0, val_set) is None
    twice = train_set.subset(np.concatenate([np.arange(len(train_set))] * 2))
    assert count_copies(twice.subset(range(10)), train_set) == 10


# -- --reset-offset -----------------------------------------------------------------------------------------------

def test_reset_offset_without_reset_interval_is_refused(tmp_path):
    out = tmp_path / "y.npz"
    one_line_error(invoke("simulate", tmp_path / "net.net", "--target", "loihi", "--input", tmp_path / "x.npy",
                          "--out", out, "--reset-offset", "2"), "--reset-offset needs --reset-interval")
    assert not out.exists()
    bad = invoke("simulate", tmp_path / "net.net", "--input", tmp_path / "x.npy", "--out", out,
                 "--reset-interval", "4", "--reset-offset", "-1")
    assert bad.exit_code == 2 and "--reset-offset" in bad.output     # Lava refuses a negative offset too


# -- the kernel cache ---------------------------------------------------------------------------------------------

needs_compiler = pytest.mark.skipif(not (os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")),
                                    reason="no C compiler")

LOAD = """
import torch
from fer2neuro.model import kernels, fused
from fer2neuro.model.neuron_step import NeuronParams
print("loaded" if kernels.load() is not None else f"fallback: {kernels.unavailable_reason()}")
x = torch.rand(4, 2, 8, 8, requires_grad=True)
fused.multistep(x * 2, NeuronParams.integrate_and_fire()).sum().backward()
assert x.grad.abs().sum() > 0
"""


def _python(code, cache, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FER2NEURO_CACHE": str(cache), "OMP_NUM_THREADS": "1", **env})


@needs_compiler
def test_a_damaged_or_foreign_cached_kernel_is_rebuilt_or_set_aside(tmp_path, monkeypatch):
    from fer2neuro.model import kernels

    cache = tmp_path / "cache"
    monkeypatch.setenv("FER2NEURO_CACHE", str(cache))
    library = kernels.build()                      # builds, loads nothing
    record = kernels.record_path(library)
    good = library.read_bytes()
    assert record.read_text().strip() == hashlib.sha256(good).hexdigest()

    # truncated (it died with SIGBUS in dlopen): rebuilt with a warning, and training works
    library.write_bytes(good[:20000])
    done = subprocess.run([sys.executable, "-m", "fer2neuro", "train", *FAST, "--epochs", "1",
                           "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FER2NEURO_CACHE": str(cache), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if "warning:" in line and "kernel" in line] == [
        f"warning: the cached fused-neuron kernel {library} is damaged (its SHA-256 differs from the one "
        "recorded when it was built); rebuilding it"]
    assert library.read_bytes() == good and (tmp_path / "run" / "best.pt").is_file()

    # damaged and no compiler to rebuild it: the torch ops, saying so
    library.write_bytes(good[:20000])
    done = _python(LOAD, cache, CC="/bin/false")
    assert done.returncode == 0 and done.stdout.startswith("fallback:"), done.stderr
    assert "could not be rebuilt" in done.stderr and "uses torch ops" in done.stderr

    # a foreign library (it gave an 'undefined symbol' traceback): without a
    # record it is rebuilt silently; with a forged record, set aside with a warning
    foreign = tmp_path / "foreign.c"
    foreign.write_text("int foreign(void) { return 1; }\n")
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(foreign)], check=True)
    record.unlink()
    done = _python(LOAD, cache)
    assert done.returncode == 0 and done.stdout.strip() == "loaded" and "warning" not in done.stderr, done.stderr
    assert library.read_bytes() == good
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(library), str(foreign)], check=True)
    record.write_text(hashlib.sha256(library.read_bytes()).hexdigest() + "\n")
    done = _python(LOAD, cache)
    assert done.returncode == 0 and "undefined symbol" in done.stdout, done.stderr
    assert done.stderr.count("warning:") == 1 and "cannot be loaded" in done.stderr and "Traceback" not in done.stderr
