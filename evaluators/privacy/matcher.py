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
   little.

The score is 1.0 for an exact copy. The encoder's candidates stay the search: :meth:`CopyMatcher.best`
re-ranks them with a cascade, the same one for calibration and queries: a quick score (the same fine
band at 32 px after a phase-correlation shift) on every candidate, then the full score for the best
``REFINE`` of them plus the encoder's ``KEEP_ENCODER`` nearest. Cost per pair is measured in
``benchmarks/privacy_matcher.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIDE = 64
COARSE = 32
BAND_SIGMA = 2.0  # fine band = rank image - Gaussian(BAND_SIGMA) at SIDE (half of it at COARSE)
CANDIDATE_BLURS = (0.0, 1.0, 2.0)  # the candidate is also compared blurred by these (VAE smoothing)
SMOOTH = 1.5  # Gaussian smoothing of the ranks that ECC registers
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


def _phase_shift(q: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The translation-only warp that phase correlation finds (``c(x + t) ~ q(x)``), as a 2 x 3 matrix."""
    cv2 = _cv2()
    (dx, dy), _ = cv2.phaseCorrelate(_band(q, 2.0).astype(np.float64), _band(c, 2.0).astype(np.float64))
    w = np.eye(2, 3, dtype=np.float32)
    if abs(dx) < MAX_SHIFT * q.shape[1] and abs(dy) < MAX_SHIFT * q.shape[0]:
        w[0, 2], w[1, 2] = dx, dy
    return w


def quick_score(q32: np.ndarray, c32: np.ndarray) -> tuple[float, np.ndarray]:
    """(coarse score, coarse warp): the fine-band score at 32 px after a phase-correlation shift (the cascade's
    cheap stage; its shift starts the full registration)."""
    w = _phase_shift(q32, c32)
    cw, valid = _warp(c32, w)
    f = COARSE / SIDE
    return _band_score(q32, cw, valid, BAND_SIGMA * f, max(1, round(BORDER * f)),
                       tuple(b * f for b in CANDIDATE_BLURS)), w


def full_score(q: np.ndarray, c: np.ndarray, coarse_warp: np.ndarray | None = None) -> float:
    """The copy score of prepared images ``q`` (synthetic) and ``c`` (candidate), in [-1, 1]."""
    if coarse_warp is None:
        coarse_warp = register(_half(q), _half(c))
    init = coarse_warp.copy()
    init[:, 2] *= SIDE / COARSE
    w = register(q, c, init)
    cw, valid = _warp(c, w)
    return _band_score(q, cw, valid, BAND_SIGMA, BORDER, CANDIDATE_BLURS)


def pair_score(a: np.ndarray, b: np.ndarray) -> float:
    """Copy score of gray image ``a`` (synthetic) against gray image ``b`` (training), any sizes."""
    return full_score(prepare(a), prepare(b))


class CopyMatcher:
    """Copy scores of query images against rows of a training set (paths or arrays), prepared once each.

    ``best(img, rows)`` -> (score, row) of the best candidate: the quick score on every candidate, the
    full score for the ``refine`` best of them and the first ``keep_encoder`` rows as given (the
    encoder's nearest), the best full score wins. Prepared training images are kept (4 KiB each).
    """

    REFINE = 4
    KEEP_ENCODER = 2

    def __init__(self, train_items: Sequence, *, refine: int | None = None, keep_encoder: int | None = None):
        self.paths = list(train_items)
        self.refine = self.REFINE if refine is None else int(refine)
        self.keep_encoder = self.KEEP_ENCODER if keep_encoder is None else int(keep_encoder)
        self._prep: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def prepared(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """(64 px ranks, 32 px ranks) of training row ``row``."""
        row = int(row)
        if row not in self._prep:
            self._prep[row] = self.prepare_query(self.paths[row])
        return self._prep[row]

    @staticmethod
    def prepare_query(item) -> tuple[np.ndarray, np.ndarray]:
        from .distances import as_gray01
        from .search import image_array

        p = prepare(as_gray01(image_array(item)))
        return p, _half(p)

    def scores(self, img, rows: Sequence[int]) -> np.ndarray:
        """The cascade's score of every candidate row: full score where refined, else -1 + quick score / 10
        (below every full score, in the quick score's order)."""
        q, q32 = img if isinstance(img, tuple) else self.prepare_query(img)
        rows = [int(r) for r in rows]
        quick, warps = [], []
        for r in rows:
            s, w = quick_score(q32, self.prepared(r)[1])
            quick.append(s)
            warps.append(w)
        quick = np.asarray(quick)
        out = -1.0 + quick / 10.0
        pick = set(np.argsort(-quick, kind="stable")[: self.refine].tolist()) | set(range(min(self.keep_encoder,
                                                                                             len(rows))))
        for j in sorted(pick):
            out[j] = full_score(q, self.prepared(rows[j])[0], warps[j])
        return out

    def best(self, img, rows: Sequence[int]) -> tuple[float, int]:
        """(best copy score, its row) among candidate ``rows`` (-1 rows are skipped); (-1.0, -1) for none."""
        rows = [int(r) for r in rows if int(r) >= 0]
        if not rows:
            return -1.0, -1
        s = self.scores(img, rows)
        j = int(np.argmax(s))
        return float(s[j]), rows[j]
