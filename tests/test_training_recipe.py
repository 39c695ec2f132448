"""Honest model selection, evaluation figures, the recipes' parts and the time budget."""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.data import FERDataset, load_splits
from fer2neuro.data.holdout import duplicates_of, validation_split
from fer2neuro.errors import ConfigError
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model
from fer2neuro.training.augment import Augment
from fer2neuro.training.init import rate_initialise
from fer2neuro.training.metrics import Evaluation, mcnemar_exact, wilson_interval
from fer2neuro.training.optim import build_optimizer
from fer2neuro.training.recipe import RECIPES, recipe

TINY = ["--data", "synthetic", "--preset", "small", "--limit", "96", "--val-limit", "40", "--timesteps", "2",
        "--no-progress"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def dataset(labels, seed=0) -> FERDataset:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(labels), 48, 48), dtype=np.uint8)
    return FERDataset(images, np.asarray(labels, dtype=np.int64), ("a", "b", "c"), "toy")


# ---- validation split and duplicates ---------------------------------------

def test_validation_split_is_stratified_seeded_and_disjoint():
    data = dataset([0] * 50 + [1] * 30 + [2] * 20)
    train, val = validation_split(data, 0.1, seed=3)
    assert len(train) + len(val) == 100
    assert val.class_counts().tolist() == [5, 3, 2]
    train_keys = {img.tobytes() for img in train.images}
    assert not any(img.tobytes() in train_keys for img in val.images)
    again, _ = validation_split(data, 0.1, seed=3)
    other, _ = validation_split(data, 0.1, seed=4)
    assert np.array_equal(again.images, train.images) and not np.array_equal(other.images, train.images)
    with pytest.raises(ConfigError, match="--val-split"):
        validation_split(data, 1.5)


def test_duplicates_are_found_byte_for_byte():
    train = dataset([0, 1, 2, 0], seed=1)
    test = dataset([0, 1, 2], seed=2)
    test.images[1] = train.images[3]
    test.images[2] = train.images[0].copy()
    test.images[2, 0, 0] ^= 1                       # one grey level off: not a copy
    assert duplicates_of(test, train).tolist() == [False, True, False]


# ---- evaluation figures -----------------------------------------------------

def test_mcnemar_exact_by_hand():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0                                # balanced: capped at 1
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)             # all five one way: 2 * (1/2)^5
    assert mcnemar_exact(1, 9) == mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)
    # a large sample agrees with the chi-squared approximation (continuity-corrected)
    b, c = 231, 165
    chi2 = (abs(b - c) - 1) ** 2 / (b + c)
    assert mcnemar_exact(b, c) == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=0.05)
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_wilson_interval_and_macro_f1_by_hand():
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)       # the textbook example
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] <= 1.0
    e = Evaluation.from_predictions([0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 0, 0], ("a", "b", "c"))
    f1 = {"a": 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2), "b": 2 * (2 / 3) * 1 / (2 / 3 + 1),
          "c": 2 * 1 * (1 / 3) / (1 + 1 / 3)}
    for name, value in f1.items():
        assert e.per_class()[name]["f1"] == pytest.approx(value)
    assert e.macro_f1 == pytest.approx(sum(f1.values()) / 3)
    never = Evaluation.from_predictions([0, 1, 2], [0, 0, 0], ("a", "b", "c"))
    assert never.per_class()["b"]["precision"] is None and never.per_class()["b"]["f1"] == 0.0
    d = e.to_dict()
    assert d["accuracy_ci95"][0] < d["accuracy"] < d["accuracy_ci95"][1]


# ---- recipes, augmentation, initialisation ----------------------------------

def test_paper_recipe_is_spec_section_3():
    paper = RECIPES["paper"]
    assert paper.init == "he" and not paper.augment.enabled and paper.schedule == "constant"
    assert paper.weight_decay == 0.0 and paper.lr_factor(0.0) == paper.lr_factor(0.7) == 1.0
    params = [torch.nn.Parameter(torch.zeros(3, 3)), torch.nn.Parameter(torch.zeros(3))]
    assert type(build_optimizer(params, 1e-3, "cpu", weight_decay=paper.weight_decay)) is torch.optim.Adam
    adamw = build_optimizer(params, 1e-3, "cpu", weight_decay=0.05)
    assert type(adamw) is torch.optim.AdamW
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]      # no decay on BN-like vectors


