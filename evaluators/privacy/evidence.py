"""The picture behind a verdict: a synthetic image beside its matched training image, aligned, and their difference.

:func:`aligned_pair` brings the training image onto the synthetic one (best of a few scales, then the shift found
by phase correlation of the high-passed images) after matching its grey levels to the synthetic image's (a
contrast or gamma change does not show as a difference); :func:`evidence_panel` lays out
``synthetic | training (aligned) | |difference|`` as one RGB image, with the overlap shown as a colour overlay
(synthetic green, training magenta: grey where they agree). This is a display aid, not the copy score.
"""

from __future__ import annotations

import numpy as np

from .distances import as_gray01, resize_to

SCALES = (1.0, 1.04, 1.08, 0.96, 0.92)
DIFF_GAIN = 4.0  # |difference| of 0.25 (a quarter of the grey range) is white


def _match_histogram(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``src``'s grey levels replaced by ``ref``'s at the same rank (monotone: contrast and gamma removed)."""
    order = np.argsort(src, axis=None, kind="stable")
    out = np.empty(src.size, dtype=np.float64)
    out[order] = np.sort(ref, axis=None)
    return out.reshape(src.shape)


def _highpass(x: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return x - gaussian_filter(x, sigma)


def _phase_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    """(dy, dx, peak) such that ``np.roll(b, (dy, dx))`` best overlays ``a`` (normalised cross-power spectrum)."""
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    fa, fb = np.fft.fft2(a * win), np.fft.fft2(b * win)
    cross = fa * np.conj(fb)
    corr = np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-12)).real
    dy, dx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    h, w = corr.shape
    return (int(dy) - h if dy > h // 2 else int(dy)), (int(dx) - w if dx > w // 2 else int(dx)), float(corr.max())


def _scaled(img: np.ndarray, s: float) -> np.ndarray:
    """``img`` zoomed about its centre by ``s`` at the same size (s > 1 crops, s < 1 pads with the edge)."""
    n = img.shape[0]
    m = max(2, round(n * s))
    z = resize_to(img, m)
    if m >= n:
        o = (m - n) // 2
        return z[o : o + n, o : o + n]
    p = n - m
    return np.pad(z, ((p // 2, p - p // 2), (p // 2, p - p // 2)), mode="edge")


def aligned_pair(synthetic, training, *, size: int = 128) -> tuple[np.ndarray, np.ndarray, dict]:
    """(synthetic, training aligned onto it, {scale, shift}) as [size, size] float arrays in [0, 1]."""
    a = resize_to(as_gray01(synthetic, name="synthetic image"), size).astype(np.float64)
    b = _match_histogram(resize_to(as_gray01(training, name="training image"), size).astype(np.float64), a)
    ha = _highpass(a, 2.0)
    best = None
    for s in SCALES:
        bs = _scaled(b, s)
        dy, dx, peak = _phase_shift(ha, _highpass(bs, 2.0))
        if best is None or peak > best[0]:
            best = (peak, s, dy, dx, bs)
    _, s, dy, dx, bs = best
    aligned = np.roll(bs, (dy, dx), axis=(0, 1))
    return a.astype(np.float32), np.clip(aligned, 0, 1).astype(np.float32), {"scale": s, "shift": (dy, dx)}


def evidence_panel(synthetic, training, *, size: int = 192) -> np.ndarray:
    """``uint8 [size, 4 * size, 3]``: synthetic | training aligned | overlay (green / magenta) | |difference| x 4."""
    a, b, _ = aligned_pair(synthetic, training, size=size)
    gray = lambda x: np.repeat(x[..., None], 3, axis=2)  # noqa: E731 - a one-line helper
    overlay = np.stack([b, a, b], axis=2)
    diff = np.abs(a - b) * DIFF_GAIN  # a fixed gain: a copy stays dark, another patient does not
    panel = np.concatenate([gray(a), gray(b), overlay, gray(np.clip(diff, 0, 1))], axis=1)
    return (np.clip(panel, 0, 1) * 255 + 0.5).astype(np.uint8)
