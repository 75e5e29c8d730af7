"""Fréchet Radiomic Distance (FRD v1) from raw radiomic feature matrices, as ``frd-score`` 1.0.1 computes it.

Konz, Osuala et al., "Fréchet Radiomic Distance (FRD): A Versatile Metric for Comparing Medical Imaging
Datasets" (Medical Image Analysis 2026). The features come from the ``radiomics`` encoder
(:mod:`evaluators.encoders.radiomics_features`), cached per image like any encoder's; this function
repeats frd-score's v1 steps on them:

1. drop images with any NaN feature (per set), cast to float32;
2. z-score both sets with the *reference* set's mean and population std (frd-score's ``norm_ref='d1'``,
   paper Eq. 3);
3. drop feature columns that became NaN or inf in either set (a constant reference feature);
4. Fréchet distance between the Gaussians (mean, unbiased covariance), then ``log`` of it: frd-score's
   default ``log(d_F^2)`` (``use_paper_log=False``), which is what it prints and what published FRD v1
   values use. ``FRD_raw`` is ``d_F^2`` before the log.

The Fréchet distance is :func:`evaluators.metrics.fidelity.frechet_distance` (float64, symmetric
square roots) where frd-score uses ``scipy.linalg.sqrtm``; they agree to ~1e-6 relative.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .fidelity import frechet_distance
from .registry import Output, register


def _raw(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InputError(f"FRD: {name} must be a non-empty [N, D] radiomic feature matrix, got shape {arr.shape}.")
    return arr


def frd(real: Any, synthetic: Any) -> dict[str, Any]:
    """FRD v1 of ``synthetic`` against the reference ``real`` (raw radiomic features, one row per image).

    Returns ``FRD`` (log d_F^2, frd-score's number), ``FRD_raw`` (d_F^2), ``n_real`` / ``n_synthetic``
    (images used), ``n_dropped_real`` / ``n_dropped_synthetic`` (images with NaN features) and
    ``n_features`` (columns used of ``n_features_extracted``).
    """
    r, s = _raw(real, "reference features"), _raw(synthetic, "synthetic features")
    if r.shape[1] != s.shape[1]:
        raise InputError(f"FRD: the sets have {r.shape[1]} and {s.shape[1]} radiomic features; extract both with "
                         "the same radiomics encoder settings.")
    keep_r, keep_s = ~np.isnan(r).any(axis=1), ~np.isnan(s).any(axis=1)
    r32, s32 = r[keep_r].astype(np.float32), s[keep_s].astype(np.float32)
    for name, a in (("reference", r32), ("synthetic", s32)):
        if a.shape[0] < 2:
            raise InputError(f"FRD: the {name} set has {a.shape[0]} image(s) with valid radiomic features; "
                             "it needs at least 2.")
    mean = np.nanmean(r32, axis=0)
    std = np.nanstd(r32, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        zr, zs = (r32 - mean) / std, (s32 - mean) / std
    cols = np.isfinite(zr).all(axis=0) & np.isfinite(zs).all(axis=0)
    if not cols.any():
        raise InputError("FRD: no radiomic feature varies across the reference set; give more (or more varied) "
                         "reference images.")
    zr, zs = zr[:, cols].astype(np.float64), zs[:, cols].astype(np.float64)
    d2 = frechet_distance(zr.mean(axis=0), np.cov(zr, rowvar=False), zs.mean(axis=0), np.cov(zs, rowvar=False))
    return {"FRD": float(np.log(d2)) if d2 > 0 else float("-inf"), "FRD_raw": float(d2),
            "n_real": int(zr.shape[0]), "n_synthetic": int(zs.shape[0]),
            "n_dropped_real": int((~keep_r).sum()), "n_dropped_synthetic": int((~keep_s).sum()),
            "n_features": int(cols.sum()), "n_features_extracted": int(r.shape[1])}


@register("FRD", encoders=("radiomics",), claims_encoder=True,
          outputs=(Output("FRD", display="FRD", direction="lower", column="FRD"),
                   Output("FRD_raw", display="FRD d_F^2", direction="lower", shown=False, ci=False)))
def frd_metric(real: Any, synthetic: Any) -> dict[str, Any]:
    """FRD on the ``radiomics`` encoder's features, which serve FRD only (the encoder is claimed: FID, KID, PRDC...
    on raw radiomic values would mean nothing). Its ``FID`` column is not FRD: FRD z-scores against the reference
    and takes the log."""
    res = frd(real, synthetic)
    return {"FRD": res["FRD"], "FRD_raw": res["FRD_raw"], "n_frd_features": res["n_features"],
            "n_frd_dropped_real": res["n_dropped_real"], "n_frd_dropped_synthetic": res["n_dropped_synthetic"]}


__all__ = ["frd", "frd_metric"]