def test_cosine_schedule_warms_up_then_decays_to_zero():
    r = recipe("fer2neuro", warmup=0.1)
    assert r.lr_factor(0.0) < 0.02 and r.lr_factor(0.1) == pytest.approx(1.0)
    assert r.lr_factor(0.55) == pytest.approx(0.5) and r.lr_factor(1.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError, match="schedule"):
        recipe("paper", schedule="step")


def shifted(image: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    out = torch.zeros_like(image)
    h, w = image.shape[-2:]
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        image[..., max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def test_augmentation_moves_whole_pixels_and_follows_the_generator():
    x = torch.rand(6, 1, 48, 48)
    assert torch.equal(Augment(0, 0, 0)(x), x)
    shift = Augment(shift=3, rotate=0, zoom=0)
    a = shift(x, torch.Generator().manual_seed(1))
    b = shift(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    for i in range(6):               # a whole-pixel shift with zero fill, as a crop of a zero-padded image
        assert any(torch.allclose(shifted(x[i], dx, dy), a[i], atol=1e-5)
                   for dx in range(-3, 4) for dy in range(-3, 4)), i
    assert Augment()(x, torch.Generator().manual_seed(2)).shape == x.shape
    with pytest.raises(ConfigError, match="zoom"):
        Augment(zoom=1.5)
    with pytest.raises(ConfigError, match="finite"):
        Augment(rotate=float("nan"))


def test_rate_initialisation_hits_its_targets_and_keeps_running_statistics():
    images = load_splits("synthetic", {"Training": 96})["Training"].tensors()[0]
    torch.manual_seed(0)
    model = build_model(preset_config("small", timesteps=4))
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    report = rate_initialise(model, images)
    assert report["lif_out"]["rate_before"] == 0.0            # the silent head of a fresh network
    for layer, r in report.items():
        assert abs(r["rate_after"] - r["target"]) <= 0.03, layer
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())
    model.train()
    with torch.no_grad():
        assert model.record(images)["lif_out"].mean() > 0.1


# ---- train: selection, recipe and time budget --------------------------------

def test_training_selects_on_a_validation_split_and_evaluates_publictest_once(tmp_path):
    result = invoke("train", *TINY, "--epochs", "2", "--out", tmp_path / "val")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    held = metrics["data"]["val_samples"]
    assert metrics["selection"].startswith(f"validation: {held} images held out of Training (0.1, stratified")
    assert metrics["data"]["train_samples"] + held == 96 and 7 <= held <= 14   # one or two of each class
    test = metrics["test"]
    assert test["split"] == "PublicTest" and test["n"] == 40 and test["duplicates_of_training"] == 0
    assert test["accuracy_ci95"][0] <= test["accuracy"] <= test["accuracy_ci95"][1]
    assert "PublicTest accuracy" in result.output


def test_select_on_test_is_the_papers_protocol_and_says_so(tmp_path):
    result = invoke("train", *TINY, "--epochs", "1", "--select-on", "test", "--out", tmp_path / "paper")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "paper" / "metrics.json").read_text())
    assert "paper's protocol" in metrics["selection"] and "optimistic" in metrics["selection"]
    assert "test" not in metrics and metrics["data"]["val_samples"] == 40


