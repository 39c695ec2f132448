"""Mixup (Zhang et al., 2018): train on convex blends of two faces, with the
loss blended the same way.

Each batch draws one weight ``lam ~ Beta(alpha, alpha)`` and one pairing
(a permutation of the batch); the network sees ``lam x + (1 - lam) x[pair]``
and the loss is ``lam L(y) + (1 - lam) L(y[pair])``. Every loss of
``losses.py`` is a function of one label, so any of them blends.

The draws come from the run's CPU generator, like the shuffling and the
augmentation, so ``--resume`` continues the same sequence. Under several
ranks each rank pairs the faces of its own shard (the generator's draws are
the same on every rank, so the ranks stay in step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fer2neuro.errors import ConfigError


def check_alpha(alpha: float) -> float:
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ConfigError(f"mixup alpha must be a finite number >= 0 (0: off), got {alpha}")
    return alpha


@dataclass(frozen=True, eq=False)
class Mixed:
    """A blended batch's second labels and the first labels' weight (and
    which face each was blended with)."""
    labels: torch.Tensor
    lam: float
    pair: torch.Tensor | None = None


def mix(images: torch.Tensor, labels: torch.Tensor, alpha: float,
        generator: torch.Generator | None = None) -> tuple[torch.Tensor, Mixed]:
    """(blended images, what the loss needs to blend) for one batch."""
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    pair = torch.randperm(len(labels), generator=generator).to(images.device)
    return images * lam + images[pair] * (1.0 - lam), Mixed(labels[pair], lam, pair)
