"""Fidelity metrics as pure functions of feature matrices, plus thin stateful wrappers.

Every metric here takes features (``[N, D]`` numpy arrays or torch tensors), never images or
encoders, so the same code serves Inception, RadDino or any other encoder. The math lives in
module-level functions that tests compare with the reference libraries:

- FID: exact Fréchet distance in float64; agrees with torchmetrics ``FrechetInceptionDistance``
  but computes ``tr sqrt(S1 S2)`` through symmetric eigendecompositions (stable when N < D).
- KID: torchmetrics ``KernelInceptionDistance`` (polynomial kernel, unbiased MMD, population std),
  with the same ``torch.randperm`` subset draws for the same seed, kernel sums in bounded memory.
- Inception Score: torchmetrics ``InceptionScore`` from logits, same shuffle for the same seed.
- Precision / Recall / Density / Coverage: the ``prdc`` package 0.2 definitions (Naeem et al.
  2020) computed in row blocks, so 50,000 x 50,000 sets never build an N x M matrix.

The classes (:class:`FID`, :class:`KID`, :class:`PRDC`, :class:`InceptionScore`) declare their
states once and offer ``update`` / ``compute`` / ``reset`` like torchmetrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .. import jobs
from ..errors import InputError
from .registry import Output, compute, register

ArrayLike = np.ndarray | torch.Tensor
Subsets = Sequence[tuple[Any, Any]]

# Elements per temporary block (float64: 8 bytes each, a few blocks alive at once -> ~0.3 GB peak).
_BLOCK_ELEMENTS = 1 << 23


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def as_features(x: ArrayLike | Sequence[Sequence[float]], name: str = "features") -> np.ndarray:
    """A 2-D finite float array ``[N, D]`` (float32 kept as float32, everything else float64)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        arr = x.numpy() if x.dtype in (torch.float32, torch.float64) else x.double().numpy()
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name}: could not read as a numeric array ({exc}).") from exc
    if arr.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise InputError(f"{name}: expected numbers, got dtype {arr.dtype}.")
        arr = arr.astype(np.float64)
    if arr.ndim == 1:
        raise InputError(f"{name}: expected a 2-D matrix [N, D], got a 1-D array of length {arr.shape[0]}; "
                         "reshape to [N, 1] for scalar features.")
    if arr.ndim != 2:
        raise InputError(f"{name}: expected a 2-D matrix [N, D], got shape {tuple(arr.shape)}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name}: empty feature matrix of shape {tuple(arr.shape)}.")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError(f"{name}: {bad} row(s) contain NaN or inf; drop or recompute those features.")
    return arr


