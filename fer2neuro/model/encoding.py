"""Input encoders of SPEC §1: ``direct`` (the image as a constant current) and
``poisson`` (each pixel spikes with probability equal to its value, each step)."""
from __future__ import annotations

import torch


def poisson_encode(images: torch.Tensor, timesteps: int,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Spike trains (T, *images.shape) with P(spike) = pixel value in [0, 1].

    Strict ``u < p``: a black pixel never spikes, a white one always does.
    Pass a seeded ``generator`` to reproduce the same trains on every backend.
    """
    uniform = torch.rand((timesteps, *images.shape), generator=generator,
                         dtype=images.dtype, device=images.device)
    return (uniform < images).to(images.dtype)


def poisson_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
