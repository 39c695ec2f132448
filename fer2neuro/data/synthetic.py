"""The built-in synthetic expression set (``--data synthetic``).

Procedurally drawn 48x48 grey faces in the seven FER2013 classes, for demos
and tests that must run without the real data. Every face is a skin-toned
oval with two eyes, two brows, a nose and a mouth, drawn with anti-aliased
distance fields on the pixel grid (pure numpy, a whole batch at once). The
classes differ by the shape of the mouth, brows and eyes, loosely following
FACS action units:

========  ==============================================================
angry     brows lowered and slanted inward, narrowed eyes, short tight
          slightly down-turned mouth
disgust   lowered brows, squinting eyes, asymmetric mouth with one side
          of the upper lip raised (the side is random), nose wrinkles
fear      raised brows with the inner ends up, wide eyes, wide stretched
          slightly open mouth
happy     up-turned smile (sometimes open, showing teeth), cheek-raised
          eyes
sad       down-turned mouth corners, inner brow ends raised, lowered lids
surprise  high arched brows, wide eyes, open round mouth
neutral   straight mouth, relaxed brows
========  ==============================================================

Each image draws its own identity (face shape, feature spacing and sizes,
line thickness, gaze), expression intensity (a blend between the neutral face
and the class prototype), pose (shift, scale, in-plane rotation), lighting
(skin tone, background, side shading, contrast, brightness) and may carry
hair, a random occluding blob and Gaussian noise. The nuisance is tuned so
that a linear model on pixels stays well below a small CNN; see
``docs/synthetic.md`` for the measured figures.

Everything is deterministic: the same ``seed`` gives byte-identical images,
and every split uses its own derived seed, so splits never share images.
"""
from __future__ import annotations

import numpy as np

from fer2neuro.data.dataset import FER2013_CLASSES, IMAGE_SIZE, SPLITS, FERDataset, canonical_split

__all__ = [
    "SPLIT_SIZES", "SYNTHETIC_CLASSES", "load_synthetic", "render_face", "render_faces",
    "sample_face_params",
]

SYNTHETIC_CLASSES = FER2013_CLASSES

#: Default number of images per split (equal numbers of each class).
SPLIT_SIZES = {"Training": 2800, "PublicTest": 700, "PrivateTest": 700}

# Mixed into the seed so that each split draws from its own stream.
_SPLIT_SALT = {"Training": 0x5EED_0001, "PublicTest": 0x5EED_0002, "PrivateTest": 0x5EED_0003}

_CHUNK = 256  # images drawn per vectorised batch (keeps temporaries in cache)

# --------------------------------------------------------------------------
# Expression prototypes (face units: the face oval is about 31 x 38 units and
# one unit is one pixel at scale 1). ``brow_raise`` lifts the brows, positive
# ``brow_slant`` pulls the inner ends down, ``mouth_curve`` lifts the corners,
# ``mouth_open`` is the half-height of the opening, ``mouth_asym`` lifts one
# corner, ``lid`` is the upper-lid droop (sad) and ``wrinkle`` the nose
# wrinkles (disgust).
# --------------------------------------------------------------------------
_FEATURES = (
    "eye_open", "brow_raise", "brow_slant", "brow_arch", "mouth_curve",
    "mouth_width", "mouth_open", "mouth_asym", "mouth_lift", "lid", "wrinkle",
)
_NEUTRAL = dict(eye_open=1.8, brow_raise=0.0, brow_slant=0.0, brow_arch=0.5, mouth_curve=0.0,
                mouth_width=5.5, mouth_open=0.0, mouth_asym=0.0, mouth_lift=0.0, lid=0.0,
                wrinkle=0.0)
