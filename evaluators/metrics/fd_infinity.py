"""FD_inf: Fréchet distance extrapolated to infinitely many synthetic samples (Chong and Forsyth 2020).

"Effectively Unbiased FID and Inception Score and where to find them" (CVPR 2020): FID computed from
N samples is biased upwards by about ``c / N`` with a ``c`` that depends on the generator, so sets of
different sizes do not compare. FD_inf computes the Fréchet distance of ``num_points`` random subsets
of the synthetic features, sizes evenly spaced from ``N / 10`` to ``N`` (the authors' 5,000..50,000;
dgm-eval's ``compute_FD_infinity`` uses the same spacing), fits ``FD = FD_inf + slope / n`` by
ordinary least squares and reports the intercept. The reference side keeps its full-set statistics
(its own bias is not extrapolated: use a large reference set).

The stated error (``FD_inf_err``, not in the paper) is a split-half estimate: FD_inf is recomputed on
both halves of ``splits`` random half-splits of the synthetic set, and the standard deviation of those
half-set values is divided by sqrt(2). FD_inf's spread falls between 1/sqrt(N) and 1/N, so this is
conservative (on Gaussian features it overstated the observed spread by ~1.2-1.5x, see the tests).

Valid sample sizes: the ``1/n`` law is asymptotic. With fewer synthetic images than ``10 x D`` the smallest
subsets (N/10) have rank-deficient covariances and the fit misses the true distance by several of its own stated
errors (D = 64, true FD 0: N = 32 gives FD_inf 29.9 +- 1.7, N = 192 gives -1.6 +- 0.3, N = 640 gives -0.17 +- 0.17;
``benchmarks/fd_inf_sample_size.py``); with fewer real images than D the reference Gaussian itself is degenerate.
The registered metric (the suite's FD_inf, overall and per pathology) therefore withholds the number below
:func:`min_samples` and says why in ``FD_inf_note`` next to it (:func:`validity_note`); :func:`fd_infinity`
itself computes whatever it is given (the tests' small-n experiments).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .fidelity import ArrayLike, _sqrtm_psd, as_features, feature_stats
from .registry import Output, register


def _fd_to_reference(mu_r: np.ndarray, s_r: np.ndarray, sqrt_r: np.ndarray, x: np.ndarray) -> float:
    """Fréchet distance from fixed reference statistics (with ``sqrt(S_r)`` precomputed) to ``x``.

    With fewer samples than dimensions (``S = A^T A`` of rank < D, ``A`` the centred samples over sqrt(n - 1)),
    ``tr sqrt(S_r S)`` is the sum of square roots of the eigenvalues of the small ``A S_r A^T`` (same non-zero
    spectrum as ``S^1/2 S_r S^1/2``): O(n D^2) instead of a D x D eigensolver per subset."""
    if x.shape[0] - 1 < x.shape[1]:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[0] < 2:
            raise InputError(f"feature statistics: needs at least 2 samples, got {x.shape[0]}.")
        mu = x.mean(axis=0)
        a = (x - mu) / np.sqrt(x.shape[0] - 1)
        m = a @ s_r @ a.T
        ev = np.linalg.eigvalsh((m + m.T) / 2)
        diff = mu_r - mu
        return float(diff @ diff + np.trace(s_r) + (a * a).sum() - 2.0 * np.sqrt(np.clip(ev, 0.0, None)).sum())
    mu, s = feature_stats(x)
    m = sqrt_r @ s @ sqrt_r
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    diff = mu_r - mu
    return float(diff @ diff + np.trace(s_r) + np.trace(s) - 2.0 * np.sqrt(np.clip(ev, 0.0, None)).sum())


def subset_sizes(n: int, num_points: int = 15, *, min_size: int | None = None) -> np.ndarray:
    """``num_points`` subset sizes evenly spaced from ``max(N // 10, min_size, 2)`` to ``N`` (distinct)."""
    lo = max(n // 10, 2 if min_size is None else int(min_size), 2)
    if n < lo + 1:
        raise InputError(f"FD_inf: {n} synthetic samples are too few (need more than {lo}).")
    return np.unique(np.linspace(lo, n, int(num_points)).astype(np.int64))


def _fit(mu_r, s_r, sqrt_r, x, num_points, min_size, rng) -> tuple[float, float, np.ndarray, np.ndarray]:
    sizes = subset_sizes(x.shape[0], num_points, min_size=min_size)
    fds = np.array([_fd_to_reference(mu_r, s_r, sqrt_r, x[rng.choice(x.shape[0], int(k), replace=False)])
                    for k in sizes])
    design = np.stack([np.ones(len(sizes)), 1.0 / sizes], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, fds, rcond=None)
    return float(intercept), float(slope), sizes, fds


def fd_infinity(real: ArrayLike, fake: ArrayLike, *, num_points: int = 15, splits: int = 3,
                min_size: int | None = None, seed: int = 0,
                real_stats: tuple[ArrayLike, ArrayLike] | None = None) -> dict[str, Any]:
    """FD_inf of ``fake`` against ``real`` with its split-half error, beside the plain FID.

    ``min_size`` floors the smallest subset (default 2; ``D + 2`` keeps every subset covariance full
    rank, where the ``1/n`` law holds best). ``splits=0`` skips the error (``FD_inf_err`` None).
    Returns ``FD_inf``, ``FD_inf_err``, ``slope`` (FD per unit of 1/n), ``FID`` (all N samples),
    ``sizes`` and ``FD_at_sizes`` (the fitted points), ``n_real``, ``n_synthetic``.
    """
    f = as_features(fake, "synthetic features").astype(np.float64, copy=False)
    if real_stats is None:
        r = as_features(real, "real features")
        if r.shape[1] != f.shape[1]:
            raise InputError(f"Feature sizes differ: real {r.shape[1]}, synthetic {f.shape[1]}; "
                             "extract both with the same encoder.")
        mu_r, s_r = feature_stats(r)
        n_real = int(r.shape[0])
    else:
        mu_r, s_r = (np.asarray(a, dtype=np.float64) for a in real_stats)
        n_real = None
    if s_r.shape != (f.shape[1], f.shape[1]):
        raise InputError(f"FD_inf: reference statistics are {mu_r.shape[0]}-d, synthetic features "
                         f"{f.shape[1]}-d; use the same encoder.")
    if num_points < 3:
        raise InputError(f"FD_inf: num_points must be >= 3 for a line with an error, got {num_points}.")
    sqrt_r = _sqrtm_psd(s_r)
    rng = np.random.default_rng(int(seed))
    value, slope, sizes, fds = _fit(mu_r, s_r, sqrt_r, f, num_points, min_size, rng)
    err = None
    if splits:
        halves = []
        for _ in range(int(splits)):
            perm = rng.permutation(f.shape[0])
            h = f.shape[0] // 2
            for part in (perm[:h], perm[h:]):
                halves.append(_fit(mu_r, s_r, sqrt_r, f[part], num_points, min_size, rng)[0])
        err = float(np.std(halves, ddof=1) / np.sqrt(2))
    return {"FD_inf": value, "FD_inf_err": err, "slope": slope,
            "FID": _fd_to_reference(mu_r, s_r, sqrt_r, f),
            "sizes": sizes.tolist(), "FD_at_sizes": fds.tolist(), "splits": int(splits),
            "n_real": n_real, "n_synthetic": int(f.shape[0])}


SUBSET_FLOOR = 10  # the fit's smallest subset is N / 10: N >= 10 D keeps every subset covariance full rank


def min_samples(dim: int) -> tuple[int, int]:
    """(synthetic, real) images FD_inf needs for ``dim``-d features: ``10 x dim`` synthetic (its smallest fitted
    subset, N/10, has at least ``dim`` images) and ``dim`` real (a full-rank reference covariance)."""
    return SUBSET_FLOOR * int(dim), int(dim)


def validity_note(n_real: int, n_synthetic: int, dim: int) -> str | None:
    """Why FD_inf is withheld for these sample sizes, or None when its 1/n fit holds (:func:`min_samples`)."""
    need_s, need_r = min_samples(dim)
    if n_synthetic >= need_s and n_real >= need_r:
        return None
    return (f"withheld: {n_synthetic:,} synthetic and {n_real:,} real image(s) for {dim}-d features; FD_inf needs "
            f">= {need_s:,} synthetic (10 x D: its smallest fitted subset full rank) and >= {need_r:,} real, below "
            "that its 1/n fit misses the true distance by several of its stated errors")


@register("FD_inf", per_pathology=True, opt_in=True,
          outputs=(Output("FD_inf", display="FD_inf", direction="lower", column="FD_inf", ci=False),
                   Output("FD_inf_err", display="FD_inf error", direction="none", shown=False, ci=False)))
def fd_infinity_metric(real: np.ndarray, synthetic: np.ndarray, *, seed: int = 0,
                       real_stats: tuple[ArrayLike, ArrayLike] | None = None) -> dict[str, float | None]:
    """FD_inf beside FID (sets of different sizes compare). Opt-in (``--fd-inf``; ``FidelityConfig(include=
    ("FD_inf",))``): 105 Fréchet distances (15 subset sizes, 3 half-splits for the error), ~4x FID, KID and PRDC
    together at D = 256 (``benchmarks/fidelity_metric_costs.py``). No bootstrap interval (``ci=False``): its own
    split-half error ``FD_inf_err`` is its stated uncertainty. Below :func:`min_samples` (fewer than 10 x D synthetic
    or D real images: a pathology row, a small set) the number is withheld, None with ``FD_inf_note`` saying why,
    not a failed run and not a number that looks valid."""
    n_real, n_synthetic, dim = len(real), len(synthetic), int(np.shape(synthetic)[1])
    note = validity_note(n_real, n_synthetic, dim)
    if note is not None:
        return {"FD_inf": None, "FD_inf_err": None, "FD_inf_note": note}
    try:
        res = fd_infinity(real, synthetic, seed=seed, real_stats=real_stats)
    except InputError as exc:
        return {"FD_inf": None, "FD_inf_err": None, "FD_inf_note": f"not computed: {exc}"}
    return {"FD_inf": res["FD_inf"], "FD_inf_err": res["FD_inf_err"]}


__all__ = ["fd_infinity", "fd_infinity_metric", "min_samples", "subset_sizes", "validity_note"]
