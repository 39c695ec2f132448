"""Checkpoints: round trip, weights_only loading, atomic writes, clear errors."""
import os

import pytest
import torch

from fer2neuro.model.architecture import two_conv_template
from fer2neuro.atomic import atomic_path
from fer2neuro.errors import CheckpointError
from fer2neuro.model.checkpoint import CONFIG_DIGEST_KEY, header_digest, load_checkpoint, load_model, save_checkpoint
from fer2neuro.model.config import ModelConfig
from fer2neuro.model.network import build_model

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def config(**kw):
    return ModelConfig(preset="test", blocks=two_conv_template(4, (16, 8)), class_names=CLASSES, **kw)


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = config(timesteps=5, encoder="poisson")
    model = build_model(cfg)
    save_checkpoint(tmp_path / "m.pt", model, cfg, epoch=3, metrics={"best_accuracy": 0.5})
    raw = torch.load(tmp_path / "m.pt", weights_only=True)       # no pickled code inside
    assert raw["format"] == "fer2neuro.checkpoint"
    loaded, ckpt = load_model(tmp_path / "m.pt")
    assert ckpt.config == cfg and ckpt.epoch == 3 and ckpt.class_names == CLASSES
    assert ckpt.metrics["best_accuracy"] == 0.5
    x = torch.rand(2, 1, 48, 48)
    g = lambda: torch.Generator().manual_seed(7)
    assert torch.equal(model.eval()(x, g()), loaded(x, g()))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_not_a_torch_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable fer2neuro checkpoint"):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    cfg = config()
    save_checkpoint(tmp_path / "m.pt", build_model(cfg), cfg)
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "cut.pt")


def test_bare_state_dict_from_another_model(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a fer2neuro checkpoint.*bare state_dict"):
        load_checkpoint(tmp_path / "other.pt")


def test_pickled_code_is_refused(tmp_path):
    torch.save(torch.nn.Linear(3, 2), tmp_path / "module.pt")     # a whole pickled module
    with pytest.raises(CheckpointError, match="not a readable"):
        load_checkpoint(tmp_path / "module.pt")


def test_weights_that_do_not_fit_the_config(tmp_path):
    cfg = config()
    save_checkpoint(tmp_path / "m.pt", build_model(cfg), cfg)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    raw["config"]["blocks"][0]["conv"] = 8    # claims another width than the weights have
    raw[CONFIG_DIGEST_KEY] = header_digest(raw["config"], raw["deployment"])   # as a crafted file would
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(tmp_path / "bad.pt")


def test_newer_format_is_refused(tmp_path):
    cfg = config()
    save_checkpoint(tmp_path / "m.pt", build_model(cfg), cfg)
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(tmp_path / "new.pt")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "best.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["best.pt"]          # no temporary left behind