_PROTOTYPES = {
    "angry": dict(eye_open=1.0, brow_raise=-1.8, brow_slant=2.6, brow_arch=0.0,
                  mouth_curve=-0.9, mouth_width=4.0),
    "disgust": dict(eye_open=1.15, brow_raise=-1.4, brow_slant=0.6, mouth_curve=-0.6,
                    mouth_width=5.0, mouth_open=0.7, mouth_asym=2.8, mouth_lift=-1.4,
                    wrinkle=1.0),
    "fear": dict(eye_open=2.7, brow_raise=1.8, brow_slant=-1.6, brow_arch=0.3,
                 mouth_curve=-0.5, mouth_width=7.5, mouth_open=1.2),
    "happy": dict(eye_open=1.3, brow_raise=0.3, mouth_curve=3.2, mouth_width=7.0,
                  mouth_open=0.6),
    "sad": dict(eye_open=1.5, brow_raise=0.6, brow_slant=-2.6, brow_arch=-0.3,
                mouth_curve=-2.6, mouth_width=5.0, lid=0.6),
    "surprise": dict(eye_open=2.9, brow_raise=3.0, brow_arch=1.6, mouth_curve=0.0,
                     mouth_width=3.2, mouth_open=3.4),
    "neutral": dict(),
}
_NEUTRAL_VEC = np.array([_NEUTRAL[f] for f in _FEATURES], dtype=np.float64)
_PROTO_MAT = np.array([[{**_NEUTRAL, **_PROTOTYPES[c]}[f] for f in _FEATURES] for c in SYNTHETIC_CLASSES])
# Per-image jitter of the expression features (standard deviations).
_FEATURE_JITTER = dict(eye_open=0.12, brow_raise=0.3, brow_slant=0.25, brow_arch=0.2,
                       mouth_curve=0.25, mouth_width=0.35, mouth_open=0.15, mouth_asym=0.15,
                       mouth_lift=0.15, lid=0.05, wrinkle=0.0)
_JITTER_VEC = np.array([_FEATURE_JITTER[f] for f in _FEATURES], dtype=np.float64)

# Nuisance ranges.
SHIFT_PX = 4.0          # uniform shift of the face centre, each axis
SCALE_RANGE = (0.85, 1.15)
ROTATION_DEG = 10.0     # uniform in-plane rotation
INTENSITY_RANGE = (0.6, 1.0)
NOISE_SIGMA = (0.01, 0.06)
OCCLUDER_PROB = 0.2
HAIR_PROB = 0.75


