"""``--device auto|cpu|cuda[:N]`` and ``--precision fp32|bf16``."""
from __future__ import annotations

import contextlib

import torch

from fer2neuro.errors import ConfigError

# fp32: everything in float32. bf16: conv and linear layers (and what else
# torch's autocast lists) compute in bfloat16, for speed; weights, gradients,
# optimizer state, neuron membranes and checkpoints stay float32. bfloat16
# keeps float32's exponent range, so no loss scaling is needed.
PRECISIONS = ("fp32", "bf16")


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


def check_precision(precision: str, device: torch.device | None = None) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}: use {' or '.join(PRECISIONS)}")
    if precision == "bf16" and device is not None and device.type == "cuda" \
            and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support")
    return precision


def autocast(device: torch.device | str, precision: str = "fp32"):
    """The context the forward pass and the loss run in: ``torch.autocast``
    to bfloat16 for ``bf16``, nothing for ``fp32``."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def setup_device(device: torch.device) -> None:
    """Per-process switches for fast training on ``device``: cuDNN picks the
    fastest convolution algorithm for the (fixed) batch shapes."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
