"""The copy matcher: is a synthetic image a re-rendering of one given training image?

A diffusion model that memorised a training radiograph does not return its pixels: it re-renders it a
little rotated and rescaled, re-contrasted, smoothed by its VAE, warped. So each (synthetic, candidate)
pair is compared after undoing what can be undone, and on a representation that ignores the rest:

1. **Contrast-invariant**: both images are resized to ``SIDE`` (64 px, area average) and replaced by
   their pixel *ranks* (the empirical CDF of the image, in [0, 1]): any monotone change of intensities
   (gamma, window/level, brightness, contrast) leaves them unchanged.
2. **Registered**: the candidate is aligned to the synthetic image by OpenCV's ECC maximisation
   (``cv2.findTransformECC``, affine motion: rotation, scale, shear, shift), coarse to fine (32 then
   64 px) on Gaussian-smoothed ranks, which also absorbs crop-and-rescale. An implausible transform
   (scale outside 0.8-1.25, shift over 20% of the side) is replaced by the identity, so a new patient
   cannot be warped onto a training image.
3. **Compared on fine detail, multi-scale**: the score is the normalised correlation of the two
   images' fine band (rank image minus its Gaussian blur of sigma 2 px at 64 px: the ribs, vessels,
   devices and edges that tell patients apart, without the chest outline every patient shares), with
   the registered candidate blurred by sigma 0, 1 and 2 px (its best), so a VAE-smoothed or
   downsampled copy still matches. A border of 4 px is ignored; a small smooth elastic residual after
   the affine registration moves detail by under a pixel at this resolution and lowers the score only a
   little. (Also comparing both images smoothed by 0.5 px, or the synthetic one alone, was measured: it
   lifted noisy NIH copies, p5 0.73 -> 0.82-0.83, but raised the demo world's new-patient 99th percentile
   0.82 -> 0.85-0.87, above its combined copies: not used.)

The score is 1.0 for an exact copy. The encoder's candidates stay the search: :meth:`CopyMatcher.best`
re-ranks them with a cascade, the same one for calibration and queries: a quick score (the same fine
band at 32 px after a phase-correlation shift) on every candidate, then the full score for the best
``REFINE`` of them plus the encoder's ``KEEP_ENCODER`` nearest. Cost per pair is measured in
``benchmarks/privacy_matcher.py``.

The search itself (:mod:`.search`) adds to the encoder's candidates the training images nearest by
:func:`thumbnail` (a 16 px blurred rank image), because an encoder that was not trained for copy detection
can miss a rotated, rescaled and re-contrasted copy among its 50 nearest; the pixel key's nearest 2 are then
refined too (``keep_encoder`` counts them).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIDE = 64
COARSE = 32
BAND_SIGMA = 2.0  # fine band = rank image - Gaussian(BAND_SIGMA) at SIDE (half of it at COARSE)
CANDIDATE_BLURS = (0.0, 1.0, 2.0)  # the candidate is also compared blurred by these (VAE smoothing)
THUMB = 16  # side of the pixel search key (:func:`thumbnail`)
SMOOTH = 1.5  # Gaussian smoothing of the ranks that ECC registers
QUICK_BAND = 2.0  # the quick stage's band at COARSE px: coarser than the full score's, so a rescale ranks right
BORDER = 4  # pixels at each edge left out of the correlation at SIDE
MAX_SCALE = 1.25  # a registration implying a larger zoom (or its inverse) is replaced by the identity
MAX_SHIFT = 0.2  # ... or a larger shift, as a fraction of the side
ECC_ITER, ECC_EPS = 50, 1e-4


def _cv2():
    import cv2

    return cv2


def rank_image(g: np.ndarray) -> np.ndarray:
    """Each pixel's rank among the image's pixels, in [0, 1] (ties share their mean rank)."""
    flat = np.asarray(g, dtype=np.float32).ravel()
    if flat.size < 2:
        return np.zeros(np.shape(g), np.float32)
    _, inv, counts = np.unique(flat, return_inverse=True, return_counts=True)
    below = np.cumsum(counts) - counts  # pixels strictly below each distinct value
    mid = (below + (counts - 1) / 2.0) / (flat.size - 1)
    return mid[inv].astype(np.float32).reshape(np.shape(g))


def prepare(img: np.ndarray, side: int = SIDE) -> np.ndarray:
    """A gray image in [0, 1] as the matcher compares it: ``side`` x ``side``, area-resized, rank-normalised."""
    cv2 = _cv2()
    g = np.asarray(img, dtype=np.float32)
    if g.shape != (side, side):
        g = cv2.resize(g, (side, side), interpolation=cv2.INTER_AREA)
    return rank_image(g)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return _cv2().GaussianBlur(x, (0, 0), sigma) if sigma > 0 else x


def _band(x: np.ndarray, sigma: float) -> np.ndarray:
    return x - _blur(x, sigma)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    den = float(np.sqrt(float((a * a).sum()) * float((b * b).sum())))
    return float((a * b).sum()) / den if den > 1e-12 else 0.0


def _plausible(w: np.ndarray, side: int) -> bool:
    a = w[:, :2].astype(np.float64)
    s = np.linalg.svd(a, compute_uv=False)
    return (bool(np.all(np.isfinite(w))) and s.min() > 1 / MAX_SCALE and s.max() < MAX_SCALE
            and float(np.abs(w[:, 2]).max()) < MAX_SHIFT * side and np.linalg.det(a) > 0)


def register(q: np.ndarray, c: np.ndarray, init: np.ndarray | None = None) -> np.ndarray:
    """The 2 x 3 affine warp W with ``c(W(x)) ~ q(x)`` (ECC on smoothed ranks); the identity if ECC fails
    or finds an implausible transform (see MAX_SCALE, MAX_SHIFT)."""
    cv2 = _cv2()
    side = q.shape[0]
    w = np.eye(2, 3, dtype=np.float32) if init is None else init.astype(np.float32).copy()
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ECC_ITER, ECC_EPS)
    try:
        _, w = cv2.findTransformECC(_blur(q, SMOOTH * side / SIDE), _blur(c, SMOOTH * side / SIDE), w,
                                    cv2.MOTION_AFFINE, crit, None, 3)
    except cv2.error:  # no convergence (e.g. a flat image): compare unregistered
        return np.eye(2, 3, dtype=np.float32) if init is None else init.astype(np.float32)
    if not _plausible(w, side):
        return np.eye(2, 3, dtype=np.float32)
    return w


def _warp(c: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cv2 = _cv2()
    side = c.shape[0]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    out = cv2.warpAffine(c, w, (side, side), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    valid = cv2.warpAffine(np.ones_like(c), w, (side, side), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                           borderValue=0) > 0.5
    return out, valid


def _band_score(q: np.ndarray, cw: np.ndarray, valid: np.ndarray, sigma: float, border: int,
                blurs: Sequence[float]) -> float:
    m = valid.copy()
    if border:
        m[:border], m[-border:], m[:, :border], m[:, -border:] = False, False, False, False
    if m.sum() < 16:
        return 0.0
    qb = _band(q, sigma)[m]
    return max(_ncc(qb, _band(_blur(cw, b), sigma)[m]) for b in blurs)


def _half(x: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    return cv2.resize(x, (COARSE, COARSE), interpolation=cv2.INTER_AREA)


def _gauss_ft(sigma: float, n: int = COARSE) -> np.ndarray:
    """The real-FFT transform of a Gaussian blur of ``sigma`` px on an n x n periodic grid."""
    fy, fx = np.fft.fftfreq(n), np.fft.rfftfreq(n)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    return np.exp(-2.0 * np.pi**2 * sigma**2 * f2).astype(np.float32)


_FILTERS: dict[str, np.ndarray] = {}


def _filters() -> dict[str, np.ndarray]:
    """Fourier-domain filters of the quick stage at COARSE px (built once)."""
    if not _FILTERS:
        f = COARSE / SIDE
        band = 1.0 - _gauss_ft(QUICK_BAND)
        _FILTERS["phase"] = 1.0 - _gauss_ft(2.0)
        _FILTERS["query"] = band
        _FILTERS["cands"] = np.stack([_gauss_ft(b * f) * band for b in CANDIDATE_BLURS])
        _FILTERS["fy"], _FILTERS["fx"] = np.fft.fftfreq(COARSE)[:, None], np.fft.rfftfreq(COARSE)[None, :]
    return _FILTERS


QUICK_VARIANTS = ((-2.0, 1.0), (2.0, 1.0), (0.0, 1 / 1.05), (-2.0, 1 / 1.05), (2.0, 1 / 1.05))
"""(degrees, scale) of the query, at COARSE, that the cascade's quick score also tries (the best counts): a copy
re-rendered turned by 1-3 degrees or cropped and rescaled (zoomed in by up to ~9%) otherwise ranked its source
below the cascade's best 8 among ~60 candidates now and then (NIH, 20 combined copies on 653 training images: 9th and
12th, the second then missed); the registration that follows recovers the exact transform."""


def _turned(x: np.ndarray, angle: float, scale: float) -> np.ndarray:
    n = x.shape[0]
    m = _cv2().getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), angle, scale)
    return _cv2().warpAffine(np.asarray(x, np.float32), m, (n, n), flags=_cv2().INTER_LINEAR,
                             borderMode=_cv2().BORDER_REFLECT)


def quick_scores(q32: np.ndarray, c32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cascade's cheap stage for m candidates at once: (scores [m], shifts [m, 2] as (dx, dy) px at COARSE).

    Each candidate is shifted by the integer translation phase correlation finds (of the images'
    coarse high-pass), then the query's fine band (as in :func:`full_score`, at 32 px) is correlated
    with the candidate's, blurred by each of CANDIDATE_BLURS (the best counts), over the pixels both
    cover minus a border. Filtering is done in the Fourier domain (periodic borders), all candidates
    in one batch.
    """
    flt = _filters()
    n = COARSE
    fq = np.fft.rfft2(q32.astype(np.float32))
    fc = np.fft.rfft2(np.asarray(c32, dtype=np.float32), axes=(-2, -1))
    cross = (fq * flt["phase"])[None] * np.conj(fc * flt["phase"])
    cross /= np.abs(cross) + 1e-12
    corr = np.fft.irfft2(cross, s=(n, n), axes=(-2, -1))
    m = len(c32)
    peak = corr.reshape(m, -1).argmax(axis=1)
    py, px = peak // n, peak % n
    k = np.arange(m)

    def sub(lo, mid, hi):  # parabolic sub-pixel offset of a peak
        den = lo - 2 * mid + hi
        return np.where(np.abs(den) > 1e-9, np.clip(0.5 * (lo - hi) / np.where(den == 0, 1, den), -0.5, 0.5), 0.0)

    c0 = corr[k, py, px]
    oy = sub(corr[k, (py - 1) % n, px], c0, corr[k, (py + 1) % n, px])
    ox = sub(corr[k, py, (px - 1) % n], c0, corr[k, py, (px + 1) % n])
    dy = np.where(py > n // 2, py - n, py) + oy
    dx = np.where(px > n // 2, px - n, px) + ox
    lim = MAX_SHIFT * n
    far = (np.abs(dy) >= lim) | (np.abs(dx) >= lim)
    dy, dx = np.where(far, 0.0, -dy), np.where(far, 0.0, -dx)  # c(x + t) ~ q(x)
    ramp = np.exp(2j * np.pi * (flt["fy"][None] * dy[:, None, None] + flt["fx"][None] * dx[:, None, None]))
    cb = np.fft.irfft2((fc * ramp.astype(np.complex64))[:, None] * flt["cands"][None], s=(n, n), axes=(-2, -1))
    qb = np.fft.irfft2(fq * flt["query"], s=(n, n))  # cb: [m, blurs, n, n]
    b = max(1, round(BORDER * COARSE / SIDE))
    ys, iy, ix = np.arange(n), np.round(dy)[:, None], np.round(dx)[:, None]
    vy = (ys[None] >= b) & (ys[None] < n - b) & (ys[None] + iy >= 0) & (ys[None] + iy < n)
    vx = (ys[None] >= b) & (ys[None] < n - b) & (ys[None] + ix >= 0) & (ys[None] + ix < n)
    mask = (vy[:, :, None] & vx[:, None, :]).astype(np.float32)[:, None]  # [m, 1, n, n]
    cnt = np.maximum(mask.sum(axis=(-2, -1)), 1.0)
    qm = (qb[None, None] * mask).sum(axis=(-2, -1)) / cnt
    cm = (cb * mask).sum(axis=(-2, -1)) / cnt
    qc = (qb[None, None] - qm[..., None, None]) * mask
    cc = (cb - cm[..., None, None]) * mask
    num = (qc * cc).sum(axis=(-2, -1))
    den = np.sqrt((qc * qc).sum(axis=(-2, -1)) * (cc * cc).sum(axis=(-2, -1)))
    ncc = np.where(den > 1e-12, num / np.maximum(den, 1e-12), 0.0)
    return ncc.max(axis=1), np.stack([dx, dy], axis=1).astype(np.float32)


def full_score(q: np.ndarray, c: np.ndarray, coarse_warp: np.ndarray | None = None) -> float:
    """The copy score of prepared images ``q`` (synthetic) and ``c`` (candidate), in [-1, 1]."""
    if coarse_warp is None:
        coarse_warp = np.eye(2, 3, dtype=np.float32)
        coarse_warp[:, 2] = quick_scores(_half(q), _half(c)[None])[1][0]
    init = coarse_warp.copy()
    init[:, 2] *= SIDE / COARSE
    w = register(q, c, init)
    cw, valid = _warp(c, w)
    return _band_score(q, cw, valid, BAND_SIGMA, BORDER, CANDIDATE_BLURS)


def thumbnail(p: np.ndarray) -> np.ndarray:
    """The pixel search key of a prepared image (:func:`prepare`): its ranks blurred, area-resized to ``THUMB`` px,
    zero-mean and unit-norm (``THUMB**2`` float32 values); the cosine of two keys ranks candidates."""
    cv2 = _cv2()
    side = p.shape[0]
    t = cv2.resize(_blur(np.asarray(p, np.float32), side / THUMB / 2), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    t = t.ravel() - t.mean()
    return (t / max(float(np.linalg.norm(t)), 1e-8)).astype(np.float32)


def pair_score(a: np.ndarray, b: np.ndarray) -> float:
    """Copy score of gray image ``a`` (synthetic) against gray image ``b`` (training), any sizes."""
    return full_score(prepare(a), prepare(b))


class CopyMatcher:
    """Copy scores of query images against rows of a training set (paths or arrays), prepared once each.

    ``best(img, rows)`` -> (score, row) of the best candidate: the quick score on every candidate, the
    full score for the ``refine`` best of them and the first ``keep_encoder`` rows as given (the
    encoder's nearest), the best full score wins. Prepared training images are kept (12 KiB each).
    """

    REFINE = 8  # 4 -> 8: a combined copy's source ranked 5th-8th by the quick score 2 times in 240 (NIH, benchmarks)
    KEEP_ENCODER = 2

    def __init__(self, train_items: Sequence, *, refine: int | None = None, keep_encoder: int | None = None):
        self.paths = list(train_items)
        self.refine = self.REFINE if refine is None else int(refine)
        self.keep_encoder = self.KEEP_ENCODER if keep_encoder is None else int(keep_encoder)
        self._prep: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def prepared(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(64 px ranks as float16, 32 px ranks) of training row ``row``."""
        row = int(row)
        if row not in self._prep:
            p, p32 = self.prepare_query(self.paths[row])
            self._prep[row] = (p.astype(np.float16), p32)
        return self._prep[row]

    @staticmethod
    def prepare_query(item) -> tuple[np.ndarray, np.ndarray]:
        from ..imageio import image_array
        from .distances import as_gray01

        p = prepare(as_gray01(image_array(item)))
        return p, _half(p)

    def scores(self, img, rows: Sequence[int]) -> np.ndarray:
        """The cascade's score of every candidate row: full score where refined, else -1 + quick score / 10
        (below every full score, in the quick score's order)."""
        q, q32 = img if isinstance(img, tuple) else self.prepare_query(img)
        rows = [int(r) for r in rows]
        c32 = np.stack([self.prepared(r)[1] for r in rows])
        quick, shifts = quick_scores(q32, c32)
        for angle, scale in QUICK_VARIANTS:  # a turned or rescaled copy's source ranks high on one of these
            quick = np.maximum(quick, quick_scores(_turned(q32, angle, scale), c32)[0])
        out = -1.0 + quick / 10.0
        pick = set(np.argsort(-quick, kind="stable")[: self.refine].tolist()) | set(range(min(self.keep_encoder,
                                                                                             len(rows))))
        for j in sorted(pick):
            w = np.eye(2, 3, dtype=np.float32)
            w[:, 2] = shifts[j]
            out[j] = full_score(q, self.prepared(rows[j])[0].astype(np.float32), w)
        return out

    def best(self, img, rows: Sequence[int]) -> tuple[float, int]:
        """(best copy score, its row) among candidate ``rows`` (-1 rows are skipped); (-1.0, -1) for none."""
        rows = [int(r) for r in rows if int(r) >= 0]
        if not rows:
            return -1.0, -1
        s = self.scores(img, rows)
        j = int(np.argmax(s))
        return float(s[j]), rows[j]