def _pair(real: ArrayLike, fake: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    r = as_features(real, "real features")
    f = as_features(fake, "synthetic features")
    if r.shape[1] != f.shape[1]:
        raise InputError(f"Feature sizes differ: real features have {r.shape[1]} dimensions, synthetic "
                         f"features {f.shape[1]}; extract both with the same encoder.")
    return r, f


def _need(n: int, at_least: int, what: str) -> None:
    if n < at_least:
        raise InputError(f"{what}: needs at least {at_least} samples, got {n}.")


def _device(device: str | torch.device | None) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def _rows_per_block(cols: int) -> int:
    return max(1, _BLOCK_ELEMENTS // max(1, cols))


# --------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------


def feature_stats(x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``N - 1``, as torchmetrics) in float64."""
    arr = as_features(x).astype(np.float64, copy=False)
    _need(arr.shape[0], 2, "feature statistics")
    mu = arr.mean(axis=0)
    centred = arr - mu
    sigma = centred.T @ centred / (arr.shape[0] - 1)
    return mu, sigma


def _sqrtm_psd(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; round-off negative eigenvalues are clipped to 0."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(S1 S2)`` = ``sum sqrt(eig(S1^1/2 S2 S1^1/2))`` for PSD S1, S2.

    ``S1 S2`` is similar to the symmetric PSD matrix ``S1^1/2 S2 S1^1/2``, so their eigenvalues
    agree; the symmetric form keeps them real and non-negative even when both are singular (N < D),
    where torchmetrics' general ``eigvals`` meets tiny complex pairs.
    """
    r = _sqrtm_psd(sigma1)
    m = r @ sigma2 @ r
    ev = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def _f64(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """``||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr sqrt(S1 S2)`` in float64."""
    m1, m2 = _f64(mu1).reshape(-1), _f64(mu2).reshape(-1)
    s1, s2 = _f64(sigma1), _f64(sigma2)
    d = m1.shape[0]
    if m2.shape[0] != d or s1.shape != (d, d) or s2.shape != (d, d):
        raise InputError(f"Fréchet distance: shapes do not match (mu1 {m1.shape}, sigma1 {s1.shape}, "
                         f"mu2 {m2.shape}, sigma2 {s2.shape}); use statistics of the same encoder.")
    for name, a in (("mu1", m1), ("sigma1", s1), ("mu2", m2), ("sigma2", s2)):
        if not np.isfinite(a).all():
            raise InputError(f"Fréchet distance: {name} contains NaN or inf.")
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt_product(s1, s2))


def fid(real: ArrayLike, fake: ArrayLike) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets."""
    r, f = _pair(real, fake)
    return frechet_distance(*feature_stats(r), *feature_stats(f))


# --------------------------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------------------------


def kid_subsets(n_real: int, n_fake: int, *, subsets: int = 100, subset_size: int | None = None,
                seed: int | None = 0, generator: torch.Generator | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Subset indices drawn exactly as torchmetrics KID draws them.

    Per subset: ``randperm(n_real)[:m]`` then ``randperm(n_fake)[:m]``. With ``seed`` this equals
    torchmetrics after ``torch.manual_seed(seed)``; pass ``generator`` to continue another stream.
    """
    m = min(n_real, n_fake) if subset_size is None else int(subset_size)
    if subsets < 1:
        raise InputError(f"KID: subsets must be >= 1, got {subsets}.")
    if m < 2:
        raise InputError(f"KID: subset size must be >= 2, got {m}.")
    if m > n_real or m > n_fake:
        raise InputError(f"KID: subset size {m} is larger than the sets (real {n_real}, synthetic "
                         f"{n_fake}); use a subset size <= {min(n_real, n_fake)}.")
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(0 if seed is None else int(seed))
    draws = []
    for _ in range(subsets):
        ir = torch.randperm(n_real, generator=generator)[:m]
        jf = torch.randperm(n_fake, generator=generator)[:m]
        draws.append((ir, jf))
    return draws


def _poly_row_sums(a: torch.Tensor, b: torch.Tensor, *, degree: int, gamma: float, coef: float) -> torch.Tensor:
    """Row sums of ``(gamma a b^T + coef)^degree`` computed in row blocks (no full kernel matrix)."""
    out = torch.empty(a.shape[0], dtype=a.dtype, device=a.device)
    step = _rows_per_block(b.shape[0])
    for s in range(0, a.shape[0], step):
        out[s:s + step] = ((a[s:s + step] @ b.T) * gamma + coef).pow(degree).sum(dim=1)
    return out


def _poly_diag(a: torch.Tensor, *, degree: int, gamma: float, coef: float) -> torch.Tensor:
    return ((a * a).sum(dim=1) * gamma + coef).pow(degree)


def _self_offdiag_sum(a: torch.Tensor, **kw: Any) -> torch.Tensor:
    return (_poly_row_sums(a, a, **kw) - _poly_diag(a, **kw)).sum()


def _is_full(idx: torch.Tensor, n: int) -> bool:
    """True for a permutation of every row: sums over it do not depend on the order."""
    return idx.numel() == n and bool((torch.bincount(idx, minlength=n) == 1).all())


def kid_from_subsets(real: ArrayLike, fake: ArrayLike, subsets: Subsets, *, degree: int = 3,
                     gamma: float | None = None, coef: float = 1.0,
                     device: str | torch.device | None = None) -> tuple[float, float]:
    """KID mean and population std over the given ``(idx_real, idx_fake)`` subsets, in float64.

    Per subset the unbiased MMD^2 of torchmetrics:
    ``(sum_{i!=j} k(x_i,x_j) + sum_{i!=j} k(y_i,y_j)) / (m(m-1)) - 2 sum k(x_i,y_j) / m^2``.
    A side whose subset is the whole set contributes the same sums every time; those are computed
    once (with ``subset_size = min(n_real, n_fake)`` and equal sizes, one MMD serves all subsets).
    """
    r, f = _pair(real, fake)
    if not subsets:
        raise InputError("KID: no subsets given.")
    dev = _device(device)
    xr = torch.from_numpy(r).to(dev, torch.float64)
    xf = torch.from_numpy(f).to(dev, torch.float64)
    kw = {"degree": int(degree), "gamma": (1.0 / r.shape[1]) if gamma is None else float(gamma),
          "coef": float(coef)}
    cache: dict[str, Any] = {}

    def full_self(name: str, x: torch.Tensor) -> torch.Tensor:
        if name not in cache:
            cache[name] = _self_offdiag_sum(x, **kw)
        return cache[name]

    values = []
    for done, (idx_r, idx_f) in enumerate(subsets):
        jobs.tick(done, len(subsets), "KID subsets")
        ir = torch.as_tensor(idx_r, dtype=torch.long).reshape(-1)
        jf = torch.as_tensor(idx_f, dtype=torch.long).reshape(-1)
        mx, my = ir.numel(), jf.numel()
        for idx, n, side in ((ir, r.shape[0], "real"), (jf, f.shape[0], "synthetic")):
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise InputError(f"KID subset: {side} indices must lie in [0, {n}); got "
                                 f"{int(idx.min())}..{int(idx.max())}.")
        _need(mx, 2, "KID subset (real)")
        _need(my, 2, "KID subset (synthetic)")
        full_r, full_f = _is_full(ir, r.shape[0]), _is_full(jf, f.shape[0])
        sub_r = xr if full_r else xr[ir.to(dev)]
        sub_f = xf if full_f else xf[jf.to(dev)]
        sxx = full_self("xx", xr) if full_r else _self_offdiag_sum(sub_r, **kw)
        syy = full_self("yy", xf) if full_f else _self_offdiag_sum(sub_f, **kw)
        if full_r and full_f:
            if "xy" not in cache:
                cache["xy"] = _poly_row_sums(xr, xf, **kw).sum()
            sxy = cache["xy"]
        elif full_f:
            if "xy_rows" not in cache:
                cache["xy_rows"] = _poly_row_sums(xr, xf, **kw)
            sxy = cache["xy_rows"][ir.to(dev)].sum()
        elif full_r:
            if "xy_cols" not in cache:
                cache["xy_cols"] = _poly_row_sums(xf, xr, **kw)
            sxy = cache["xy_cols"][jf.to(dev)].sum()
        else:
            sxy = _poly_row_sums(sub_r, sub_f, **kw).sum()
        if mx == my:  # torchmetrics' exact expression
            v = (sxx + syy) / (mx * (mx - 1)) - 2 * sxy / (mx**2)
        else:
            v = sxx / (mx * (mx - 1)) + syy / (my * (my - 1)) - 2 * sxy / (mx * my)
        values.append(float(v))
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=0))


