"""Bootstrap confidence intervals for set-to-set metrics (FID, KID, PRDC, anything returning floats).

Both sets are resampled with replacement (or only one of them: ``resample="fake"`` treats the real
reference set as fixed) and the metric is recomputed; the interval is the percentile interval of
the replicates. Note for FID: a resample holds duplicates, so its FID is biased upwards next to
the full-set value; the interval describes the spread, and for small sets it can sit above the
point estimate. :func:`bootstrap_fid` is a faster FID-only path drawing the very same resamples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from numbers import Real
from typing import Any

import numpy as np

from .. import jobs
from ..errors import InputError
from .fidelity import ArrayLike, as_features, frechet_distance

_RESAMPLE = ("both", "fake", "real")


def _draws(n_real: int, n_fake: int | None, n_boot: int, seed: int | None, resample: str):
    """Index pairs per replicate; one generator, real then fake, so every path sees the same draws."""
    if resample not in _RESAMPLE:
        raise InputError(f"resample must be one of {_RESAMPLE}, got {resample!r}.")
    if n_boot < 2:
        raise InputError(f"n_boot must be >= 2, got {n_boot}.")
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        ir = rng.integers(0, n_real, n_real) if resample in ("both", "real") else np.arange(n_real)
        if n_fake is None:
            jf = None
        else:
            jf = rng.integers(0, n_fake, n_fake) if resample in ("both", "fake") else np.arange(n_fake)
        yield ir, jf


def _summary(values: np.ndarray, n_requested: int, alpha: float, estimate: float | None) -> dict[str, Any]:
    ok = values[np.isfinite(values)]
    if ok.size == 0:
        return {"estimate": estimate, "mean": None, "low": None, "high": None, "std": None, "n_boot": 0,
                "n_requested": n_requested}
    return {
        "estimate": estimate,
        "mean": float(ok.mean()),
        "low": float(np.percentile(ok, 100 * alpha / 2)),
        "high": float(np.percentile(ok, 100 * (1 - alpha / 2))),
        "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0,
        "n_boot": int(ok.size),
        "n_requested": n_requested,
    }


def _numeric(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, np.generic | np.ndarray) and np.size(value) == 1:
        return float(value)
    try:  # torch scalars
        return float(value.item())
    except (AttributeError, TypeError, ValueError, RuntimeError):
        return None


def _take(x: Any, idx: np.ndarray) -> Any:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x[torch.from_numpy(idx).to(x.device)]
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return x[idx]


def bootstrap_ci(metric_fn: Callable[..., Any], real: ArrayLike, fake: ArrayLike | None = None, *,
                 n_boot: int = 200, alpha: float = 0.05, seed: int | None = 0, resample: str = "both",
                 estimate: bool = True) -> dict[str, Any]:
    """Percentile bootstrap of ``metric_fn(real, fake)`` (or ``metric_fn(real)`` when fake is None).

    Returns ``{estimate, mean, low, high, std, n_boot, n_requested}`` for a metric returning one
    number, or ``{key: that dict}`` for a metric returning a dict (non-numeric values are skipped).
    ``estimate`` is the metric on the full sets; replicates giving NaN/inf/None are dropped and
    ``n_boot`` counts those kept.
    """
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}.")
    n_real = len(real)
    n_fake = None if fake is None else len(fake)

    def call(r: Any, f: Any) -> Any:
        return metric_fn(r) if fake is None else metric_fn(r, f)

    def flatten(out: Any) -> dict[str, float | None] | float | None:
        if isinstance(out, Mapping):
            return {str(k): _numeric(v) for k, v in out.items()}
        if isinstance(out, tuple | list) and out:  # (mean, std) metrics: keep the first value
            return _numeric(out[0])
        return _numeric(out)

    point = flatten(call(real, fake)) if estimate else None
    reps = []
    for done, (ir, jf) in enumerate(_draws(n_real, n_fake, n_boot, seed, resample)):
        jobs.tick(done, n_boot, "bootstrap resamples")  # progress, and where a cancelled job stops
        reps.append(flatten(call(_take(real, ir), None if jf is None else _take(fake, jf))))

    if isinstance(reps[0], dict):
        keys = [k for k in reps[0] if any(r.get(k) is not None for r in reps)]  # type: ignore[union-attr]
        out = {}
        for k in keys:
            vals = np.array([np.nan if r.get(k) is None else r[k] for r in reps], dtype=np.float64)  # type: ignore[union-attr]
            est = point.get(k) if isinstance(point, dict) else None
            out[k] = _summary(vals, n_boot, alpha, est)
        return out
    vals = np.array([np.nan if v is None else v for v in reps], dtype=np.float64)
    return _summary(vals, n_boot, alpha, point if not isinstance(point, dict) else None)


def _weighted_factor(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and a factor ``A`` with ``A^T A`` = covariance of the resample given by counts ``w``."""
    n = w.sum()
    mu = w @ x / n
    a = np.sqrt(w)[:, None] * (x - mu) / math.sqrt(n - 1)
    return mu, a[w > 0]


