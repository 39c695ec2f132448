"""Checks of the data a training run is about to spend its time on.

A training set with one class teaches nothing: the network learns to answer
that class, and the test accuracy it then reports is that class's share of
the test split (a one-class FER2013 file reported 95.65 %). That is an error.
Classes missing from the training set are a warning: the run works, but the
model can never predict them.

A validation split whose images are copies of training images chooses the
best epoch on images the network trained on: validation accuracy then
measures memory, not generalisation. Copies are found exactly, by hashing
each image's pixels (``holdout.duplicates_of``); the count always goes to
metrics.json, and a warning above :data:`COPIES_WARN_SHARE`, a level that
FER2013's own copies (6.9-8.0 % of a 0.1 validation split, docs/reliability.md)
stay below.
"""
from __future__ import annotations

from fer2neuro.data.dataset import FERDataset
from fer2neuro.data.holdout import duplicates_of
from fer2neuro.errors import DataError

COPIES_WARN_SHARE = 0.10      # of the validation images: above it, a warning


def check_classes(train: FERDataset) -> str | None:
    """DataError for a training set with fewer than two classes; a one-line
    warning naming the classes it lacks, or None."""
    counts = train.class_counts()
    present = [(name, int(n)) for name, n in zip(train.class_names, counts) if n]
    where = train.name or "the training split"
    if not present:
        raise DataError(f"{where}: no training images")
    if len(present) == 1:
        name, n = present[0]
        raise DataError(f"{where}: every training image ({n}) is of one class, {name!r}: a classifier cannot learn "
                        "from one class (check the labels, or a --limit that keeps only the first rows)")
    if len(present) < len(train.class_names):
        absent = [name for name, n in zip(train.class_names, counts) if not n]
        return (f"warning: {where} holds {len(present)} of {len(train.class_names)} classes "
                f"({', '.join(f'{name} {n}' for name, n in present)}): the model can never predict "
                f"{', '.join(absent)}")
    return None


def count_copies(validation: FERDataset, train: FERDataset) -> int:
    """How many validation images are exact copies of a training image."""
    return int(duplicates_of(validation, train).sum()) if len(validation) else 0


def copies_warning(copies: int, validation: FERDataset, what: str = "validation") -> str | None:
    """A one-line warning when more than :data:`COPIES_WARN_SHARE` of the
    ``what`` images are copies of training images, else None."""
    if not len(validation) or copies <= COPIES_WARN_SHARE * len(validation):
        return None
    return (f"warning: {copies} of {len(validation)} {what} images ({copies / len(validation):.0%}) are exact "
            "copies of training images: the best epoch is chosen on images the network trained on, and its "
            "accuracy overstates what it learnt (remove the duplicate rows)")
