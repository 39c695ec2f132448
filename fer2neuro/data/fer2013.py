"""FER2013 CSV loader (Kaggle format) with optional FER+ relabelling.

The Kaggle file has the header ``emotion,pixels,Usage`` and one face per row:
an integer label 0..6, 2304 space-separated grey values (48x48, row-major)
and the split (``Training`` / ``PublicTest`` / ``PrivateTest``). Plain and
gzip-compressed files are accepted (gzip is detected by its magic bytes). The
file is streamed line by line; only the pixel strings of rows that are kept
are converted, so ``{"Training": 4000}`` costs 4000 conversions.

FER+ (``fer2013new.csv``, Microsoft FERPlus) relabels the same images with the
votes of 10 taggers; row i of the FER+ file belongs to row i of the FER2013
file (join by position), and the ``Usage`` columns must agree row by row.
Labels follow FERPlus's "majority" protocol; images whose majority is
``unknown`` or ``NF`` (not a face), or that have no majority, are dropped.

Every problem with the input is raised as a one-line :class:`DataError`
naming the file and, where there is one, the 1-based line number (the header
is line 1).
"""
from __future__ import annotations

import csv
import gzip
import io
import re
import warnings
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from fer2neuro.data.dataset import (
    FER2013_CLASSES,
    FERPLUS_CLASSES,
    IMAGE_SIZE,
    SPLITS,
    FERDataset,
    canonical_split,
)
from fer2neuro.errors import DataError

__all__ = ["load_fer2013", "load_ferplus_labels", "ferplus_majority", "FER2013_COLUMNS", "FERPLUS_COLUMNS"]

FER2013_COLUMNS = ("emotion", "pixels", "Usage")
FERPLUS_COLUMNS = ("Usage", "Image name", *FERPLUS_CLASSES, "unknown", "NF")
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_HEADER = 1 << 16
_USAGES = {s.encode(): s for s in SPLITS}
_LABELS = {str(i).encode(): i for i in range(len(FER2013_CLASSES))}
_INT_TOKEN = re.compile(rb"[+-]?[0-9]+\Z")


def _short(value: bytes | str, limit: int = 40) -> str:
    """repr() of a field, cut to ``limit`` characters, safe for a one-line message."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _open_binary(path: Path) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """Open ``path`` for reading bytes, decompressing gzip (detected by magic bytes).

    Returns (stream to read, underlying file to close).
    """
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a CSV file")
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        magic = raw.read(2)
        raw.seek(0)
    except OSError as exc:
        raw.close()
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if magic == _GZIP_MAGIC:
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), 1 << 20), raw
    return raw, raw


def _read_error(path: Path, lineno: int, exc: BaseException) -> DataError:
    detail = str(exc).replace("\n", " ") or type(exc).__name__
    return DataError(f"{path}: line {lineno}: cannot read the file (corrupt or truncated gzip?): {detail}")


def _lines(path: Path, stream: io.BufferedIOBase, first: int = 2) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, line) after the header and turn read errors into DataError."""
    lineno = first - 1
    it = iter(stream)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except (OSError, EOFError, zlib.error) as exc:
            raise _read_error(path, lineno + 1, exc) from None
        lineno += 1
        yield lineno, line


def _read_header(path: Path, stream: io.BufferedIOBase) -> str:
    try:
        header = stream.readline(_MAX_HEADER)
    except (OSError, EOFError, zlib.error) as exc:
        raise _read_error(path, 1, exc) from None
    if not header.strip():
        # An empty first line: either an empty file or a file with no header.
        try:
            rest = stream.read(1)
        except (OSError, EOFError, zlib.error) as exc:
            raise _read_error(path, 1, exc) from None
        if not header and not rest:
            raise DataError(f"{path}: the file is empty")
        raise DataError(f"{path}: line 1: empty header line")
    if not header.endswith(b"\n") and len(header) >= _MAX_HEADER:
        raise DataError(f"{path}: line 1: not a CSV header (no line break in the first {_MAX_HEADER} bytes)")
    return header.decode("utf-8-sig", errors="replace").strip("\r\n")


def _header_columns(path: Path, header: str, expected: tuple[str, ...]) -> list[str]:
    """Split a header line and check it holds exactly the ``expected`` column names."""
    names = [name.strip() for name in next(csv.reader([header]))]
    missing = [name for name in expected if name not in names]
    unexpected = [name for name in names if name not in expected]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if missing or unexpected or duplicated:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(repr(n) for n in missing))
        if unexpected:
            parts.append("unexpected " + ", ".join(_short(n, 30) for n in unexpected[:5]))
        if duplicated:
            parts.append("duplicated " + ", ".join(repr(n) for n in duplicated))
        raise DataError(
            f"{path}: line 1: expected the columns {','.join(expected)}, "
            f"found {_short(header, 80)} ({'; '.join(parts)})"
        )
    return names


# --------------------------------------------------------------------------- FER+


