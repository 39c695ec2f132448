"""FER2013 / FER+ CSV loader: synthetic fixtures for every error, real data when FER2NEURO_DATA is set."""
from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from fer2neuro.data import FER2013_CLASSES, FERPLUS_CLASSES, FERDataset, load_split, load_splits
from fer2neuro.data.fer2013 import ferplus_majority, load_fer2013
from fer2neuro.errors import DataError

HEADER = "emotion,pixels,Usage"
FERPLUS_HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def image(seed: int) -> np.ndarray:
    return ((np.arange(48 * 48) * 7 + seed * 13) % 256).astype(np.uint8).reshape(48, 48)


def pixel_text(seed: int) -> str:
    return " ".join(str(v) for v in image(seed).ravel())


def row(label, seed: int, usage: str) -> str:
    return f"{label},{pixel_text(seed)},{usage}"


# Rows of the standard small file: 3 Training then 2 PublicTest.
ROWS = [(0, 0, "Training"), (3, 1, "Training"), (6, 2, "Training"), (1, 3, "PublicTest"), (5, 4, "PublicTest")]


def write(path: Path, lines: list[str], *, gz: bool = False, newline: str = "\n") -> Path:
    data = "".join(line + newline for line in lines).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def good_lines() -> list[str]:
    return [HEADER] + [row(*r) for r in ROWS]


