"""Honest model selection: a validation split carved from Training, and the
test images that are copies of training images.

FER2013's PublicTest is a test split; choosing the best epoch on it (as the
paper does) makes the reported figure optimistic. ``validation_split`` holds
out a stratified, seeded part of Training to choose on instead, and
``duplicates_of`` finds the test images whose pixels appear in Training
(FER2013 has exact copies across its splits), so they can be reported apart.
"""
from __future__ import annotations

import hashlib

import numpy as np

from fer2neuro.data.dataset import FERDataset
from fer2neuro.errors import ConfigError


def validation_split(dataset: FERDataset, fraction: float, seed: int = 0) -> tuple[FERDataset, FERDataset]:
    """(train, validation): ``fraction`` of each class, drawn with ``seed``,
    goes to validation (at least one sample of every class that has two)."""
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--val-split must be a fraction in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(dataset.labels):
        members = np.flatnonzero(dataset.labels == label)
        n = int(round(fraction * len(members)))
        if len(members) >= 2:
            n = min(max(n, 1), len(members) - 1)
        held.append(rng.permutation(members)[:n])
    val_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    keep = np.ones(len(dataset), dtype=bool)
    keep[val_idx] = False
    if not keep.any() or not len(val_idx):
        raise ConfigError(f"--val-split {fraction}: {len(dataset)} training samples are too few to split")
    train = dataset.subset(np.flatnonzero(keep))
    val = dataset.subset(val_idx)
    val.name = f"{dataset.name} (validation {fraction:g})".strip()
    return train, val


def _digests(images: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in images]


def duplicates_of(dataset: FERDataset, reference: FERDataset) -> np.ndarray:
    """Boolean mask over ``dataset``: True where the image's pixels equal,
    byte for byte, an image of ``reference``."""
    seen = set(_digests(reference.images))
    return np.fromiter((d in seen for d in _digests(dataset.images)), dtype=bool, count=len(dataset))
