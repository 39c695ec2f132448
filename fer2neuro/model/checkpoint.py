"""Checkpoints: the model config, class names and weights in one file that
``torch.load(weights_only=True)`` can read (no pickled code)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import fer2neuro
from fer2neuro.atomic import atomic_path
from fer2neuro.errors import CheckpointError, ConfigError
from fer2neuro.model.config import ModelConfig
from fer2neuro.model.network import build_model

FORMAT = "fer2neuro.checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    config: ModelConfig
    state_dict: dict
    epoch: int = 0
    metrics: dict = field(default_factory=dict)
    train_state: dict = field(default_factory=dict)   # optimizer, RNG, options: for --resume
    deployment: dict = field(default_factory=dict)    # fixed-point fine-tuning: {"qat": target, "state_bounds": ...}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    def build(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> nn.Module:
        """The model with these weights, in eval mode."""
        model = build_model(self.config)
        try:
            model.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
            raise CheckpointError(f"weights do not fit the {self.config.preset!r} network the checkpoint "
                                  f"describes: {detail[:300]}") from None
        if self.deployment:
            model.deployment = dict(self.deployment)
        return model.to(device=device, dtype=dtype).eval()


def save_checkpoint(path: str | Path, model: nn.Module, config: ModelConfig, *, epoch: int = 0,
                    metrics: dict | None = None, train_state: dict | None = None) -> None:
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fer2neuro_version": fer2neuro.__version__,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "epoch": epoch,
        "metrics": metrics or {},
        "train_state": train_state or {},
        "deployment": dict(getattr(model, "deployment", {})),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many types on bad bytes
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable fer2neuro checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        what = "a bare state_dict" if isinstance(payload, dict) and payload and all(
            isinstance(v, torch.Tensor) for v in payload.values()) else f"a {type(payload).__name__}"
        raise CheckpointError(f"{path}: not a fer2neuro checkpoint (it holds {what}, "
                              f"no {FORMAT!r} header)")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {payload['format_version']} is newer than "
                              f"this fer2neuro understands ({FORMAT_VERSION}); upgrade fer2neuro")
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid model config in checkpoint ({exc})") from None
    return Checkpoint(config=config, state_dict=payload["state_dict"], epoch=int(payload.get("epoch", 0)),
                      metrics=payload.get("metrics", {}), train_state=payload.get("train_state", {}),
                      deployment=payload.get("deployment", {}))


def load_model(path: str | Path, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Checkpoint]:
    ckpt = load_checkpoint(path)
    return ckpt.build(device, dtype), ckpt