def kid(real: ArrayLike, fake: ArrayLike, *, subsets: int = 100, subset_size: int | None = None,
        degree: int = 3, gamma: float | None = None, coef: float = 1.0, seed: int | None = 0,
        generator: torch.Generator | None = None,
        device: str | torch.device | None = None) -> tuple[float, float]:
    """Kernel Inception Distance (mean, population std) as torchmetrics computes it.

    ``subset_size`` defaults to ``min(n_real, n_fake)`` (CheXGenBench's setting, so the std is
    about 0). Same seed -> same subsets as torchmetrics after ``torch.manual_seed(seed)``.
    """
    r, f = _pair(real, fake)
    draws = kid_subsets(r.shape[0], f.shape[0], subsets=subsets, subset_size=subset_size, seed=seed,
                        generator=generator)
    return kid_from_subsets(r, f, draws, degree=degree, gamma=gamma, coef=coef, device=device)


# --------------------------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------------------------


def inception_score(logits: ArrayLike, splits: int = 10, *, seed: int | None = 0, shuffle: bool = True,
                    generator: torch.Generator | None = None) -> tuple[float, float]:
    """Inception Score (mean, unbiased std over splits) from classifier logits, in float64.

    As torchmetrics: shuffle with ``torch.randperm`` (same seed -> same order as torchmetrics after
    ``torch.manual_seed(seed)``), softmax, ``torch.chunk`` into ``splits`` groups, and per group
    ``exp(mean_i KL(p_i || mean p))``. With one split the std is NaN, as in torch.
    """
    x = torch.from_numpy(as_features(logits, "logits").astype(np.float64, copy=False))
    if splits < 1 or splits > x.shape[0]:
        raise InputError(f"Inception Score: splits must be between 1 and the number of images "
                         f"({x.shape[0]}), got {splits}.")
    if shuffle:
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(0 if seed is None else int(seed))
        x = x[torch.randperm(x.shape[0], generator=generator)]
    prob = x.softmax(dim=1)
    log_prob = x.log_softmax(dim=1)
    scores = []
    for p, lp in zip(prob.chunk(splits, dim=0), log_prob.chunk(splits, dim=0)):
        mean_p = p.mean(dim=0, keepdim=True)
        scores.append((p * (lp - mean_p.log())).sum(dim=1).mean().exp())
    kl = torch.stack(scores)
    return float(kl.mean()), float(kl.std())


