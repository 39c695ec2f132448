"""Training losses for the SNN's output layer (and the CNN baseline's logits).

The deployed network classifies by the output LIF layer's spike counts, and
every loss here trains that same network; they differ only in the gradient
they give it.

- ``rate-mse`` (the paper, SPEC §3): mean squared error between the output
  firing rates over T steps and the label-smoothed one-hot target. Its only
  path back into the network goes through the output neurons' surrogate
  gradient, and with T = 4 the rates move in steps of 1/4.
- ``rate-ce``: cross-entropy on the firing rates scaled by ``RATE_CE_SCALE``
  (a rate of 1 is a logit of 10).
- ``current-ce``: cross-entropy on the output layer's input current averaged
  over T (fc3's output, what drives the output LIFs), plus the rate MSE. The
  first term gives every class a gradient from the first step, where the
  output neurons may not fire yet; the second keeps the spike counts, which
  decide the class on every target, trained to follow the label.

``docs/training.md`` has the measurements that chose between them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fer2neuro.errors import ConfigError

RATE_CE_SCALE = 10.0


def smoothed_targets(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(1 - eps) * one_hot + eps / K."""
    one_hot = F.one_hot(labels, num_classes).to(torch.get_default_dtype())
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def rate_mse_loss(output_spikes: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    rates = output_spikes.mean(0)
    return F.mse_loss(rates, smoothed_targets(labels, rates.shape[-1], smoothing).to(rates))


def rate_ce_loss(output_spikes: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(output_spikes.mean(0) * RATE_CE_SCALE, labels, label_smoothing=smoothing)


def current_ce_loss(output_spikes: torch.Tensor, labels: torch.Tensor, smoothing: float,
                    currents: torch.Tensor | None) -> torch.Tensor:
    if currents is None:
        raise ValueError("the current-ce loss needs the output layer's currents (with_currents=True)")
    return (F.cross_entropy(currents.float().mean(0), labels, label_smoothing=smoothing)
            + rate_mse_loss(output_spikes, labels, smoothing))


# name -> loss of (output spikes, labels, smoothing, output currents or None)
_LOSS_FUNCTIONS = {
    "rate-mse": lambda out, y, eps, currents: rate_mse_loss(out, y, eps),
    "rate-ce": lambda out, y, eps, currents: rate_ce_loss(out, y, eps),
    "current-ce": current_ce_loss,
}
LOSSES = tuple(_LOSS_FUNCTIONS)


def check_loss(name: str) -> str:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}: use one of {', '.join(LOSSES)}")
    return name


def needs_currents(name: str) -> bool:
    """Whether the loss reads the output layer's input currents."""
    return name == "current-ce"


def output_loss(output: torch.Tensor, labels: torch.Tensor, smoothing: float, loss: str = "rate-mse",
                currents: torch.Tensor | None = None) -> torch.Tensor:
    """The loss ``loss`` of the SNN's output spikes (T, B, K), or label-smoothed
    cross-entropy of the CNN baseline's logits (B, K). Always in float32 or
    wider: under bf16 autocast the outputs may be bfloat16, the loss is not."""
    if output.dtype in (torch.bfloat16, torch.float16):
        output = output.float()
    if output.dim() != 3:                                     # the CNN's logits
        return F.cross_entropy(output, labels, label_smoothing=smoothing)
    return _LOSS_FUNCTIONS[check_loss(loss)](output, labels, smoothing, currents)
