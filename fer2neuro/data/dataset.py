"""The in-memory container every data source produces."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IMAGE_SIZE = 48

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FERPLUS_CLASSES = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
)

# Canonical split names (the FER2013 `Usage` values) and the aliases accepted
# on the command line and in image-folder layouts.
SPLITS = ("Training", "PublicTest", "PrivateTest")
SPLIT_ALIASES = {
    "training": "Training", "train": "Training",
    "publictest": "PublicTest", "test": "PublicTest", "val": "PublicTest", "validation": "PublicTest",
    "privatetest": "PrivateTest", "private": "PrivateTest",
}


@dataclass
class FERDataset(torch.utils.data.Dataset):
    """Grey 48x48 faces with integer labels.

    images: uint8 array (N, 48, 48) -- kept as bytes so a whole split stays small
            (FER2013 Training is 66 MB as uint8, 265 MB as float32).
    labels: int64 array (N,), indices into ``class_names``.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 3 or self.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(f"images must be (N, 48, 48), got {self.images.shape}")
        if self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {self.images.dtype}")
        if len(self.images) != len(self.labels):
            raise ValueError("images and labels differ in length")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).float().div_(255.0).unsqueeze(0)
        return image, int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples at once: float images (N, 1, 48, 48) in [0, 1], labels (N,)."""
        images = torch.from_numpy(self.images).float().div_(255.0).unsqueeze(1)
        return images, torch.from_numpy(self.labels.astype(np.int64))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.class_names))

    def subset(self, indices) -> "FERDataset":
        indices = np.asarray(indices)
        return FERDataset(self.images[indices], self.labels[indices], self.class_names, self.name)


def canonical_split(name: str) -> str:
    """Map a user-given split name to a canonical one, or raise DataError."""
    from fer2neuro.errors import DataError

    key = name.strip().lower()
    if key in SPLIT_ALIASES:
        return SPLIT_ALIASES[key]
    raise DataError(f"unknown split {name!r}: use one of {', '.join(SPLITS)} (or train/test)")