# --------------------------------------------------------------------------------------------
# Precision / Recall / Density / Coverage
# --------------------------------------------------------------------------------------------


def _distance_block(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor,
                    out_dtype: torch.dtype) -> torch.Tensor:
    """Euclidean distances as scikit-learn computes them: ``max(|a|^2 - 2 a.b + |b|^2, 0)`` in
    float64, rounded to the input precision (float32 for float32 features), then the square root."""
    d2 = torch.addmm(a_sq[:, None], a, b.T, alpha=-2)  # (-2 a.b + |a|^2) + |b|^2, sklearn's order
    d2.add_(b_sq[None, :]).clamp_(min=0)
    return d2.to(out_dtype).sqrt_()


def _kth_radii(x: torch.Tensor, x_sq: torch.Tensor, k: int, out_dtype: torch.dtype,
               rows: int | None) -> torch.Tensor:
    """Distance from each row to its k-th neighbour, the row itself counted as the 0th (prdc)."""
    n = x.shape[0]
    out = torch.empty(n, dtype=out_dtype, device=x.device)
    step = rows or _rows_per_block(n)
    for s in range(0, n, step):
        jobs.check()
        d = _distance_block(x[s:s + step], x_sq[s:s + step], x, x_sq, out_dtype)
        # topk (sorted) is several times faster than kthvalue on CPU; its last value is the same
        out[s:s + step] = torch.topk(d, k + 1, dim=1, largest=False).values[:, -1]
    return out


