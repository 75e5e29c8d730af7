"""Light changes to an image that keep it a copy: what a memorisation detector must still catch.

A generator that memorised a training X-ray rarely reproduces it bit for bit; it comes back slightly
shifted, cropped, brighter, noisier or re-compressed. Tests (and the copycat baseline, which
"generates" by returning perturbed training images) use these to check that near-copies are flagged.

Every function takes and returns a 2-D float32 array in [0, 1] of the same shape.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import InputError
from .distances import as_gray01, resize_to

KINDS = ("identity", "shift", "crop_resize", "brightness", "noise", "jpeg")

# Default strengths: "light" = still obviously the same image to a radiologist.
MAX_SHIFT = 0.04  # fraction of the side
MAX_CROP = 0.08  # fraction of the side removed in total
MAX_BRIGHTNESS = 0.08  # additive, in [0, 1] units, plus up to this much relative contrast change
NOISE_SIGMA = 0.02
JPEG_QUALITY = (60, 90)


def shift(img: np.ndarray, rng: np.random.Generator, max_frac: float = MAX_SHIFT) -> np.ndarray:
    """Translate by up to ``max_frac`` of the side in each direction; uncovered borders repeat the edge."""
    h, w = img.shape
    dy = int(rng.integers(-round(max_frac * h), round(max_frac * h) + 1))
    dx = int(rng.integers(-round(max_frac * w), round(max_frac * w) + 1))
    if dy == 0 and dx == 0:
        dy = 1 if h > 1 else 0
    pad = ((max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)))
    padded = np.pad(img, pad, mode="edge")
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return np.ascontiguousarray(padded[y0 : y0 + h, x0 : x0 + w], dtype=np.float32)


def crop_resize(img: np.ndarray, rng: np.random.Generator, max_frac: float = MAX_CROP) -> np.ndarray:
    """Cut a border of up to ``max_frac`` of the side (split randomly between sides) and resize back."""
    h, w = img.shape
    ch = int(rng.integers(1, max(2, round(max_frac * h) + 1)))
    cw = int(rng.integers(1, max(2, round(max_frac * w) + 1)))
    top, left = int(rng.integers(0, ch + 1)), int(rng.integers(0, cw + 1))
    crop = img[top : h - (ch - top), left : w - (cw - left)]
    return resize_to(np.ascontiguousarray(crop, dtype=np.float32), (h, w))


def brightness(img: np.ndarray, rng: np.random.Generator, max_delta: float = MAX_BRIGHTNESS) -> np.ndarray:
    """Change brightness and contrast a little: ``(img - mean) * c + mean + b``, clipped to [0, 1]."""
    b = float(rng.uniform(-max_delta, max_delta))
    c = float(1.0 + rng.uniform(-max_delta, max_delta))
    m = float(img.mean())
    return np.clip((img - m) * c + m + b, 0.0, 1.0).astype(np.float32)


def noise(img: np.ndarray, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> np.ndarray:
    """Add Gaussian noise of standard deviation ``sigma``, clipped to [0, 1]."""
    return np.clip(img + rng.normal(0.0, sigma, img.shape), 0.0, 1.0).astype(np.float32)


def jpeg(img: np.ndarray, rng: np.random.Generator, quality: tuple[int, int] = JPEG_QUALITY) -> np.ndarray:
    """Re-encode as an 8-bit JPEG of random quality in ``quality`` and decode again."""
    from PIL import Image

    q = int(rng.integers(quality[0], quality[1] + 1))
    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="JPEG", quality=q)
    buf.seek(0)
    with Image.open(buf) as im:
        return (np.asarray(im.convert("L"), dtype=np.float32) / 255.0).astype(np.float32)


_FUNCS = {"shift": shift, "crop_resize": crop_resize, "brightness": brightness, "noise": noise, "jpeg": jpeg}


def perturb(img: object, kind: str, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One light change of ``kind`` (see KINDS; "random" picks one of the non-identity kinds)."""
    x = as_gray01(img)
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if kind == "random":
        kind = str(gen.choice(KINDS[1:]))
    if kind == "identity":
        return x.copy()
    if kind not in _FUNCS:
        raise InputError(f"Unknown perturbation {kind!r}; use one of {(*KINDS, 'random')}.")
    return _FUNCS[kind](x, gen)


def perturb_chain(
    img: object, kinds: tuple[str, ...], rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """Several light changes applied in order (e.g. ("shift", "jpeg"))."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = as_gray01(img)
    for kind in kinds:
        out = perturb(out, kind, gen)
    return out