def _fid_from_factors(mu1: np.ndarray, a1: np.ndarray, mu2: np.ndarray, a2: np.ndarray) -> float:
    """FID with ``S1 = A1^T A1``, ``S2 = A2^T A2``: ``tr sqrt(S1 S2)`` is the nuclear norm of
    ``A1 A2^T`` (its squared singular values are the non-zero eigenvalues of ``S1 S2``)."""
    diff = mu1 - mu2
    nuc = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2.0 * nuc)


def bootstrap_fid(real: ArrayLike, fake: ArrayLike, *, n_boot: int = 200, alpha: float = 0.05,
                  seed: int | None = 0, resample: str = "both") -> dict[str, Any]:
    """Bootstrap of FID drawing the same resamples as ``bootstrap_ci(fid, ...)``, faster.

    Resamples become integer weights (no copies). When the sets are smaller than the feature size
    the Fréchet trace term is the nuclear norm of an ``n_real x n_fake`` matrix instead of two
    ``D x D`` eigendecompositions; otherwise the fixed side's statistics are computed once.
    """
    r = as_features(real, "real features").astype(np.float64, copy=False)
    f = as_features(fake, "synthetic features").astype(np.float64, copy=False)
    if r.shape[1] != f.shape[1]:
        raise InputError(f"Feature sizes differ: real {r.shape[1]}, synthetic {f.shape[1]}.")
    if r.shape[0] < 2 or f.shape[0] < 2:
        raise InputError("FID bootstrap needs at least 2 samples on each side.")
    if not 0 < alpha < 1:
        raise InputError(f"alpha must be between 0 and 1, got {alpha}.")
    d = r.shape[1]
    small = max(r.shape[0], f.shape[0]) < d

    def stats(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu, a = _weighted_factor(x, w)
        return (mu, a) if small else (mu, a.T @ a)

    fixed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if resample == "fake":
        fixed["real"] = stats(r, np.ones(r.shape[0]))
    if resample == "real":
        fixed["fake"] = stats(f, np.ones(f.shape[0]))
    dist = _fid_from_factors if small else frechet_distance

    values = []
    for done, (ir, jf) in enumerate(_draws(r.shape[0], f.shape[0], n_boot, seed, resample)):
        jobs.tick(done, n_boot, "bootstrap resamples (FID)")
        sr = fixed.get("real") or stats(r, np.bincount(ir, minlength=r.shape[0]).astype(np.float64))
        sf = fixed.get("fake") or stats(f, np.bincount(jf, minlength=f.shape[0]).astype(np.float64))
        values.append(dist(sr[0], sr[1], sf[0], sf[1]))
    ones_r, ones_f = np.ones(r.shape[0]), np.ones(f.shape[0])
    point = dist(*stats(r, ones_r), *stats(f, ones_f))
    return _summary(np.asarray(values), n_boot, alpha, point)


__all__ = ["bootstrap_ci", "bootstrap_fid"]