def prdc(real: ArrayLike, fake: ArrayLike, k: int = 5, *, chunk_size: int | None = None,
         device: str | torch.device | None = None) -> dict[str, float]:
    """Precision, recall, density and coverage (Naeem et al. 2020), as ``prdc.compute_prdc`` 0.2.

    Definitions copied from prdc: the radius of a point is the distance to its k-th nearest
    neighbour in its own set counting itself (the (k+1)-th smallest distance); every comparison is
    strict ``<``. Distances follow scikit-learn's formula in float64 and are rounded to float32
    when the features are float32, as prdc's are. Memory is bounded: distances are computed in
    blocks of ``chunk_size`` rows (default: ~8M entries per block), never as an N x M matrix.
    """
    r, f = _pair(real, fake)
    k = int(k)
    if k < 1:
        raise InputError(f"PRDC: k must be >= 1, got {k}.")
    _need(r.shape[0], k + 1, f"PRDC with k={k} (real set)")
    _need(f.shape[0], k + 1, f"PRDC with k={k} (synthetic set)")
    out_dtype = torch.float32 if (r.dtype == np.float32 and f.dtype == np.float32) else torch.float64
    dev = _device(device)
    xr = torch.from_numpy(r).to(dev, torch.float64)
    xf = torch.from_numpy(f).to(dev, torch.float64)
    r_sq, f_sq = (xr * xr).sum(1), (xf * xf).sum(1)

    radii_r = _kth_radii(xr, r_sq, k, out_dtype, chunk_size)
    radii_f = _kth_radii(xf, f_sq, k, out_dtype, chunk_size)

    n_real, n_fake = xr.shape[0], xf.shape[0]
    fake_counts = torch.zeros(n_fake, dtype=torch.long, device=dev)  # reals whose ball holds fake j
    recall_hits = 0
    coverage_hits = 0
    step = chunk_size or _rows_per_block(n_fake)
    for s in range(0, n_real, step):
        jobs.check()
        d = _distance_block(xr[s:s + step], r_sq[s:s + step], xf, f_sq, out_dtype)
        rad = radii_r[s:s + step, None]
        fake_counts += (d < rad).sum(dim=0)
        recall_hits += int((d < radii_f[None, :]).any(dim=1).sum())
        coverage_hits += int((d.min(dim=1).values < radii_r[s:s + step]).sum())
    return {
        "precision": float((fake_counts > 0).double().mean()),
        "recall": recall_hits / n_real,
        "density": float(fake_counts.double().sum()) / (k * n_fake),
        "coverage": coverage_hits / n_real,
    }


# --------------------------------------------------------------------------------------------
# All fidelity numbers at once
# --------------------------------------------------------------------------------------------


def _fid_few_samples(r: np.ndarray, f: np.ndarray) -> float:
    """FID when both sets have fewer samples than dimensions: with ``S = A^T A`` (``A`` the centred samples
    over ``sqrt(n - 1)``), ``tr sqrt(S1 S2)`` is the nuclear norm of the small ``A1 A2^T`` (its squared singular
    values are the non-zero eigenvalues of ``S1 S2``): O(n1 n2 D) instead of two D x D eigensolvers."""
    _need(r.shape[0], 2, "feature statistics")
    _need(f.shape[0], 2, "feature statistics")
    x, y = r.astype(np.float64), f.astype(np.float64)
    mx, my = x.mean(0), y.mean(0)
    a1 = (x - mx) / np.sqrt(x.shape[0] - 1)
    a2 = (y - my) / np.sqrt(y.shape[0] - 1)
    nuc = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    diff = mx - my
    return float(diff @ diff + (a1 * a1).sum() + (a2 * a2).sum() - 2.0 * nuc)


@register("FID", direction="lower", column="FID")
def fid_metric(real: np.ndarray, synthetic: np.ndarray, *,
               real_stats: tuple[ArrayLike, ArrayLike] | None = None) -> float:
    """FID; ``real_stats=(mu, sigma)`` of ``real`` (cached with a reference index) skips the real Gaussian. With
    fewer images than feature dimensions on both sides it is computed from the samples (:func:`_fid_few_samples`)."""
    r, f = _pair(real, synthetic)
    if max(r.shape[0], f.shape[0]) < r.shape[1]:
        # fewer images than dimensions: exact from the samples, no D x D eigensolver (seconds at D = 1024, where
        # a cancelled job could not stop); ``real_stats`` are the statistics of ``real`` and add nothing here
        return _fid_few_samples(r, f)
    mu_r, s_r = feature_stats(r) if real_stats is None else real_stats
    return frechet_distance(mu_r, s_r, *feature_stats(f))


@register("KID", outputs=(Output("KID", direction="lower", column="KID"),
                          Output("KID_std", display="KID std", direction="none", shown=False)))
def kid_metric(real: np.ndarray, synthetic: np.ndarray, *, kid_subsets: int = 100,
               kid_subset_size: int | None = None, seed: int = 0,
               device: str | torch.device | None = None) -> dict[str, float]:
    mean, std = kid(real, synthetic, subsets=kid_subsets, subset_size=kid_subset_size, seed=seed, device=device)
    return {"KID": mean, "KID_std": std}


@register("PRDC", outputs=tuple(Output(name, direction="higher", column_per_encoder=False)
                                for name in ("Precision", "Recall", "Density", "Coverage")))
