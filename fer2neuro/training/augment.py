"""Training-time augmentation of a batch of faces, on the batch's device.

FER2013 has 28,709 training faces; without augmentation the small preset
reaches 68 % training accuracy against ~52 % on held-out faces. The usual
remedy for 48x48 faces is a random shift (random crop with padding), a
horizontal flip and a small rotation and zoom. All of them are one affine map
per image, so this module draws the maps and resamples the whole batch with
one ``affine_grid`` + ``grid_sample`` call (bilinear, zeros outside the
image, as a crop from a zero-padded image would be). The horizontal flip
stays in ``Batches`` (exact, no resampling).

Random numbers come from the run's CPU generator, so a run augments the same
way on every device and ``--resume`` continues the same sequence.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from fer2neuro.errors import ConfigError


@dataclass(frozen=True)
class Augment:
    """``shift``: largest shift in pixels (a random crop with that padding);
    ``rotate``: largest rotation in degrees; ``zoom``: largest relative
    change of scale. All drawn uniformly per image; zeros switch a part off."""

    shift: float = 4.0
    rotate: float = 10.0
    zoom: float = 0.1

    def __post_init__(self) -> None:
        for name in ("shift", "rotate", "zoom"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"augmentation {name} must be a finite number >= 0, got {value}")
        if self.zoom >= 1:
            raise ConfigError(f"augmentation zoom must be < 1, got {self.zoom}")

    @property
    def enabled(self) -> bool:
        return bool(self.shift or self.rotate or self.zoom)

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, H, W) images -> the same batch, each image moved by its own map."""
        if not self.enabled:
            return images
        b, _, h, w = images.shape

        def uniform(limit: float) -> torch.Tensor:
            return (torch.rand(b, generator=generator, dtype=torch.float64) * 2 - 1) * limit

        angle = uniform(math.radians(self.rotate))
        scale = 1 + uniform(self.zoom)
        shift_x = uniform(self.shift).round() * 2 / w      # whole pixels, in [-1, 1] grid units
        shift_y = uniform(self.shift).round() * 2 / h
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
        theta = theta.to(device=images.device, dtype=images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
