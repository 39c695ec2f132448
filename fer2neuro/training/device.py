"""``--device auto|cpu|cuda[:N]``."""
from __future__ import annotations

import torch

from fer2neuro.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but this torch build sees no CUDA GPU "
                          "(use --device auto or cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"unsupported device {name!r}: use auto, cpu or cuda")
    return device