def sample_face_params(labels, rng: np.random.Generator, *,
                       intensity: float | None = None) -> dict[str, np.ndarray]:
    """Draw the shape, expression and nuisance parameters of one face per label.

    Returns a dict of float arrays of length ``len(labels)`` (see the module
    docstring); :func:`render_faces` draws them. ``intensity`` fixes the
    expression intensity (0 = neutral face, 1 = full prototype) instead of
    drawing it from ``INTENSITY_RANGE``.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= len(SYNTHETIC_CLASSES)):
        raise ValueError(f"expression labels must be in 0..{len(SYNTHETIC_CLASSES) - 1}")
    n = labels.size
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731

    p: dict[str, np.ndarray] = {}
    # Expression: blend neutral -> prototype, plus per-image jitter.
    t = np.full(n, float(intensity)) if intensity is not None else u(*INTENSITY_RANGE)
    feats = _NEUTRAL_VEC + t[:, None] * (_PROTO_MAT[labels] - _NEUTRAL_VEC)
    feats = feats + rng.standard_normal((n, len(_FEATURES))) * _JITTER_VEC
    for i, name in enumerate(_FEATURES):
        p[name] = feats[:, i]
    p["eye_open"] = np.clip(p["eye_open"], 0.55, None)
    p["mouth_open"] = np.clip(p["mouth_open"], 0.0, None)
    p["mouth_width"] = np.clip(p["mouth_width"], 2.5, None)
    p["mouth_asym"] = np.abs(p["mouth_asym"]) * rng.choice([-1.0, 1.0], n)
    p["lid"] = np.clip(p["lid"], 0.0, 1.0)
    p["happy"] = (labels == SYNTHETIC_CLASSES.index("happy")).astype(np.float64)

    # Identity.
    p["face_a"], p["face_b"] = u(13.5, 16.5), u(17.0, 20.0)
    p["eye_x"], p["eye_y"] = u(5.6, 7.4), u(-5.0, -3.0)
    p["eye_w"] = u(2.5, 3.4)
    p["gaze_x"], p["gaze_y"] = u(-0.8, 0.8), u(-0.3, 0.3)
    p["brow_gap"] = u(3.0, 4.6)          # brow centre above the eye centre
    p["brow_thick"] = u(0.8, 1.6)
    p["brow_len"] = u(5.5, 7.5)
    p["mouth_y"] = u(8.0, 10.5)
    p["lip_thick"] = u(0.5, 1.1)
    p["nose_y"] = u(2.5, 4.0)

    # Pose.
    p["cx"] = IMAGE_SIZE / 2 + u(-SHIFT_PX, SHIFT_PX)
    p["cy"] = IMAGE_SIZE / 2 + u(-SHIFT_PX, SHIFT_PX)
    p["scale"] = u(*SCALE_RANGE)
    p["angle"] = np.deg2rad(u(-ROTATION_DEG, ROTATION_DEG))

    # Tones and lighting (0 = black, 1 = white).
    p["skin"] = u(0.4, 0.85)
    p["bg0"], p["bg1"] = u(0.0, 1.0), u(0.0, 1.0)
    p["bg_dir"] = u(0.0, 2 * np.pi)
    p["shade"] = u(-0.25, 0.25)          # left-right lighting gradient on the face
    p["feature_dark"] = u(0.08, 0.3)     # colour of brows, pupils, mouth cavity
    p["has_hair"] = (rng.random(n) < HAIR_PROB).astype(np.float64)
    p["hair"] = u(0.0, 0.6)
    p["hairline"] = u(-16.0, -11.0)
    p["contrast"] = u(0.7, 1.2)
    p["brightness"] = u(-0.15, 0.15)
    p["noise"] = u(*NOISE_SIGMA)

    # Occluder (a random grey ellipse anywhere on the image).
    p["occ"] = (rng.random(n) < OCCLUDER_PROB).astype(np.float64)
    p["occ_x"], p["occ_y"] = u(4.0, 44.0), u(4.0, 44.0)
    p["occ_a"], p["occ_b"] = u(2.5, 6.0), u(2.5, 6.0)
    p["occ_grey"] = u(0.0, 1.0)
    return p


# --------------------------------------------------------------------------
# Drawing helpers. Coordinates are in face units; ``s`` (pixels per unit)
# turns a signed distance into pixels for one-pixel anti-aliasing.
# --------------------------------------------------------------------------

def _cov(d, s):
    """Coverage of a shape with signed distance ``d`` (face units)."""
    c = 0.5 - d * s
    np.maximum(c, 0.0, out=c)
    return np.minimum(c, 1.0, out=c)


def _ellipse_sd(x, y, a, b):
    """Approximate signed distance to an axis-aligned ellipse (first order)."""
    a2, b2 = a * a, b * b
    f = (x * x) / a2 + (y * y) / b2 - 1.0
    g = 2.0 * np.sqrt((x / a2) ** 2 + (y / b2) ** 2)
    return f / np.maximum(g, 1e-3)


def _curve_sd(x, y, x0, x1, centre, slope, half):
    """Distance to a band ``|y - centre(x)| <= half(x)`` for x0 <= x <= x1.

    ``centre``, ``slope`` and ``half`` are callables of the clipped x; the
    vertical distance is corrected by the slope, the ends are rounded.
    """
    xc = np.clip(x, x0, x1)
    dv = (np.abs(y - centre(xc)) - half(xc)) / np.sqrt(1.0 + slope(xc) ** 2)
    dx = x - xc
    return np.where(dx == 0.0, dv, np.sqrt(dx * dx + np.maximum(dv, 0.0) ** 2))


def _over(img, colour, alpha):
    """Composite ``colour`` over ``img`` with coverage ``alpha`` (in place)."""
    img += alpha * (colour - img)


def _col(p, key):
    return p[key].astype(np.float32)[:, None, None]


def _draw_chunk(p: dict[str, np.ndarray], noise: np.ndarray) -> np.ndarray:
    """Render one batch of faces; returns float32 (B, 48, 48) in [0, 1]."""
    P = {k: _col(p, k) for k in p}
    B = noise.shape[0]
    grid = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    ys, xs = grid[None, :, None], grid[None, None, :]

    # Background: a linear gradient between two greys.
    d = np.cos(P["bg_dir"]) * (xs - 24.0) + np.sin(P["bg_dir"]) * (ys - 24.0)
    img = P["bg0"] + (P["bg1"] - P["bg0"]) * np.clip(d / 68.0 + 0.5, 0.0, 1.0)
    img = np.broadcast_to(img, (B, IMAGE_SIZE, IMAGE_SIZE)).astype(np.float32)

    # Pixel grid -> face coordinates (inverse similarity transform).
    s = P["scale"]
    ca, sa = np.cos(P["angle"]), np.sin(P["angle"])
    dx, dy = xs - P["cx"], ys - P["cy"]
    u = (ca * dx + sa * dy) / s
    v = (-sa * dx + ca * dy) / s
    au = np.abs(u)
    side = np.sign(u)                     # +1 on the image right, -1 on the left

    skin = P["skin"]
    fa, fb = P["face_a"], P["face_b"]

    # Neck, hair behind the head, face oval with side lighting.
    neck = _curve_sd(u, v, -5.5, 5.5, lambda x: 0 * x + 24.0, lambda x: 0 * x, lambda x: 0 * x + 8.0)
    _over(img, skin * 0.85, _cov(neck, s))
    hair_a = P["has_hair"] * _cov(_ellipse_sd(u, v + 1.5, fa + 1.8, fb + 2.0), s)
    _over(img, P["hair"], hair_a * _cov(v - 2.0, s))
    face_sd = _ellipse_sd(u, v, fa, fb)
    lit = np.clip(skin * (1.0 + P["shade"] * u / fa), 0.0, 1.0)
    _over(img, lit, _cov(face_sd, s))
    # Fringe: hair inside the top of the oval above a wavy hairline.
    hairline = P["hairline"] + 1.2 * np.cos(u * 0.45)
    _over(img, P["hair"], P["has_hair"] * _cov(face_sd, s) * _cov(v - hairline, s))

    dark = P["feature_dark"]
    # Eyes: white sclera, dark iris clipped to the lids, lid outline.
    ex, ey, ew = P["eye_x"], P["eye_y"], P["eye_w"]
    eo = P["eye_open"]
    eu, ev = au - ex, v - ey
    eye_sd = _ellipse_sd(eu, ev, ew, eo)
    eye_sd = np.maximum(eye_sd, (ey - eo * (1.0 - P["lid"])) - v)   # drooping upper lid
    sclera = np.minimum(lit + 0.3, 0.97)
    eye_a = _cov(eye_sd, s)
    _over(img, sclera, eye_a)
    iris_r = np.minimum(1.5, eo + 0.3)
    iris_sd = np.sqrt((eu - side * P["gaze_x"]) ** 2 + (ev - P["gaze_y"]) ** 2) - iris_r
    _over(img, dark, eye_a * _cov(iris_sd, s))
    _over(img, dark + 0.1, _cov(np.abs(eye_sd) - 0.35, s) * 0.8)

    # Brows: tapered quadratic strokes from the inner to the outer end.
    inner = ex - P["brow_len"] * 0.5
    outer = ex + P["brow_len"] * 0.5
    by = ey - P["brow_gap"] - P["brow_raise"]
    slant, arch, blen = P["brow_slant"], P["brow_arch"], P["brow_len"]

    def brow_c(x):
        t = (x - inner) / blen
        return by + slant * (0.5 - t) - arch * 4.0 * t * (1.0 - t)

    def brow_slope(x):
        t = (x - inner) / blen
        return (-slant - arch * 4.0 * (1.0 - 2.0 * t)) / blen

    def brow_half(x):
        t = (x - inner) / blen
        return P["brow_thick"] * (0.6 - 0.25 * t)

    brow_sd = _curve_sd(au, v, inner, outer, brow_c, brow_slope, brow_half)
    _over(img, dark, _cov(brow_sd, s))

    # Nose: a soft shadow line, two nostrils and (disgust) wrinkles.
    ny = P["nose_y"]
    ridge = _curve_sd(u, v, -0.0, 0.0, lambda x: 0 * x + ny - 3.5, lambda x: 0 * x, lambda x: 0 * x + 3.0)
    _over(img, lit * 0.8, _cov(ridge - 0.35, s) * 0.6)
    nostril = _ellipse_sd(au - 1.6, v - ny, 1.0, 0.6)
    _over(img, lit * 0.45, _cov(nostril, s))
    wrinkle_sd = np.abs(v - (ny - 4.5) + 0.35 * au) - 0.3
    wrinkle_sd = np.maximum(wrinkle_sd, np.abs(au - 2.6) - 1.4)
    _over(img, lit * 0.5, _cov(wrinkle_sd, s) * np.clip(P["wrinkle"], 0, 1))

    # Mouth: a curved band; open mouths show a dark cavity (teeth when happy).
    mw, mo = P["mouth_width"], P["mouth_open"]
    curve, asym = P["mouth_curve"], P["mouth_asym"]
    my = P["mouth_y"] - P["mouth_lift"] * 0.5

    def mouth_c(x):
        r = x / mw
        return my - curve * r * r - asym * r - P["mouth_lift"] * 0.5 * np.clip(r * np.sign(asym), 0, 1)

    def mouth_slope(x):
        return (-2.0 * curve * x / mw - asym) / mw

    def mouth_half(x):
        r = np.clip(x / mw, -1.0, 1.0)
        return mo * np.sqrt(np.maximum(1.0 - r * r, 0.0))

    mouth_sd = _curve_sd(u, v, -mw, mw, mouth_c, mouth_slope, mouth_half)
    # Clearly open mouths: an ellipse around the (curved) centre line is a
    # better distance field than the vertical band near the steep ends.
    uc = np.clip(u, -mw, mw)
    open_sd = _ellipse_sd(u, (v - mouth_c(uc)) / np.sqrt(1.0 + mouth_slope(uc) ** 2), mw, np.maximum(mo, 0.5))
    mouth_sd = np.where(mo > 0.8, open_sd, mouth_sd)
    lips = lit * 0.55
    _over(img, lips, _cov(mouth_sd - P["lip_thick"], s))
    cavity = _cov(mouth_sd, s)
    _over(img, dark, cavity)
    teeth = P["happy"] * cavity * _cov(v - mouth_c(np.clip(u, -mw, mw)) + 0.2 * mo, s)
    _over(img, np.minimum(lit + 0.35, 0.95), teeth)

    # Occluder.
    occ_sd = _ellipse_sd(xs - P["occ_x"], ys - P["occ_y"], P["occ_a"], P["occ_b"])
    _over(img, P["occ_grey"], P["occ"] * _cov(occ_sd, np.float32(1.0)))

    # Global contrast / brightness and sensor noise.
    img = (img - 0.5) * P["contrast"] + 0.5 + P["brightness"]
    img += noise * P["noise"]
    return np.clip(img, 0.0, 1.0)


def render_faces(params: dict[str, np.ndarray], rng: np.random.Generator | None = None, *,
                 noise: np.ndarray | None = None) -> np.ndarray:
    """Render faces from :func:`sample_face_params` to uint8 (N, 48, 48).

    The unit Gaussian noise field comes from ``noise`` (float, (N, 48, 48)) or
    is drawn from ``rng``; one of them is required.
    """
    n = len(next(iter(params.values())))
    if noise is None:
        if rng is None:
            raise ValueError("render_faces needs an rng or a noise array")
        noise = rng.standard_normal((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for lo in range(0, n, _CHUNK):
        hi = min(lo + _CHUNK, n)
        chunk = {k: v[lo:hi] for k, v in params.items()}
        img = _draw_chunk(chunk, np.asarray(noise[lo:hi], dtype=np.float32))
        out[lo:hi] = np.rint(img * 255.0).astype(np.uint8)
    return out


def render_face(expression: int | str, rng: np.random.Generator, *,
                intensity: float | None = None) -> np.ndarray:
    """Draw one random face with the given expression (index or class name).

    Returns uint8 (48, 48). ``intensity`` (0..1) fixes the expression strength.
    """
    if isinstance(expression, str):
        if expression not in SYNTHETIC_CLASSES:
            raise ValueError(f"unknown expression {expression!r}: use one of {', '.join(SYNTHETIC_CLASSES)}")
        expression = SYNTHETIC_CLASSES.index(expression)
    params = sample_face_params([int(expression)], rng, intensity=intensity)
    return render_faces(params, rng)[0]


def _interleaved_labels(n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Labels in blocks of one of each class, each block shuffled."""
    k = len(SYNTHETIC_CLASSES)
    return rng.permuted(np.tile(np.arange(k), (n_per_class, 1)), axis=1).reshape(-1)


