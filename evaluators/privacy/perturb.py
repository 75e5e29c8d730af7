"""Light changes to an image that keep it a copy: what a memorisation detector must still catch.

A generator that memorised a training X-ray rarely reproduces it bit for bit; it comes back slightly
shifted, cropped, brighter, noisier or re-compressed, and (what a diffusion model's re-rendering does)
rotated by a few degrees, re-contrasted (gamma), smoothed by its VAE (downsampled and back) and
smoothly warped. Tests (and the copycat baseline, which "generates" by returning perturbed training
images) use these to check that near-copies are flagged.

Strengths scale with the image: shifts, crops and warps are fractions of the side, so a 64 px and a
256 px copy are changed alike.

Every function takes and returns a 2-D float32 array in [0, 1] of the same shape.
"""

from __future__ import annotations

import io

import numpy as np

from ..errors import InputError
from .distances import as_gray01, resize_to

KINDS = ("identity", "shift", "crop_resize", "brightness", "noise", "jpeg", "rotate", "gamma", "downsample",
         "elastic", "combined")
COMBINED = ("elastic", "rotate", "crop_resize", "downsample", "gamma")
"""What ``combined`` applies, in this order: a re-rendering that warps, turns, rescales, smooths and re-contrasts."""

# Default strengths: "light" = still obviously the same image to a radiologist.
MAX_SHIFT = 0.04  # fraction of the side
MAX_CROP = 0.08  # fraction of the side removed in total
MAX_BRIGHTNESS = 0.08  # additive, in [0, 1] units, plus up to this much relative contrast change
NOISE_SIGMA = 0.02
JPEG_QUALITY = (60, 90)
MAX_ROTATION = 3.0  # degrees, either way
GAMMA_RANGE = (0.67, 1.5)  # log-uniform; out = img ** gamma
DOWNSAMPLE = 4  # factor: area-averaged down, bicubic back up
ELASTIC_MAX = 0.015  # largest displacement, fraction of the side
ELASTIC_SMOOTH = 0.15  # Gaussian smoothing of the random displacement field, fraction of the side


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


def _warp(img: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """``img`` sampled at (y + dy, x + dx), bicubic, borders repeating the edge."""
    from scipy.ndimage import map_coordinates

    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = map_coordinates(img.astype(np.float64), [yy + dy, xx + dx], order=3, mode="nearest")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def rotate(img: np.ndarray, rng: np.random.Generator, max_deg: float = MAX_ROTATION) -> np.ndarray:
    """Rotate about the centre by an angle drawn from [-max_deg, -max_deg/3] U [max_deg/3, max_deg]."""
    h, w = img.shape
    a = np.deg2rad(float(rng.uniform(max_deg / 3, max_deg)) * float(rng.choice([-1.0, 1.0])))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    y, x = yy - cy, xx - cx
    c, s = np.cos(a), np.sin(a)
    return _warp(img, (c * y + s * x) - y, (c * x - s * y) - x)


def gamma(img: np.ndarray, rng: np.random.Generator, span: tuple[float, float] = GAMMA_RANGE) -> np.ndarray:
    """Re-contrast with a gamma drawn log-uniformly from ``span`` (away from 1 by at least a fifth of the span)."""
    lo, hi = np.log(span[0]), np.log(span[1])
    g = float(np.exp(rng.uniform(0.2 * hi, hi) if rng.random() < 0.5 else rng.uniform(lo, 0.2 * lo)))
    return np.power(np.clip(img, 0.0, 1.0), g).astype(np.float32)


def downsample(img: np.ndarray, rng: np.random.Generator, factor: int = DOWNSAMPLE) -> np.ndarray:
    """Average down by ``factor`` and resize back (bicubic): the detail a VAE's latent grid loses."""
    from PIL import Image

    h, w = img.shape
    small = Image.fromarray(img.astype(np.float32), mode="F").resize(
        (max(1, round(w / factor)), max(1, round(h / factor))), Image.Resampling.BOX)
    big = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.clip(big, 0.0, 1.0).astype(np.float32)


def elastic(img: np.ndarray, rng: np.random.Generator, max_frac: float = ELASTIC_MAX,
            smooth: float = ELASTIC_SMOOTH) -> np.ndarray:
    """A smooth random warp: white noise smoothed over ``smooth`` of the side, scaled so its largest
    displacement is ``max_frac`` of the side."""
    from scipy.ndimage import gaussian_filter

    h, w = img.shape
    side = max(h, w)
    fields = []
    for _ in range(2):
        f = gaussian_filter(rng.normal(size=(h, w)), smooth * side, mode="reflect")
        fields.append(f / max(float(np.abs(f).max()), 1e-12) * max_frac * side)
    return _warp(img, fields[0], fields[1])


def combined(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Every re-rendering change at once (see COMBINED)."""
    for kind in COMBINED:
        img = _FUNCS[kind](img, rng)
    return img


_FUNCS = {"shift": shift, "crop_resize": crop_resize, "brightness": brightness, "noise": noise, "jpeg": jpeg,
          "rotate": rotate, "gamma": gamma, "downsample": downsample, "elastic": elastic, "combined": combined}


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