def ferplus_majority(votes: np.ndarray) -> np.ndarray:
    """FERPlus "majority" labels for vote counts ``(N, 10)`` (8 emotions, unknown, NF).

    As in Microsoft's FERPlus code: single votes are removed as outliers, and a
    row gets the label of its largest count if that count is more than half of
    the remaining votes; otherwise it is unknown. Returns int64 labels in
    0..7, or -1 for images to drop (no majority, unknown, not a face).
    """
    votes = np.asarray(votes, dtype=np.int64)
    cleaned = np.where(votes <= 1, 0, votes)
    total = cleaned.sum(axis=1)
    peak = cleaned.max(axis=1)
    label = cleaned.argmax(axis=1)
    keep = (2 * peak > total) & (label < len(FERPLUS_CLASSES))
    return np.where(keep, label, -1).astype(np.int64)


def load_ferplus_labels(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read ``fer2013new.csv``; return (Usage per row, majority label per row, -1 = dropped)."""
    path = Path(path)
    stream, raw = _open_binary(path)
    try:
        header = _read_header(path, stream)
        names = _header_columns(path, header, FERPLUS_COLUMNS)
        usage_col = names.index("Usage")
        vote_cols = [names.index(name) for name in FERPLUS_COLUMNS[2:]]
        usages: list[str] = []
        votes: list[list[int]] = []
        for lineno, line in _lines(path, stream):
            text = line.decode("utf-8", errors="replace").strip("\r\n")
            if not text.strip():
                continue
            fields = next(csv.reader([text]))
            if len(fields) != len(names):
                raise DataError(
                    f"{path}: line {lineno}: expected {len(names)} comma-separated fields, found {len(fields)}"
                )
            row = []
            for col in vote_cols:
                value = fields[col].strip()
                if not value.isascii() or not value.isdigit():
                    raise DataError(
                        f"{path}: line {lineno}: vote count {names[col]!r} is {_short(value)}, "
                        "expected a non-negative integer"
                    )
                row.append(int(value))
            usages.append(fields[usage_col].strip())
            votes.append(row)
    finally:
        raw.close()
    if not usages:
        raise DataError(f"{path}: no data rows after the header")
    return usages, ferplus_majority(np.array(votes, dtype=np.int64).reshape(-1, len(vote_cols)))


# --------------------------------------------------------------------------- FER2013


def _parse_pixels(path: Path, lineno: int, raw: bytes) -> np.ndarray:
    """Convert one pixel field to a uint8 (2304,) array, or raise DataError."""
    text = raw.strip()
    if len(text) >= 2 and text[:1] == b'"' and text[-1:] == b'"':
        text = text[1:-1]
    try:
        values = np.fromstring(text, dtype=np.int64, sep=" ")
    except (DeprecationWarning, ValueError):
        # np.fromstring stops at the first token that is not an integer.
        for index, token in enumerate(text.split()):
            if not _INT_TOKEN.match(token):
                raise DataError(
                    f"{path}: line {lineno}: pixel {index + 1} is {_short(token)}, not an integer"
                ) from None
        raise DataError(f"{path}: line {lineno}: the pixels field holds non-numeric data") from None
    if values.size != N_PIXELS:
        raise DataError(
            f"{path}: line {lineno}: {values.size} pixel values, expected {N_PIXELS} "
            f"({IMAGE_SIZE}x{IMAGE_SIZE})"
        )
    bad = (values < 0) | (values > 255)
    if bad.any():
        index = int(np.argmax(bad))
        raise DataError(
            f"{path}: line {lineno}: pixel {index + 1} is {int(values[index])}, outside 0..255"
        )
    return values.astype(np.uint8)


def _parse_label(path: Path, lineno: int, raw: bytes) -> int:
    text = raw.strip().strip(b'"').strip()
    label = _LABELS.get(text)
    if label is not None:
        return label
    if _INT_TOKEN.match(text):
        raise DataError(
            f"{path}: line {lineno}: emotion label {int(text)} is out of range 0..{len(FER2013_CLASSES) - 1}"
        )
    raise DataError(f"{path}: line {lineno}: emotion label {_short(text)} is not an integer")


def _parse_usage(path: Path, lineno: int, raw: bytes) -> str:
    text = raw.strip().strip(b'"').strip()
    usage = _USAGES.get(text)
    if usage is None:
        raise DataError(
            f"{path}: line {lineno}: unknown Usage {_short(text)} (expected {', '.join(SPLITS)})"
        )
    return usage


def _check_limits(path: Path, limits: Mapping[str, int | None]) -> dict[str, int | None]:
    wanted: dict[str, int | None] = {}
    for name, limit in limits.items():
        split = canonical_split(name)
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 0:
                raise DataError(f"{path}: the limit for {split} must be a non-negative integer or None, got {limit!r}")
            limit = int(limit)
        wanted[split] = limit
    if not wanted:
        raise DataError(f"{path}: no split requested (use one of {', '.join(SPLITS)})")
    return wanted


def load_fer2013(
    path: str | Path,
    limits: Mapping[str, int | None],
    *,
    ferplus: str | Path | None = None,
) -> dict[str, FERDataset]:
    """Load splits of a FER2013 CSV (``.csv`` or gzip-compressed).

    limits: ``{split: N or None}`` -- keep the first N rows of each split (None:
    all). With ``ferplus`` (path to ``fer2013new.csv``) the labels are FER+
    majority labels (8 classes, :data:`FERPLUS_CLASSES`), dropped images are
    skipped, and N counts the surviving images. Returns ``{split: FERDataset}``
    in the order of ``limits``.

    Labels and Usage are checked on every row read; pixels only on the rows
    kept. Without ``ferplus`` reading stops once every requested split is full.
    """
    path = Path(path)
    wanted = _check_limits(path, limits)
    fp_usages: list[str] | None = None
    fp_labels: np.ndarray | None = None
    if ferplus is not None:
        ferplus = Path(ferplus)
        fp_usages, fp_labels = load_ferplus_labels(ferplus)

    kept_images: dict[str, list[np.ndarray]] = {split: [] for split in wanted}
    kept_labels: dict[str, list[int]] = {split: [] for split in wanted}
    seen = {split: 0 for split in SPLITS}  # rows per split in the file (as far as read)

    def full(split: str) -> bool:
        limit = wanted[split]
        return limit is not None and len(kept_labels[split]) >= limit and seen[split] > 0

    stream, raw = _open_binary(path)
    rows = 0
    complete = True
    try:
        header = _read_header(path, stream)
        names = _header_columns(path, header, FER2013_COLUMNS)
        i_label, i_pixels, i_usage = (names.index(name) for name in FER2013_COLUMNS)
        with warnings.catch_warnings():
            # np.fromstring warns (and stops) at non-numeric data; make it raise.
            warnings.simplefilter("error", DeprecationWarning)
            for lineno, line in _lines(path, stream):
                if len(line) <= 2 and not line.strip():
                    continue  # blank line
                c1 = line.find(b",")
                c2 = line.find(b",", c1 + 1) if c1 >= 0 else -1
                if c2 < 0 or line.find(b",", c2 + 1) >= 0:
                    raise DataError(
                        f"{path}: line {lineno}: expected 3 comma-separated fields "
                        f"({','.join(names)}), found {line.count(b',') + 1}"
                    )
                bounds = ((0, c1), (c1 + 1, c2), (c2 + 1, len(line)))
                start, end = bounds[i_label]
                label = _parse_label(path, lineno, line[start:end])
                start, end = bounds[i_usage]
                usage = _parse_usage(path, lineno, line[start:end])
                if fp_usages is not None:
                    if rows >= len(fp_usages):
                        raise DataError(
                            f"{path}: line {lineno}: data row {rows + 1} has no counterpart in {ferplus}, "
                            f"which has only {len(fp_usages)} data rows (the files must match row for row)"
                        )
                    if fp_usages[rows] != usage:
                        raise DataError(
                            f"{path}: line {lineno}: data row {rows + 1} has Usage {usage!r} but row "
                            f"{rows + 1} of {ferplus} has {_short(fp_usages[rows])} "
                            "(the files must match row for row)"
                        )
                    label = int(fp_labels[rows])
                rows += 1
                seen[usage] += 1
                if usage in wanted and label >= 0 and not full(usage):
                    start, end = bounds[i_pixels]
                    kept_images[usage].append(_parse_pixels(path, lineno, line[start:end]))
                    kept_labels[usage].append(label)
                if fp_usages is None and all(full(split) for split in wanted):
                    complete = False
                    break
    finally:
        raw.close()

    if complete:
        if fp_usages is not None and rows != len(fp_usages):
            raise DataError(
                f"{ferplus}: {len(fp_usages)} data rows but {path} has {rows}: row {rows + 1} of "
                f"{ferplus} has no counterpart (the files must match row for row)"
            )
        present = ", ".join(f"{split} ({seen[split]} rows)" for split in SPLITS if seen[split])
        for split in wanted:
            if not seen[split]:
                if rows == 0:
                    raise DataError(f"{path}: no data rows after the header")
                raise DataError(f"{path}: the {split} split is absent; the file has {present}")
            if ferplus is not None and not kept_labels[split] and wanted[split] != 0:
                raise DataError(f"{path}: no {split} image survives the FER+ relabelling with {ferplus}")

    class_names = FERPLUS_CLASSES if ferplus is not None else FER2013_CLASSES
    prefix = "FER+" if ferplus is not None else "FER2013"
    result: dict[str, FERDataset] = {}
    for split in wanted:
        images = kept_images[split]
        array = np.stack(images) if images else np.empty((0, N_PIXELS), np.uint8)
        result[split] = FERDataset(
            images=array.reshape(-1, IMAGE_SIZE, IMAGE_SIZE),
            labels=np.asarray(kept_labels[split], dtype=np.int64),
            class_names=class_names,
            name=f"{prefix} {split}",
        )
    return result
