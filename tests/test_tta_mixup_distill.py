"""The training options of issue 25 beyond the network: ten-crop test-time
augmentation, mixup and distillation from a teacher. docs/training.md has
what each was worth on FER2013."""
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fer2neuro.cli import main
from fer2neuro.data import FER2013_CLASSES, load_splits
from fer2neuro.errors import ConfigError
from fer2neuro.model.checkpoint import load_checkpoint, save_checkpoint
from fer2neuro.model.config import preset_config
from fer2neuro.model.network import build_model
from fer2neuro.training.distill import DistillOptions, Teacher
from fer2neuro.training.loop import evaluate_model, forward_loss
from fer2neuro.training.losses import output_loss
from fer2neuro.training.metrics import Evaluation
from fer2neuro.training.mixup import Mixed, mix
from fer2neuro.nirgraph.readout import decide, output_membrane
from fer2neuro.training.tta import TENCROP_SHIFT, shifted, views

TINY = ["--data", "synthetic", "--preset", "small", "--limit", "96", "--val-limit", "40", "--timesteps", "2",
        "--no-progress"]


def invoke(*args, ok=True):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output
    return result


# ---- ten-crop TTA --------------------------------------------------------------

def test_a_shift_is_a_crop_of_the_zero_padded_face():
    image = torch.arange(1, 26, dtype=torch.float32).view(1, 1, 5, 5)
    right_down = shifted(image, 2, 1)
    expected = torch.zeros_like(image)
    expected[..., 1:, 2:] = image[..., :4, :3]               # pixel (i, j) moves to (i + 1, j + 2)
    assert torch.equal(right_down, expected)
    left_up = shifted(image, -1, -2)
    expected = torch.zeros_like(image)
    expected[..., :3, :4] = image[..., 2:, 1:]
    assert torch.equal(left_up, expected)
    assert shifted(image, 0, 0) is image


def test_tencrop_is_five_shifts_and_their_mirrors():
    faces = torch.rand(3, 1, 48, 48)
    ten = views(faces, "tencrop")
    assert len(ten) == 10 and ten[0] is faces
    s = TENCROP_SHIFT
    corners = {(dx, dy) for dx in (-s, s) for dy in (-s, s)}
    found = set()
    for view in ten[1:5]:
        found |= {(dx, dy) for dx, dy in corners if torch.equal(view, shifted(faces, dx, dy))}
    assert found == corners
    for plain, mirrored in zip(ten[:5], ten[5:]):
        assert torch.equal(mirrored, plain.flip(-1))
    assert len(views(faces, "flip")) == 2 and len(views(faces, "none")) == 1


def test_tencrop_predicts_from_the_spikes_summed_over_the_ten_views(make_active_model):
    model = make_active_model("small").float()
    data = load_splits("synthetic", {"PublicTest": 24})["PublicTest"]
    x, y = data.tensors()
    def summed(mode):                     # spike counts and output membranes, summed over the views
        counts, membrane = 0, 0
        with torch.no_grad():
            for view in views(x, mode):
                out, currents = model(view, with_currents=True)
                counts = counts + out.sum(0)
                membrane = membrane + output_membrane(currents.double(), out, model.config.tau)
        return decide(counts, membrane)

    ten, flip = summed("tencrop"), summed("flip")
    assert not torch.equal(ten, flip)                                # the eight extra views change something
    result = evaluate_model(model, data, tta="tencrop", batch_size=10)
    expected = Evaluation.from_predictions(y.numpy(), ten.numpy(), data.class_names)
    assert np.array_equal(result.confusion, expected.confusion)
    assert np.array_equal(result.correct(), ten.numpy() == y.numpy())


# ---- mixup -----------------------------------------------------------------------

def test_mixup_blends_pairs_of_faces_by_one_drawn_weight_and_follows_the_generator():
    faces = torch.rand(8, 1, 48, 48)
    labels = torch.arange(8) % 7
    blended, mixed = mix(faces, labels, 0.4, torch.Generator().manual_seed(3))
    again, same = mix(faces, labels, 0.4, torch.Generator().manual_seed(3))
    assert torch.equal(blended, again) and same.lam == mixed.lam and torch.equal(same.pair, mixed.pair)
    assert 0.0 < mixed.lam < 1.0
    assert sorted(mixed.pair.tolist()) == list(range(8)) and torch.equal(mixed.labels, labels[mixed.pair])
    assert torch.allclose(blended, faces * mixed.lam + faces[mixed.pair] * (1 - mixed.lam))
    lams = [mix(faces, labels, 0.2, torch.Generator().manual_seed(s))[1].lam for s in range(200)]
    assert np.mean([min(lam, 1 - lam) < 0.1 for lam in lams]) > 0.5      # Beta(0.2, 0.2) is U-shaped


