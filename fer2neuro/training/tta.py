"""Test-time augmentation: several views of each face, one prediction.

A prediction under TTA is the class with the most output spikes summed over
the views (for the CNN baseline, the most summed logits), so it is the same
rule every backend applies to one view, applied to several.

- ``flip``: the face and its mirror image (2 views).
- ``tencrop``: the classic ten crops (the centre and the four corners, each
  also mirrored) written as shifts of the whole 48x48 face by
  ``TENCROP_SHIFT`` pixels with zeros coming in, which is what a crop of a
  zero-padded face is. The network keeps its input size, so nothing is
  resized; training's random shift (``augment.py``, up to 4 px) draws from
  the same family of images.

docs/training.md has what each one is worth on FER2013.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fer2neuro.errors import ConfigError

TTA_MODES = ("none", "flip", "tencrop")
TENCROP_SHIFT = 2                    # pixels: half of training's largest random shift


def check_tta(mode: str) -> str:
    if mode not in TTA_MODES:
        raise ConfigError(f"unknown test-time augmentation {mode!r}: use one of {', '.join(TTA_MODES)}")
    return mode


def shifted(images: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """(B, C, H, W) images moved right by ``dx`` and down by ``dy`` pixels,
    zeros where nothing was (the crop of a zero-padded image)."""
    if dx == 0 and dy == 0:
        return images
    h, w = images.shape[-2:]
    m = max(abs(dx), abs(dy))
    padded = F.pad(images, (m, m, m, m))
    return padded[..., m - dy:m - dy + h, m - dx:m - dx + w]


def views(images: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of ``mode`` of a batch of faces, the faces themselves first."""
    check_tta(mode)
    if mode == "none":
        return [images]
    if mode == "flip":
        return [images, images.flip(-1)]
    s = TENCROP_SHIFT
    crops = [shifted(images, dx, dy) for dx, dy in ((0, 0), (-s, -s), (s, -s), (-s, s), (s, s))]
    return crops + [crop.flip(-1) for crop in crops]