def load_synthetic(split: str, *, limit: int | None = None, seed: int = 0) -> FERDataset:
    """One split of the synthetic set.

    split: a split name (canonical or alias). Training has 2800 images,
    PublicTest and PrivateTest 700 each, 1/7 of each class. ``limit`` keeps the
    first N images (the order interleaves the classes, so any prefix is
    balanced to within one image per class). The same ``seed`` gives
    byte-identical images; each split derives its own stream from it.
    """
    split = canonical_split(split)
    assert split in SPLITS
    total = SPLIT_SIZES[split]
    n = total if limit is None else max(0, min(int(limit), total))
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _SPLIT_SALT[split]])
    label_ss, param_ss, noise_ss = ss.spawn(3)
    labels = _interleaved_labels(total // len(SYNTHETIC_CLASSES), np.random.default_rng(label_ss))
    # Parameters are drawn for the whole split so that a prefix does not
    # depend on the limit; only the first n images are rendered.
    params = sample_face_params(labels, np.random.default_rng(param_ss))
    params = {k: v[:n] for k, v in params.items()}
    noise = np.random.default_rng(noise_ss).standard_normal((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    images = render_faces(params, noise=noise)
    return FERDataset(images, labels[:n].astype(np.int64), SYNTHETIC_CLASSES, "synthetic")
