"""Image-folder loader (root/train/<class>/*.png ...) on synthetic images in tmp_path."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer2neuro.data import FER2013_CLASSES, FERDataset, load_split, load_splits
from fer2neuro.data.image_folder import load_image_folder
from fer2neuro.errors import DataError


def face(seed: int, size: tuple[int, int] = (48, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)


def save(path: Path, array: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, "L")
    if mode != "L":
        image = image.convert(mode)
    image.save(path)
    return path


def make_folder(root: Path, split: str = "train", classes=("angry", "happy", "neutral"), n: int = 3) -> dict:
    """root/split/<class>/im<i>.png with distinct faces; returns {(class, i): array}."""
    arrays = {}
    for c, name in enumerate(classes):
        for i in range(n):
            array = face(100 * c + i + 10 * len(split))
            save(root / split / name / f"im{i}.png", array)
            arrays[(name, i)] = array
    return arrays


def error_of(root, split="Training", **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_image_folder(root, split, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_loads_sorted_with_fer2013_labels(tmp_path):
    arrays = make_folder(tmp_path, classes=("happy", "angry", "neutral"))
    ds = load_image_folder(tmp_path, "Training")
    assert isinstance(ds, FERDataset)
    assert ds.class_names == FER2013_CLASSES
    assert ds.images.shape == (9, 48, 48) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    # Sorted by file name, then class index: classes interleave.
    assert ds.labels.tolist() == [0, 3, 6] * 3
    expected = [arrays[(FER2013_CLASSES[label], k // 3)] for k, label in enumerate(ds.labels)]
    np.testing.assert_array_equal(ds.images, np.stack(expected))
    assert ds.class_counts().tolist() == [3, 0, 0, 3, 0, 0, 3]
    # Deterministic.
    again = load_image_folder(tmp_path, "train")
    np.testing.assert_array_equal(again.images, ds.images)
    np.testing.assert_array_equal(again.labels, ds.labels)


def test_natural_order_of_file_names(tmp_path):
    for i in (10, 2, 1):
        save(tmp_path / "train" / "sad" / f"im{i}.png", face(i))
    ds = load_image_folder(tmp_path, "Training")
    np.testing.assert_array_equal(ds.images, np.stack([face(1), face(2), face(10)]))
    assert ds.labels.tolist() == [4, 4, 4]


def test_limit_opens_only_the_first_files(tmp_path):
    make_folder(tmp_path, classes=("fear", "surprise"), n=2)
    (tmp_path / "train" / "fear" / "im9.png").write_bytes(b"not a png")  # sorts last
    ds = load_image_folder(tmp_path, "Training", limit=3)
    assert ds.labels.tolist() == [2, 5, 2]
    assert len(load_image_folder(tmp_path, "Training", limit=0)) == 0
    assert "im9.png" in error_of(tmp_path)


def test_colour_and_formats_converted_to_grey(tmp_path):
    grey = face(1)
    rgb = save(tmp_path / "train" / "happy" / "a.png", grey, "RGB")
    save(tmp_path / "train" / "happy" / "b.jpg", grey, "RGB")
    save(tmp_path / "train" / "happy" / "c.bmp", grey, "P")
    save(tmp_path / "train" / "happy" / "d.PNG", grey, "LA")
    ds = load_image_folder(tmp_path, "Training")
    assert len(ds) == 4
    np.testing.assert_array_equal(ds.images[0], np.asarray(Image.open(rgb).convert("L")))
    np.testing.assert_array_equal(ds.images[0], grey)
    assert np.abs(ds.images[1].astype(int) - grey).mean() < 40  # JPEG is lossy
    np.testing.assert_array_equal(ds.images[3], grey)


def test_class_folders_case_insensitive_and_clutter_ignored(tmp_path):
    save(tmp_path / "Train" / "HAPPY" / "x.png", face(1))
    save(tmp_path / "Train" / "Disgust" / "y.png", face(2))
    (tmp_path / "Train" / "README.txt").write_text("stray file")
    (tmp_path / "Train" / ".cache").mkdir()
    (tmp_path / "Train" / "HAPPY" / ".DS_Store").write_bytes(b"\0\1")
    (tmp_path / "Train" / "HAPPY" / "notes.txt").write_text("not an image")
    ds = load_image_folder(tmp_path, "Training")
    assert ds.labels.tolist() == [3, 1]


def test_public_test_prefers_test_then_val(tmp_path):
    save(tmp_path / "val" / "sad" / "a.png", face(1))
    assert load_image_folder(tmp_path, "PublicTest").labels.tolist() == [4]
    save(tmp_path / "test" / "angry" / "a.png", face(2))
    assert load_image_folder(tmp_path, "PublicTest").labels.tolist() == [0]
    assert load_image_folder(tmp_path, "test").labels.tolist() == [0]


def test_private_test_folder(tmp_path):
    make_folder(tmp_path)
    message = error_of(tmp_path, "PrivateTest")
    assert message.startswith(f"{tmp_path}: no PrivateTest folder (private/)")
    save(tmp_path / "private" / "surprise" / "a.png", face(3))
    assert load_image_folder(tmp_path, "PrivateTest").labels.tolist() == [5]


def test_missing_split_folder(tmp_path):
    make_folder(tmp_path, "train")
    message = error_of(tmp_path, "PublicTest")
    assert message == f"{tmp_path}: no PublicTest folder (test/ or val/); found train/"


def test_unknown_class_folder(tmp_path):
    make_folder(tmp_path)
    save(tmp_path / "train" / "contempt" / "a.png", face(1))
    message = error_of(tmp_path)
    assert message.startswith(f"{tmp_path / 'train' / 'contempt'}: unknown class folder 'contempt'")


def test_duplicate_class_folders(tmp_path):
    save(tmp_path / "train" / "happy" / "a.png", face(1))
    save(tmp_path / "train" / "Happy" / "b.png", face(2))
    assert "two folders for class 'happy'" in error_of(tmp_path)


@pytest.mark.parametrize("size", [(64, 64), (48, 47), (96, 48)])
def test_wrong_image_size(tmp_path, size):
    make_folder(tmp_path)
    bad = save(tmp_path / "train" / "happy" / "big.png", face(1, size))
    assert error_of(tmp_path) == f"{bad}: image is {size[0]}x{size[1]}, expected 48x48 (resize the images first)"


def test_unreadable_image(tmp_path):
    make_folder(tmp_path)
    bad = tmp_path / "train" / "angry" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    assert error_of(tmp_path).startswith(f"{bad}: cannot read the image")


def test_truncated_image(tmp_path):
    make_folder(tmp_path)
    good = save(tmp_path / "train" / "angry" / "cut.png", face(5))
    good.write_bytes(good.read_bytes()[:200])
    assert error_of(tmp_path).startswith(f"{good}: cannot read the image")


def test_no_class_folders_and_no_images(tmp_path):
    save(tmp_path / "train" / "flat.png", face(1))
    assert error_of(tmp_path).startswith(f"{tmp_path / 'train'}: no class folders")
    (tmp_path / "train" / "happy").mkdir()
    assert error_of(tmp_path).startswith(f"{tmp_path / 'train'}: no images")


def test_bad_root_and_limit(tmp_path):
    assert error_of(tmp_path / "missing") == f"{tmp_path / 'missing'}: no such folder"
    file = tmp_path / "file.txt"
    file.write_text("x")
    assert error_of(file) == f"{file}: not a folder"
    make_folder(tmp_path)
    assert "non-negative" in error_of(tmp_path, limit=-1)
    assert "unknown split" in error_of(tmp_path, "holdout")


def test_load_splits_dispatches_folder(tmp_path):
    make_folder(tmp_path, "train")
    make_folder(tmp_path, "test", classes=("disgust", "sad"), n=2)
    splits = load_splits(tmp_path, {"train": 4, "test": None})
    assert list(splits) == ["Training", "PublicTest"]
    assert splits["Training"].labels.tolist() == [0, 3, 6, 0]
    assert splits["PublicTest"].labels.tolist() == [1, 4, 1, 4]
    assert load_split(str(tmp_path), "PublicTest", limit=1).labels.tolist() == [1]
    with pytest.raises(DataError, match="ferplus"):
        load_splits(tmp_path, {"Training": None}, ferplus=tmp_path / "fer2013new.csv")
    with pytest.raises(DataError, match="no such file or directory"):
        load_splits(tmp_path / "nothing", {"Training": None})
