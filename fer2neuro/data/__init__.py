"""Data sources: FER2013 / FER+ CSV files, image folders and the built-in synthetic set.

All of them produce :class:`FERDataset` objects through :func:`load_splits`::

    splits = load_splits("fer2013.csv.gz", {"Training": 4000, "PublicTest": None})
    splits = load_splits("synthetic", {"Training": None, "PublicTest": None}, seed=0)
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fer2neuro.data.dataset import (
    FER2013_CLASSES,
    FERPLUS_CLASSES,
    IMAGE_SIZE,
    SPLITS,
    FERDataset,
    canonical_split,
)
from fer2neuro.errors import DataError

SYNTHETIC = "synthetic"

__all__ = [
    "FER2013_CLASSES", "FERPLUS_CLASSES", "IMAGE_SIZE", "SPLITS", "SYNTHETIC",
    "FERDataset", "DataError", "canonical_split", "load_splits", "load_split",
]


def load_splits(
    source: str | Path,
    limits: Mapping[str, int | None],
    *,
    ferplus: str | Path | None = None,
    seed: int = 0,
) -> dict[str, FERDataset]:
    """Load several splits of one source at once (a CSV is parsed only once).

    source: ``"synthetic"``, a FER2013 CSV (``.csv`` / ``.csv.gz``) or an image
    folder with ``train/<class>/`` and ``test/<class>/``. ``limits`` maps split
    names (canonical or aliases) to the number of samples to keep (the first N
    of the split; None keeps all). ``ferplus`` relabels a FER2013 CSV with the
    FER+ vote file. Returns ``{canonical split name: FERDataset}``.
    """
    wanted = {canonical_split(name): limit for name, limit in limits.items()}
    if str(source) == SYNTHETIC:
        if ferplus is not None:
            raise DataError("--ferplus relabels a FER2013 CSV; it cannot be used with synthetic data")
        from fer2neuro.data.synthetic import load_synthetic

        return {split: load_synthetic(split, limit=limit, seed=seed) for split, limit in wanted.items()}
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        if ferplus is not None:
            raise DataError("--ferplus relabels a FER2013 CSV; it cannot be used with an image folder")
        from fer2neuro.data.image_folder import load_image_folder

        return {split: load_image_folder(path, split, limit=limit) for split, limit in wanted.items()}
    from fer2neuro.data.fer2013 import load_fer2013

    return load_fer2013(path, wanted, ferplus=ferplus)


def load_split(source: str | Path, split: str, *, limit: int | None = None,
               ferplus: str | Path | None = None, seed: int = 0) -> FERDataset:
    """Load one split; see :func:`load_splits`."""
    return next(iter(load_splits(source, {split: limit}, ferplus=ferplus, seed=seed).values()))