def prdc_metric(real: np.ndarray, synthetic: np.ndarray, *, k: int = 5,
                device: str | torch.device | None = None) -> dict[str, float]:
    pr = prdc(real, synthetic, k=k, device=device)
    return {"Precision": pr["precision"], "Recall": pr["recall"], "Density": pr["density"],
            "Coverage": pr["coverage"]}


@register("Inception Score", inputs=("synthetic_logits",), encoders=("inception",), per_pathology=False,
          outputs=(Output("mean", display="Inception Score", direction="higher", column="Inception Score"),
                   Output("std", display="Inception Score std", direction="none", shown=False, ci=False)))
def inception_score_metric(synthetic_logits: np.ndarray, *, seed: int = 0) -> dict[str, float | int]:
    """Inception Score over min(10, n) splits (fewer images than splits would leave empty splits)."""
    splits = min(10, len(synthetic_logits))
    mean, std = inception_score(synthetic_logits, splits=splits, seed=seed)
    return {"mean": mean, "std": std, "splits": splits, "n": len(synthetic_logits)}


def fidelity_metrics(real: ArrayLike, fake: ArrayLike, *, k: int = 5, kid_subsets: int = 100,
                     kid_subset_size: int | None = None, seed: int = 0,
                     real_stats: tuple[ArrayLike, ArrayLike] | None = None,
                     device: str | torch.device | None = None, encoder: str | None = None,
                     include: Sequence[str] = (), pathology: bool = False,
                     ci_only: bool = False) -> dict[str, float | int]:
    """Every registered fidelity metric of two feature matrices (FID, KID, Precision, Recall, Density, Coverage
    and any metric added to :mod:`.registry`), and the set sizes.

    ``encoder``: the features' encoder (selects the metrics that apply to it: FRD on ``radiomics`` only, nothing
    else there); ``include``: opt-in metrics to compute; ``pathology``: a per-pathology row (metrics registered
    ``per_pathology=False`` are left out); ``ci_only``: only metrics with bootstrap intervals (a replicate)."""
    from .registry import claimed_encoders

    if encoder is not None and encoder in claimed_encoders():  # raw features (radiomics: NaN allowed, FRD drops)
        r, f = np.asarray(real), np.asarray(fake)
    else:
        r, f = _pair(real, fake)
    out = compute(r, f, k=k, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, seed=seed,
                  real_stats=real_stats, device=device, encoder=encoder, include=include, pathology=pathology,
                  ci_only=ci_only)
    out.update({"n_real": int(r.shape[0]), "n_synthetic": int(f.shape[0])})
    return out


# --------------------------------------------------------------------------------------------
# Stateful wrappers
# --------------------------------------------------------------------------------------------


class StatefulMetric:
    """update / compute / reset with states declared once (torchmetrics' pattern, without DDP)."""

    def __init__(self) -> None:
        self._defaults: dict[str, Callable[[], Any]] = {}

    def add_state(self, name: str, default: Callable[[], Any]) -> None:
        self._defaults[name] = default
        setattr(self, name, default())

    def reset(self) -> None:
        for name, default in self._defaults.items():
            setattr(self, name, default())


def _batch(x: ArrayLike, name: str) -> np.ndarray:
    arr = as_features(x if not (isinstance(x, np.ndarray | torch.Tensor) and x.ndim == 1) else x[None, :], name)
    return arr