def test_the_fer2neuro_recipe_is_recorded_with_its_parts(tmp_path):
    result = invoke("train", *TINY, "--epochs", "1", "--recipe", "fer2neuro", "--init", "rate", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["config"]["recipe"]["init"] == "rate" and metrics["config"]["recipe"]["schedule"] == "cosine"
    assert metrics["optimizer"] == "AdamW (fused)"
    assert set(metrics["init"]) == {"if1", "if2", "lif1", "lif2", "lif_out"}
    assert metrics["epochs"][0]["lr"] < 1e-3                     # the cosine has come down at the end


def test_time_budget_stops_and_still_writes_every_output(tmp_path):
    out = tmp_path / "budget"
    result = invoke("train", "--data", "synthetic", "--preset", "small", "--timesteps", "2", "--no-progress",
                    "--limit", "2000", "--val-limit", "40", "--time-budget", "0.05", "--out", out)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["training"]["epochs"] == 10_000
    assert 1 <= len(metrics["epochs"]) < 50
    for name in ("best.pt", "last.pt", "curves.png", "metrics.json"):
        assert (out / name).is_file(), name
    assert "test" in metrics


@pytest.mark.parametrize("args, fragment", [
    (["--val-split", "1.5"], "--val-split"),
    (["--time-budget", "0"], "--time-budget"),
    (["--recipe", "sgd"], "--recipe"),
    (["--select-on", "train"], "--select-on"),
    (["--tta", "crop"], "--tta"),
])
def test_bad_training_options_are_one_line_errors(args, fragment, tmp_path):
    result = CliRunner().invoke(main, ["train", *TINY, "--out", str(tmp_path / "x"), *args])
    assert result.exit_code != 0 and fragment in result.output
    assert "Traceback" not in result.output


# ---- test-time augmentation ---------------------------------------------------

def test_flip_tta_adds_the_mirrored_faces_output_spikes(make_active_model):
    """``--tta flip`` predicts from the spike counts of the face and its
    mirror image together (ties by their summed output membranes); by hand on
    a model whose output spikes."""
    from fer2neuro.nirgraph.readout import decide, output_membrane
    from fer2neuro.training.loop import evaluate_model

    model = make_active_model("small").float()
    data = load_splits("synthetic", {"PublicTest": 24})["PublicTest"]
    x, y = data.tensors()
    with torch.no_grad():
        views = [model(v, with_currents=True) for v in (x, x.flip(-1))]
    own = (views[0][0].sum(0), output_membrane(views[0][1].double(), views[0][0], model.config.tau))
    mirror = (views[1][0].sum(0), output_membrane(views[1][1].double(), views[1][0], model.config.tau))
    both = (own[0] + mirror[0], own[1] + mirror[1])
    assert not torch.equal(decide(*own), decide(*both))          # the mirror changes some predictions
    for tta, (counts, membrane) in (("flip", both), ("none", own)):
        result = evaluate_model(model, data, tta=tta, batch_size=10)
        expected = Evaluation.from_predictions(y.numpy(), decide(counts, membrane).numpy(), data.class_names)
        assert np.array_equal(result.confusion, expected.confusion), tta
    with pytest.raises(ConfigError, match="test-time augmentation"):
        evaluate_model(model, data, tta="crop")


def test_training_with_flip_tta_reports_publictest_with_and_without_it(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", *TINY, "--epochs", "1", "--tta", "flip", "--out", run).exit_code == 0
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["tta"] == "flip" and 0 <= test["without_tta"]["accuracy"] <= 1
    result = invoke("evaluate", run / "best.pt", "--limit", "40", "--tta", "flip", "--json")
    assert json.loads(result.stdout)["tta"] == "flip"


# ---- evaluate --dedup -------------------------------------------------------

def test_evaluate_dedup_on_synthetic_drops_nothing_and_refuses_training(tmp_path):
    run = tmp_path / "run"
    assert invoke("train", *TINY, "--epochs", "1", "--out", run).exit_code == 0
    result = invoke("evaluate", run / "best.pt", "--limit", "50", "--dedup", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dedup"] == {"dropped": 0} and data["n"] == 50 and not math.isnan(data["macro_f1"])
    refused = CliRunner().invoke(main, ["evaluate", str(run / "best.pt"), "--split", "train", "--dedup"])
    assert refused.exit_code == 1 and "use it on a test split" in refused.output


DATA = os.environ.get("FER2NEURO_DATA")


@pytest.mark.data
@pytest.mark.skipif(not DATA, reason="FER2NEURO_DATA is not set")
def test_fer2013_publictest_has_280_copies_of_training_faces():
    splits = load_splits(Path(DATA) / "fer2013.csv.gz", {"Training": None, "PublicTest": None})
    assert int(duplicates_of(splits["PublicTest"], splits["Training"]).sum()) == 280