def test_the_mixed_loss_is_the_blend_of_the_two_labels_losses(make_active_model):
    model = make_active_model("small").float()
    x = torch.rand(6, 1, 48, 48)
    y, other = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([6, 5, 4, 3, 2, 1])
    with torch.no_grad():
        out, currents = model(x, with_currents=True)
        expected = 0.3 * output_loss(out, y, 0.1, "current-ce", currents) \
            + 0.7 * output_loss(out, other, 0.1, "current-ce", currents)
        _, value = forward_loss(model, x, y, 0.1, "current-ce", mixed=Mixed(other, 0.3))
        _, plain = forward_loss(model, x, y, 0.1, "current-ce")
        _, whole = forward_loss(model, x, y, 0.1, "current-ce", mixed=Mixed(other, 1.0))
    assert torch.allclose(value, expected) and torch.equal(plain, whole)


# ---- distillation --------------------------------------------------------------------

def test_distillation_adds_the_temperature_scaled_kl_to_the_teachers_outputs(make_active_model):
    student = make_active_model("small", seed=0).float()
    cnn = build_model(preset_config("small", model="cnn", class_names=tuple(FER2013_CLASSES))).eval()
    teacher = Teacher(cnn, DistillOptions(weight=0.25, temperature=3.0))
    x, y = torch.rand(5, 1, 48, 48), torch.tensor([0, 1, 2, 3, 4])
    with torch.no_grad():
        out, currents = student(x, with_currents=True)
        own = output_loss(out, y, 0.1, "current-ce", currents)
        p = torch.softmax(cnn(x) / 3.0, -1)
        q = torch.log_softmax(currents.mean(0) / 3.0, -1)
        kd = (p * (p.log() - q)).sum(-1).mean() * 9.0
        _, value = forward_loss(student, x, y, 0.1, "current-ce", teacher=teacher)
    assert torch.allclose(value, 0.75 * own + 0.25 * kd, rtol=1e-5)
    # a student whose logits are the teacher's has nothing left to learn from it
    same = Teacher(cnn, DistillOptions(weight=1.0, temperature=3.0))
    assert same.blend(torch.tensor(5.0), cnn(x), x).abs() < 1e-6
    # the rate-mse loss has no currents of its own, the distillation still reads them
    _, value = forward_loss(student, x, y, 0.1, "rate-mse", teacher=teacher)
    assert torch.isfinite(value)


@pytest.mark.parametrize("weight, temperature", [(0.0, 4.0), (1.5, 4.0), (0.5, 0.0), (0.5, float("nan"))])
def test_bad_distillation_options_are_refused(weight, temperature):
    with pytest.raises(ConfigError):
        DistillOptions(weight=weight, temperature=temperature)


def test_a_cnn_teacher_trains_a_spiking_student_with_mixup_and_tencrop(tmp_path):
    teacher, student = tmp_path / "cnn", tmp_path / "snn"
    invoke("train", *TINY, "--model", "cnn", "--epochs", "1", "--out", teacher)
    result = invoke("train", *TINY, "--epochs", "1", "--teacher", teacher / "best.pt", "--mixup", "0.2",
                    "--tta", "tencrop", "--out", student)
    metrics = json.loads((student / "metrics.json").read_text())
    training = metrics["config"]["training"]
    assert training["teacher"] == str(teacher / "best.pt") and metrics["config"]["recipe"]["mixup"] == 0.2
    assert metrics["test"]["tta"] == "tencrop" and "without_tta" in metrics["test"]
    assert 0 <= metrics["epochs"][0]["train_accuracy"] <= 1 and "wrote" in result.output
    assert load_checkpoint(student / "best.pt").config.model == "snn"     # the teacher is not in it
    # a resume must distil from the same teacher
    refused = invoke("train", *TINY, "--epochs", "2", "--resume", "--mixup", "0.2", "--tta", "tencrop",
                     "--out", student, ok=False)
    assert refused.exit_code != 0 and "teacher" in refused.output and "Traceback" not in refused.output


def test_a_teacher_of_other_classes_or_no_file_is_a_one_line_error(tmp_path):
    eight = preset_config("small", num_classes=8, class_names=tuple(f"c{i}" for i in range(8)))
    other = tmp_path / "eight.pt"
    save_checkpoint(other, build_model(eight), eight)
    for path, fragment in ((other, "classifies 8 classes"), (tmp_path / "none.pt", "--teacher")):
        result = invoke("train", *TINY, "--epochs", "1", "--teacher", path, "--out", tmp_path / "run", ok=False)
        assert result.exit_code != 0 and fragment in result.output, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    result = invoke("train", *TINY, "--teacher", other, "--stdp-every", "1", "--out", tmp_path / "r", ok=False)
    assert result.exit_code != 0 and "--stdp-every" in result.output