class FID(StatefulMetric):
    """Streaming FID from float64 running statistics; batch order and size do not matter.

    Per side: ``n``, the feature sum and the centred scatter matrix ``sum (x - mean)(x - mean)^T``,
    merged batch by batch with Chan et al.'s update. (Raw second moments minus ``n mu mu^T``, as
    torchmetrics keeps them, cancel catastrophically when the mean is large next to the spread.)
    """

    def __init__(self, num_features: int, *, reset_real_features: bool = True) -> None:
        super().__init__()
        self.num_features = int(num_features)
        self.reset_real_features = reset_real_features
        d = self.num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_n", lambda: 0)
            self.add_state(f"{side}_sum", lambda: np.zeros(d, dtype=np.float64))
            self.add_state(f"{side}_scatter", lambda: np.zeros((d, d), dtype=np.float64))

    def update(self, features: ArrayLike, real: bool) -> None:
        x = _batch(features, "real features" if real else "synthetic features").astype(np.float64, copy=False)
        if x.shape[1] != self.num_features:
            raise InputError(f"FID: expected {self.num_features}-d features, got {x.shape[1]}.")
        side = "real" if real else "fake"
        n_old, s_old, m2_old = getattr(self, f"{side}_n"), getattr(self, f"{side}_sum"), getattr(self, f"{side}_scatter")
        nb = x.shape[0]
        mean_b = x.mean(axis=0)
        c = x - mean_b
        m2 = m2_old + c.T @ c
        if n_old > 0:
            delta = mean_b - s_old / n_old
            m2 += np.outer(delta, delta) * (n_old * nb / (n_old + nb))
        setattr(self, f"{side}_n", n_old + nb)
        setattr(self, f"{side}_sum", s_old + x.sum(axis=0))
        setattr(self, f"{side}_scatter", m2)

    def stats(self, real: bool) -> tuple[np.ndarray, np.ndarray]:
        side = "real" if real else "fake"
        n = getattr(self, f"{side}_n")
        _need(n, 2, f"FID ({'real' if real else 'synthetic'} set)")
        return getattr(self, f"{side}_sum") / n, getattr(self, f"{side}_scatter") / (n - 1)

    def compute(self) -> float:
        return frechet_distance(*self.stats(True), *self.stats(False))

    def reset(self) -> None:
        keep = None if self.reset_real_features else (self.real_n, self.real_sum, self.real_scatter)
        super().reset()
        if keep is not None:
            self.real_n, self.real_sum, self.real_scatter = keep


class _FeatureStore(StatefulMetric):
    """Keeps real and synthetic feature batches for metrics that need every sample."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("real_features", list)
        self.add_state("fake_features", list)

    def update(self, features: ArrayLike, real: bool) -> None:
        x = _batch(features, "real features" if real else "synthetic features")
        (self.real_features if real else self.fake_features).append(x)

    def _cat(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.real_features or not self.fake_features:
            raise InputError("No features yet: call update(..., real=True) and update(..., real=False) first.")
        return np.concatenate(self.real_features), np.concatenate(self.fake_features)


class KID(_FeatureStore):
    """Streaming wrapper around :func:`kid` (stores features)."""

    def __init__(self, *, subsets: int = 100, subset_size: int | None = None, degree: int = 3,
                 gamma: float | None = None, coef: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.kwargs = {"subsets": subsets, "subset_size": subset_size, "degree": degree, "gamma": gamma,
                       "coef": coef, "seed": seed}

    def compute(self) -> tuple[float, float]:
        return kid(*self._cat(), **self.kwargs)


class PRDC(_FeatureStore):
    """Streaming wrapper around :func:`prdc` (stores features)."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.k = k

    def compute(self) -> dict[str, float]:
        return prdc(*self._cat(), k=self.k)


class InceptionScore(StatefulMetric):
    """Streaming wrapper around :func:`inception_score` (stores logits)."""

    def __init__(self, splits: int = 10, *, seed: int = 0, shuffle: bool = True) -> None:
        super().__init__()
        self.splits, self.seed, self.shuffle = splits, seed, shuffle
        self.add_state("logits", list)

    def update(self, logits: ArrayLike) -> None:
        self.logits.append(_batch(logits, "logits"))

    def compute(self) -> tuple[float, float]:
        if not self.logits:
            raise InputError("Inception Score: no logits yet; call update(logits) first.")
        return inception_score(np.concatenate(self.logits), self.splits, seed=self.seed, shuffle=self.shuffle)


__all__ = [
    "FID",
    "KID",
    "PRDC",
    "InceptionScore",
    "StatefulMetric",
    "as_features",
    "feature_stats",
    "fid",
    "fidelity_metrics",
    "frechet_distance",
    "inception_score",
    "kid",
    "kid_from_subsets",
    "kid_subsets",
    "prdc",
    "trace_sqrt_product",
]