def error_of(path, limits=None, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_fer2013(path, limits or {"Training": None, "PublicTest": None}, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- good files


def test_parses_small_file(tmp_path):
    path = write(tmp_path / "f.csv", good_lines())
    splits = load_fer2013(path, {"Training": None, "PublicTest": None})
    assert list(splits) == ["Training", "PublicTest"]
    train, test = splits["Training"], splits["PublicTest"]
    assert isinstance(train, FERDataset)
    assert train.images.shape == (3, 48, 48) and train.images.dtype == np.uint8
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [0, 3, 6]
    assert test.labels.tolist() == [1, 5]
    assert train.class_names == FER2013_CLASSES
    assert "Training" in train.name and "PublicTest" in test.name
    for ds, seeds in ((train, [0, 1, 2]), (test, [3, 4])):
        for img, seed in zip(ds.images, seeds):
            np.testing.assert_array_equal(img, image(seed))


@pytest.mark.parametrize("name, gz", [("f.csv.gz", True), ("f.csv", True), ("f.csv.gz", False), ("f.txt", False)])
def test_gzip_detected_by_magic_bytes(tmp_path, name, gz):
    path = write(tmp_path / name, good_lines(), gz=gz)
    splits = load_fer2013(path, {"Training": None})
    assert splits["Training"].labels.tolist() == [0, 3, 6]


def test_limits_keep_first_rows_and_still_reach_later_splits(tmp_path):
    path = write(tmp_path / "f.csv", good_lines())
    splits = load_fer2013(path, {"Training": 2, "PublicTest": 1})
    assert splits["Training"].labels.tolist() == [0, 3]
    assert splits["PublicTest"].labels.tolist() == [1]
    np.testing.assert_array_equal(splits["PublicTest"].images[0], image(3))
    assert len(load_fer2013(path, {"Training": 0})["Training"]) == 0
    assert len(load_fer2013(path, {"Training": 100})["Training"]) == 3


def test_only_kept_rows_are_converted(tmp_path):
    # The 3rd Training row has bad pixels: it is not converted when the
    # Training limit stops before it, but the PublicTest rows are still read.
    lines = good_lines()
    lines[3] = "6," + "1 " * 10 + ",Training"
    path = write(tmp_path / "f.csv", lines)
    splits = load_fer2013(path, {"Training": 2, "PublicTest": None})
    assert len(splits["Training"]) == 2 and len(splits["PublicTest"]) == 2
    assert "line 4" in error_of(path)


def test_reading_stops_when_every_split_is_full(tmp_path):
    lines = good_lines() + ["garbage"]
    path = write(tmp_path / "f.csv", lines)
    assert len(load_fer2013(path, {"Training": 2})["Training"]) == 2
    assert "line 7" in error_of(path, {"Training": None})


def test_column_order_spaces_crlf_quotes_and_blank_lines(tmp_path):
    # icml_face_data.csv style header ("emotion, Usage, pixels"), CRLF, quoted pixels.
    lines = ["emotion, Usage, pixels"] + [f'{lab}, {use}, "{pixel_text(seed)}"' for lab, seed, use in ROWS] + [""]
    path = write(tmp_path / "f.csv", lines, newline="\r\n")
    splits = load_fer2013(path, {"PublicTest": None, "Training": None})
    assert list(splits) == ["PublicTest", "Training"]
    assert splits["Training"].labels.tolist() == [0, 3, 6]
    np.testing.assert_array_equal(splits["PublicTest"].images[1], image(4))


def test_utf8_bom_header(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(good_lines()).encode())
    assert len(load_fer2013(path, {"PublicTest": None})["PublicTest"]) == 2


def test_private_test_split(tmp_path):
    path = write(tmp_path / "f.csv", good_lines() + [row(4, 9, "PrivateTest")])
    splits = load_fer2013(path, {"PrivateTest": None})
    assert splits["PrivateTest"].labels.tolist() == [4]


# --------------------------------------------------------------------------- bad files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    assert str(path) in error_of(path)


def test_directory_instead_of_file(tmp_path):
    assert str(tmp_path) in error_of(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"")
    assert error_of(path) == f"{path}: the file is empty"


def test_empty_gzip_file(tmp_path):
    path = tmp_path / "f.csv.gz"
    path.write_bytes(gzip.compress(b""))
    assert error_of(path) == f"{path}: the file is empty"


def test_header_only(tmp_path):
    path = write(tmp_path / "f.csv", [HEADER])
    message = error_of(path)
    assert str(path) in message and "no data rows" in message


@pytest.mark.parametrize(
    "header, expect",
    [
        ("emotion,pixel,Usage", "missing 'pixels'"),
        ("emotion,pixels", "missing 'Usage'"),
        ("emotion,pixels,Usage,extra", "unexpected 'extra'"),
        ("emotion,pixels,pixels", "duplicated 'pixels'"),
        ("0,1 2 3,Training", "missing 'emotion'"),
    ],
)
def test_wrong_columns(tmp_path, header, expect):
    path = write(tmp_path / "f.csv", [header, row(0, 0, "Training")])
    message = error_of(path)
    assert message.startswith(f"{path}: line 1: expected the columns emotion,pixels,Usage")
    assert expect in message


def test_binary_file(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(bytes(range(256)) * 400)
    assert error_of(path).startswith(f"{path}: line 1:")


@pytest.mark.parametrize("bad", ["0,1 2 3", "0,1 2 3,Training,x", "0"])
def test_wrong_number_of_fields(tmp_path, bad):
    lines = good_lines()
    lines.insert(3, bad)
    path = write(tmp_path / "f.csv", lines)
    message = error_of(path)
    assert message.startswith(f"{path}: line 4: expected 3 comma-separated fields")
    assert f"found {bad.count(',') + 1}" in message


@pytest.mark.parametrize("count", [2303, 2305, 0])
def test_wrong_pixel_count(tmp_path, count):
    lines = good_lines()
    lines[2] = "3," + " ".join(["7"] * count) + ",Training"
    path = write(tmp_path / "f.csv", lines)
    assert error_of(path) == f"{path}: line 3: {count} pixel values, expected 2304 (48x48)"


@pytest.mark.parametrize("token", ["x", "1.5", "0x10", "nan", "12a"])
def test_non_numeric_pixel(tmp_path, token):
    values = ["9"] * 2304
    values[4] = token
    lines = good_lines()
    lines[5] = "1," + " ".join(values) + ",PublicTest"
    path = write(tmp_path / "f.csv", lines)
    message = error_of(path)
    assert message.startswith(f"{path}: line 6: pixel 5 is ")
    assert "not an integer" in message


@pytest.mark.parametrize("value", [256, -1, 99999999999999999999999])
def test_pixel_out_of_range(tmp_path, value):
    values = ["9"] * 2304
    values[100] = str(value)
    lines = good_lines()
    lines[1] = "0," + " ".join(values) + ",Training"
    path = write(tmp_path / "f.csv", lines)
    message = error_of(path)
    assert message.startswith(f"{path}: line 2: pixel 101 is ")
    assert message.endswith("outside 0..255")


@pytest.mark.parametrize("label", ["a", "3.0", ""])
def test_label_not_an_integer(tmp_path, label):
    lines = good_lines()
    lines[4] = f"{label},{pixel_text(0)},PublicTest"
    path = write(tmp_path / "f.csv", lines)
    message = error_of(path)
    assert message.startswith(f"{path}: line 5: emotion label ")
    assert message.endswith("is not an integer")


@pytest.mark.parametrize("label", ["7", "-1", "100"])
def test_label_out_of_range(tmp_path, label):
    lines = good_lines()
    lines[2] = f"{label},{pixel_text(0)},Training"
    path = write(tmp_path / "f.csv", lines)
    assert error_of(path) == f"{path}: line 3: emotion label {int(label)} is out of range 0..6"


def test_label_checked_even_in_unrequested_split(tmp_path):
    lines = good_lines()
    lines[5] = f"9,{pixel_text(0)},PublicTest"
    path = write(tmp_path / "f.csv", lines)
    assert "line 6" in error_of(path, {"Training": None})


@pytest.mark.parametrize("usage", ["Validation", "training", ""])
def test_unknown_usage(tmp_path, usage):
    lines = good_lines()
    lines[3] = f"6,{pixel_text(0)},{usage}"
    path = write(tmp_path / "f.csv", lines)
    message = error_of(path)
    assert message.startswith(f"{path}: line 4: unknown Usage {usage!r}")


def test_absent_split(tmp_path):
    path = write(tmp_path / "f.csv.gz", good_lines(), gz=True)
    message = error_of(path, {"Training": 1, "PrivateTest": None})
    assert message == (
        f"{path}: the PrivateTest split is absent; the file has Training (3 rows), PublicTest (2 rows)"
    )


def test_corrupt_gzip(tmp_path):
    data = gzip.compress("\n".join(good_lines()).encode())
    broken = bytearray(data)
    broken[len(broken) // 2: len(broken) // 2 + 40] = b"\x00" * 40
    path = tmp_path / "f.csv.gz"
    path.write_bytes(bytes(broken))
    message = error_of(path)
    assert message.startswith(f"{path}: line ")
    assert "cannot read" in message


def test_truncated_gzip(tmp_path):
    data = gzip.compress("\n".join(good_lines()).encode())
    path = tmp_path / "f.csv.gz"
    path.write_bytes(data[: len(data) - 30])
    message = error_of(path)
    assert message.startswith(f"{path}: line ") and "cannot read" in message


def test_gzip_magic_but_garbage(tmp_path):
    path = tmp_path / "f.csv"
    path.write_bytes(b"\x1f\x8b" + b"not gzip at all" * 10)
    message = error_of(path)
    assert message.startswith(f"{path}: line 1: cannot read")


def test_negative_limit(tmp_path):
    path = write(tmp_path / "f.csv", good_lines())
    assert "non-negative" in error_of(path, {"Training": -1})


def test_unknown_split_name(tmp_path):
    path = write(tmp_path / "f.csv", good_lines())
    assert "unknown split" in error_of(path, {"Holdout": None})


# --------------------------------------------------------------------------- FER+


def test_ferplus_majority_protocol():
    votes = np.array([
        [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],   # single vote removed: 4 of 9 is no majority -> dropped
        [6, 0, 1, 1, 0, 0, 0, 0, 2, 0],   # 6 of 8 -> neutral
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face -> dropped
        [0, 0, 0, 0, 0, 0, 0, 0, 7, 3],   # unknown -> dropped
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],   # every vote is an outlier: s == 0 -> dropped
        [0, 0, 0, 0, 0, 0, 0, 5, 5, 0],   # tie at exactly half -> dropped
        [0, 0, 0, 0, 0, 0, 0, 6, 4, 0],   # 6 of 10 -> contempt
        [1, 0, 0, 0, 0, 0, 2, 0, 0, 0],   # 1 removed, 2 of 2 -> fear
        [0, 3, 2, 0, 0, 0, 0, 0, 0, 0],   # 3 of 5 -> happiness
    ])
    assert ferplus_majority(votes).tolist() == [-1, 0, -1, -1, -1, -1, 7, 6, 1]


FERPLUS_VOTES = [
    ("Training", "fer0000000.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0]),  # dropped
    ("Training", "fer0000001.png", [6, 0, 1, 1, 0, 0, 0, 0, 2, 0]),  # neutral
    ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10]),               # NF, blank name
    ("PublicTest", "fer0000003.png", [0, 0, 0, 0, 8, 2, 0, 0, 0, 0]),  # anger
    ("PublicTest", "fer0000004.png", [0, 0, 0, 0, 0, 0, 0, 9, 1, 0]),  # contempt
]


def ferplus_lines(entries=FERPLUS_VOTES) -> list[str]:
    return [FERPLUS_HEADER] + [",".join([use, name, *map(str, votes)]) for use, name, votes in entries]


def test_ferplus_join(tmp_path):
    fer = write(tmp_path / "fer2013.csv", good_lines())
    plus = write(tmp_path / "fer2013new.csv", ferplus_lines())
    splits = load_fer2013(fer, {"Training": None, "PublicTest": None}, ferplus=plus)
    train, test = splits["Training"], splits["PublicTest"]
    assert train.class_names == FERPLUS_CLASSES and len(FERPLUS_CLASSES) == 8
    assert train.labels.tolist() == [0]
    np.testing.assert_array_equal(train.images[0], image(1))
    assert test.labels.tolist() == [4, 7]
    np.testing.assert_array_equal(test.images, np.stack([image(3), image(4)]))
    assert "FER+" in train.name


def test_ferplus_limit_counts_surviving_images(tmp_path):
    fer = write(tmp_path / "fer2013.csv.gz", good_lines(), gz=True)
    plus = write(tmp_path / "fer2013new.csv", ferplus_lines())
    splits = load_fer2013(fer, {"Training": 1, "PublicTest": 1}, ferplus=plus)
    assert splits["Training"].labels.tolist() == [0]
    np.testing.assert_array_equal(splits["Training"].images[0], image(1))
    assert splits["PublicTest"].labels.tolist() == [4]


def test_ferplus_shorter_file(tmp_path):
    fer = write(tmp_path / "fer2013.csv", good_lines())
    plus = write(tmp_path / "fer2013new.csv", ferplus_lines()[:-1])
    message = error_of(fer, ferplus=plus)
    assert message.startswith(f"{fer}: line 6: data row 5 has no counterpart in {plus}")


def test_ferplus_longer_file(tmp_path):
    fer = write(tmp_path / "fer2013.csv", good_lines())
    plus = write(tmp_path / "fer2013new.csv", ferplus_lines(FERPLUS_VOTES + [FERPLUS_VOTES[-1]]))
    message = error_of(fer, ferplus=plus)
    assert message.startswith(f"{plus}: 6 data rows but {fer} has 5: row 6 of {plus}")


def test_ferplus_usage_mismatch(tmp_path):
    fer = write(tmp_path / "fer2013.csv", good_lines())
    entries = list(FERPLUS_VOTES)
    entries[2] = ("PublicTest", *entries[2][1:])
    plus = write(tmp_path / "fer2013new.csv", ferplus_lines(entries))
    message = error_of(fer, ferplus=plus)
    assert message == (
        f"{fer}: line 4: data row 3 has Usage 'Training' but row 3 of {plus} has 'PublicTest' "
        "(the files must match row for row)"
    )


@pytest.mark.parametrize("vote", ["x", "1.5", "-2", ""])
def test_ferplus_votes_not_numeric(tmp_path, vote):
    fer = write(tmp_path / "fer2013.csv", good_lines())
    lines = ferplus_lines()
    lines[3] = f"Training,fer0000002.png,0,{vote},0,0,0,0,0,0,0,10"
    plus = write(tmp_path / "fer2013new.csv", lines)
    message = error_of(fer, ferplus=plus)
    assert message.startswith(f"{plus}: line 4: vote count 'happiness' is ")


def test_ferplus_wrong_field_count(tmp_path):
    fer = write(tmp_path / "fer2013.csv", good_lines())
    lines = ferplus_lines()
    lines[2] = "Training,fer0000001.png,6,0,1"
    plus = write(tmp_path / "fer2013new.csv", lines)
    assert error_of(fer, ferplus=plus) == f"{plus}: line 3: expected 12 comma-separated fields, found 5"


def test_ferplus_wrong_columns(tmp_path):
    fer = write(tmp_path / "fer2013.csv", good_lines())
    lines = ferplus_lines()
    lines[0] = FERPLUS_HEADER.replace("contempt", "contemp")
    plus = write(tmp_path / "fer2013new.csv", lines)
    message = error_of(fer, ferplus=plus)
    assert message.startswith(f"{plus}: line 1: expected the columns Usage,Image name,")
    assert "missing 'contempt'" in message


def test_ferplus_missing_and_empty(tmp_path):
    fer = write(tmp_path / "fer2013.csv", good_lines())
    assert str(tmp_path / "none.csv") in error_of(fer, ferplus=tmp_path / "none.csv")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    assert error_of(fer, ferplus=empty) == f"{empty}: the file is empty"


# --------------------------------------------------------------------------- load_splits


def test_load_splits_dispatches_csv(tmp_path):
    path = write(tmp_path / "f.csv.gz", good_lines(), gz=True)
    splits = load_splits(path, {"train": 2, "test": None})
    assert list(splits) == ["Training", "PublicTest"]
    assert splits["Training"].labels.tolist() == [0, 3]
    assert load_split(str(path), "PublicTest").labels.tolist() == [1, 5]
    plus = write(tmp_path / "fer2013new.csv", ferplus_lines())
    assert load_splits(path, {"Training": None}, ferplus=plus)["Training"].class_names == FERPLUS_CLASSES


def test_load_splits_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_splits(tmp_path / "missing.csv", {"Training": None})


# --------------------------------------------------------------------------- real data

DATA = os.environ.get("FER2NEURO_DATA")
needs_data = pytest.mark.skipif(not DATA, reason="FER2NEURO_DATA is not set")

README_COUNTS = {  # Training / PublicTest, from the data README
    "angry": (3995, 467), "disgust": (436, 56), "fear": (4097, 496), "happy": (7215, 895),
    "sad": (4830, 653), "surprise": (3171, 415), "neutral": (4965, 607),
}


@pytest.fixture(scope="module")
def real_files() -> tuple[Path, Path]:
    if not DATA:
        pytest.skip("FER2NEURO_DATA is not set")
    folder = Path(DATA)
    fer, plus = folder / "fer2013.csv.gz", folder / "fer2013new.csv"
    assert fer.is_file() and plus.is_file(), f"FER2NEURO_DATA={DATA} lacks fer2013.csv.gz / fer2013new.csv"
    return fer, plus


@pytest.fixture(scope="module")
def real(real_files) -> dict[str, FERDataset]:
    return load_fer2013(real_files[0], {"Training": None, "PublicTest": None})


@pytest.fixture(scope="module")
def real_ferplus(real_files) -> dict[str, FERDataset]:
    return load_fer2013(real_files[0], {"Training": None, "PublicTest": None}, ferplus=real_files[1])


@needs_data
@pytest.mark.data
def test_real_shapes_and_class_counts(real):
    for index, split in enumerate(["Training", "PublicTest"]):
        ds = real[split]
        expected = [README_COUNTS[name][index] for name in FER2013_CLASSES]
        assert ds.class_counts().tolist() == expected
        assert ds.images.shape == (sum(expected), 48, 48)
        assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
        assert ds.class_names == FER2013_CLASSES
    assert len(real["Training"]) == 28709 and len(real["PublicTest"]) == 3589
    # Real faces, not blank arrays.
    assert 80 < real["Training"].images[:1000].mean() < 180


@needs_data
@pytest.mark.data
def test_real_limit_matches_full_parse(real, real_files):
    part = load_fer2013(real_files[0], {"Training": 4000})["Training"]
    assert np.array_equal(part.images, real["Training"].images[:4000])
    assert np.array_equal(part.labels, real["Training"].labels[:4000])


@needs_data
@pytest.mark.data
def test_real_private_test_is_absent(real_files):
    with pytest.raises(DataError) as info:
        load_fer2013(real_files[0], {"Training": 1, "PrivateTest": None})
    assert str(info.value) == (
        f"{real_files[0]}: the PrivateTest split is absent; "
        "the file has Training (28709 rows), PublicTest (3589 rows)"
    )


def _independent_ferplus_labels(path: Path) -> dict[str, list[int]]:
    """FERPlus majority labels re-derived with the csv module, -1 = dropped."""
    labels: dict[str, list[int]] = {"Training": [], "PublicTest": []}
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        assert header == FERPLUS_HEADER.split(",")
        for fields in reader:
            votes = [int(v) if int(v) > 1 else 0 for v in fields[2:]]
            total, peak = sum(votes), max(votes)
            label = votes.index(peak) if peak > 0.5 * total else 8
            labels[fields[0]].append(label if label < 8 else -1)
    return labels


@needs_data
@pytest.mark.data
def test_real_ferplus_join(real, real_ferplus, real_files):
    expected = _independent_ferplus_labels(real_files[1])
    for split in ["Training", "PublicTest"]:
        ds = real_ferplus[split]
        assert ds.class_names == FERPLUS_CLASSES and len(ds.class_names) == 8
        assert ds.images.dtype == np.uint8 and ds.images.shape[1:] == (48, 48)
        assert ds.labels.min() >= 0 and ds.labels.max() <= 7  # no unknown / NF
        labels = np.array(expected[split])
        assert len(labels) == len(real[split])  # one FER+ row per FER2013 row
        keep = labels >= 0
        assert np.array_equal(ds.labels, labels[keep])
        assert np.array_equal(ds.images, real[split].images[keep])
    # Surviving images on the shared files (majority protocol).
    assert len(real_ferplus["Training"]) == 25060
    assert len(real_ferplus["PublicTest"]) == 3199
