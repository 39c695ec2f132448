"""Image-folder loader for the common FER2013 layout of JPEG/PNG files.

::

    root/train/<class>/*.jpg|png     -> Training
    root/test/<class>/*              -> PublicTest  (root/val/ when test/ is absent)
    root/private/<class>/*           -> PrivateTest (only when present)

Class folders carry the FER2013 names (angry, disgust, fear, happy, sad,
surprise, neutral; any case); the labels are FER2013 indices even when some
class folders are missing. Images are read with Pillow and converted to grey;
they must already be 48x48 (nothing is resized silently).

Order is deterministic: files are sorted by file name ("natural" order, so
``im2.png`` comes before ``im10.png``) and then by class index. With the
usual per-class numbering (``im0.png`` ... in every class folder) this
interleaves the classes, so ``limit=N`` keeps a mix of classes rather than
the first N angry faces.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fer2neuro.data.dataset import FER2013_CLASSES, IMAGE_SIZE, FERDataset, canonical_split
from fer2neuro.errors import DataError

__all__ = ["load_image_folder", "IMAGE_EXTENSIONS", "SPLIT_FOLDERS"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".pgm", ".tif", ".tiff", ".webp"})
# Canonical split -> folder names to try, first match wins.
SPLIT_FOLDERS = {
    "Training": ("train",),
    "PublicTest": ("test", "val"),
    "PrivateTest": ("private",),
}


def _natural_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name))


def _visible_entries(folder: Path) -> list[Path]:
    try:
        return [entry for entry in folder.iterdir() if not entry.name.startswith(".")]
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder: {exc.strerror or exc}") from None


def _split_folder(root: Path, split: str) -> Path:
    """Find the folder of ``split`` under ``root`` (folder names matched case-insensitively)."""
    subdirs = {entry.name: entry for entry in _visible_entries(root) if entry.is_dir()}
    by_lower: dict[str, list[str]] = {}
    for name in subdirs:
        by_lower.setdefault(name.lower(), []).append(name)
    for wanted in SPLIT_FOLDERS[split]:
        if wanted in subdirs:  # an exact match wins over other spellings
            return subdirs[wanted]
        names = by_lower.get(wanted, [])
        if len(names) > 1:
            raise DataError(f"{root}: ambiguous {split} folders {', '.join(sorted(names))}")
        if names:
            return subdirs[names[0]]
    looked = " or ".join(f"{name}/" for name in SPLIT_FOLDERS[split])
    found = ", ".join(f"{name}/" for name in sorted(subdirs)) or "no sub-folders"
    raise DataError(f"{root}: no {split} folder ({looked}); found {found}")


def _class_folders(folder: Path) -> dict[int, Path]:
    classes: dict[int, Path] = {}
    for entry in sorted(_visible_entries(folder)):
        if not entry.is_dir():
            continue  # stray files (README, labels.csv) next to the class folders
        key = entry.name.lower()
        if key not in FER2013_CLASSES:
            raise DataError(
                f"{entry}: unknown class folder {entry.name!r} (expected {', '.join(FER2013_CLASSES)})"
            )
        index = FER2013_CLASSES.index(key)
        if index in classes:
            raise DataError(f"{folder}: two folders for class {key!r}: {classes[index].name}, {entry.name}")
        classes[index] = entry
    if not classes:
        raise DataError(f"{folder}: no class folders (expected {', '.join(FER2013_CLASSES)})")
    return classes


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.size != (IMAGE_SIZE, IMAGE_SIZE):
                width, height = image.size
                raise DataError(
                    f"{path}: image is {width}x{height}, expected {IMAGE_SIZE}x{IMAGE_SIZE} "
                    "(resize the images first)"
                )
            grey = image.convert("L")
            return np.asarray(grey, dtype=np.uint8).copy()
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        detail = str(exc).replace("\n", " ") or type(exc).__name__
        raise DataError(f"{path}: cannot read the image: {detail}") from None


def load_image_folder(root: str | Path, split: str, *, limit: int | None = None) -> FERDataset:
    """Load one split of an image folder (see the module docstring for the layout).

    split: canonical name or alias (``Training``/``train``, ``PublicTest``/``test``,
    ``PrivateTest``/``private``). limit: keep the first N images in the
    deterministic order (None: all); only those files are opened.
    """
    root = Path(root)
    split = canonical_split(split)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0):
        raise DataError(f"{root}: the limit for {split} must be a non-negative integer or None, got {limit!r}")
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    folder = _split_folder(root, split)
    files: list[tuple[tuple, int, Path]] = []
    for index, class_folder in _class_folders(folder).items():
        for entry in _visible_entries(class_folder):
            if entry.suffix.lower() in IMAGE_EXTENSIONS and entry.is_file():
                files.append((_natural_key(entry.name), index, entry))
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in the class folders")
    files.sort(key=lambda item: (item[0], item[1], item[2].name))
    if limit is not None:
        files = files[: int(limit)]
    images = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for row, (_, _, path) in enumerate(files):
        images[row] = _read_image(path)
    labels = np.array([index for _, index, _ in files], dtype=np.int64)
    return FERDataset(images=images, labels=labels, class_names=FER2013_CLASSES, name=f"{root.name}/{folder.name}")
