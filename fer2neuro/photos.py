"""Faces in photographs, as the network was trained to see them.

``predict`` reads any image OpenCV reads (colour or grey, any size), finds
the faces with OpenCV's Haar cascade (the frontal-face model OpenCV ships),
and crops each one as FER2013 frames its faces: a square around the box,
grey, resized to the model's input size, pixels scaled to [0, 1] as
training scales them (``x / 255``).

The margin around the detector's box is a measurement, not a guess: on 163
PublicTest faces of FER2013 pasted, 3x enlarged, into a noisy scene, the
cascade's box is 0.97 of the face image on the median, centred (so FER2013's
framing is the box plus ``DEFAULT_MARGIN`` on each side). The built-in
synthetic faces are framed wider (a box of 0.76: margin 0.16).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fer2neuro.errors import DataError

DEFAULT_MARGIN = 0.02                 # per side, as a fraction of the box (FER2013's framing, above)
CASCADE = "haarcascade_frontalface_default.xml"
MIN_FACE = 24                         # pixels: smaller boxes are noise at 48 x 48
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".jp2",
                  ".sr", ".ras", ".exr", ".hdr", ".pic", ".pnm", ".pxm", ".avif")


@dataclass(frozen=True)
class Box:
    """A face's square crop in image pixels: left, top, side."""
    x: int
    y: int
    size: int

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.size, self.size]


def _cv2():
    import cv2

    return cv2


def image_files(paths) -> tuple[list[Path], list[str]]:
    """The image files among ``paths`` (files as given, folders' images in
    name order, not recursive), and one line per path that is not one."""
    files, problems, seen = [], [], set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            others = sorted(p.name for p in path.iterdir() if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES)
            if others:
                problems.append(f"{path}: skipped {len(others)} file(s) that are not images "
                                f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})")
            if not found:
                problems.append(f"{path}: no image files in this folder")
            files += found
        elif path.exists():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    unique = []
    for path in files:                       # a file named twice (itself and in its folder) runs once
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, problems


def read_grey(path: Path) -> np.ndarray:
    """The image as 8-bit grey (H, W); DataError if OpenCV cannot read it."""
    cv2 = _cv2()
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot be read (permission denied)")
    data = np.fromfile(path, dtype=np.uint8)          # (imread cannot say why it failed)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None or image.size == 0:
        raise DataError(f"{path}: not an image OpenCV can read")
    return image


def find_faces(grey: np.ndarray) -> list[Box]:
    """Faces OpenCV's frontal-face cascade finds, largest first, as the
    detector's boxes (squares)."""
    cv2 = _cv2()
    detector = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, CASCADE))
    if detector.empty():
        raise DataError(f"OpenCV's face detector ({CASCADE}) is missing from {cv2.data.haarcascades}")
    found = detector.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5, minSize=(MIN_FACE, MIN_FACE))
    boxes = [Box(int(x), int(y), int(max(w, h))) for x, y, w, h in found]
    return sorted(boxes, key=lambda b: (-b.size, b.y, b.x))


def framed(box: Box, margin: float, shape: tuple[int, int]) -> Box:
    """The detector's box with ``margin`` of its side added on every side,
    kept square and moved (then shrunk) to stay inside the image."""
    h, w = shape
    grow = int(round(box.size * margin))
    size = min(box.size + 2 * grow, h, w)
    centre_x, centre_y = box.x + box.size / 2, box.y + box.size / 2
    x = int(round(min(max(centre_x - size / 2, 0), w - size)))
    y = int(round(min(max(centre_y - size / 2, 0), h - size)))
    return Box(x, y, size)


def whole(shape: tuple[int, int]) -> Box:
    """``--no-detect``: the largest centred square of the image."""
    h, w = shape
    size = min(h, w)
    return Box((w - size) // 2, (h - size) // 2, size)


def face_input(grey: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The crop as the network's input: (1, size, size) float64 in [0, 1]."""
    cv2 = _cv2()
    crop = grey[box.y:box.y + box.size, box.x:box.x + box.size]
    interpolation = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    resized = cv2.resize(crop, (size, size), interpolation=interpolation)
    return (resized.astype(np.float64) / 255.0)[None]


def annotated(path: Path, faces: list[tuple[Box, str]]) -> np.ndarray:
    """A colour copy of the image with each face's box and label drawn."""
    cv2 = _cv2()
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    thick = max(1, round(min(image.shape[:2]) / 250))
    for box, label in faces:
        cv2.rectangle(image, (box.x, box.y), (box.x + box.size, box.y + box.size), (0, 200, 0), thick)
        scale = max(0.4, box.size / 200)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        top = max(box.y - th - base - 2, 0)
        cv2.rectangle(image, (box.x, top), (box.x + tw + 4, top + th + base + 2), (0, 200, 0), -1)
        cv2.putText(image, label, (box.x + 2, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                    cv2.LINE_AA)
    return image


def encode_png(image: np.ndarray) -> bytes:
    ok, data = _cv2().imencode(".png", image)
    if not ok:
        raise DataError("OpenCV could not encode the annotated image")
    return data.tobytes()


def scene_with_face(face: np.ndarray, seed: int = 0, width: int = 480, height: int = 360,
                    scale: int = 3) -> tuple[np.ndarray, Box]:
    """A photo-like test image: ``face`` (48 x 48 uint8) enlarged ``scale``
    times and pasted, off centre, into a larger scene of blurred noise.
    Returns the scene and where the face is."""
    cv2 = _cv2()
    rng = np.random.default_rng(seed)
    scene = cv2.GaussianBlur(rng.integers(60, 200, (height, width)).astype(np.uint8), (5, 5), 0)
    side = face.shape[0] * scale
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    x, y = width * 5 // 12, height * 5 // 18
    scene[y:y + side, x:x + side] = big
    return scene, Box(x, y, side)
