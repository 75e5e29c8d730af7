"""Diversity: the Vendi score of a feature set and intra-prompt MS-SSIM over several seeds of one prompt.

- **Vendi score** (Friedman and Dieng, "The Vendi Score: A Diversity Evaluation Metric for Machine
  Learning", TMLR 2023): ``exp`` of the order-``q`` entropy of the eigenvalues of ``K / n``, with the
  cosine kernel ``K = X X^T`` on L2-normalised rows; between 1 (all samples alike) and ``n`` (all
  orthogonal); "the effective number of distinct samples". Equal to the ``vendi-score`` package
  (``vendi.score_dual`` / ``score_X``, 0.0.3) on the same features. The eigenvalues are taken from the
  smaller of ``X X^T / n`` and ``X^T X / n`` (same non-zero spectrum), so the exact score costs
  O(n D^2) and no subsample is needed; ``max_samples`` draws a seeded subsample anyway when asked (and
  the result says so), e.g. to match a published setting.
- **Intra-prompt MS-SSIM** (RoentGen, Chambon et al. 2022): the mean MS-SSIM over all pairs of images
  generated from one prompt with different seeds; *higher means less diverse* (1 = identical images).
  MS-SSIM is torchmetrics' ``multiscale_structural_similarity_index_measure`` (Gaussian 11 x 11, sigma 1.5,
  data range 1). Its 5 scales need images of at least 176 px; smaller images use the most scales that
  fit (64 px: 3, 128 px: 4), with the first betas renormalised to sum 1; the result names the scales.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .fidelity import ArrayLike, as_features
from .registry import Output, register

MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, torchmetrics' default
MS_SSIM_KERNEL = 11
VENDI_MAX_SAMPLES = 10_000  # the suite's Vendi scores a seeded subsample of this many images (n_vendi says so)


# --------------------------------------------------------------------------------------------
# Vendi
# --------------------------------------------------------------------------------------------


def _entropy_q(p: np.ndarray, q: float | str) -> float:
    p = p[p > 0]
    if q == 1:
        return float(-(p * np.log(p)).sum())
    if q == "inf":
        return float(-np.log(p.max()))
    return float(np.log((p ** float(q)).sum()) / (1 - float(q)))


def vendi_score(features: ArrayLike, *, q: float | str = 1, max_samples: int | None = None,
                seed: int = 0) -> dict[str, Any]:
    """Vendi score with the cosine kernel (``vendi-score``'s ``score_dual``), exact for any ``n``.

    ``q``: entropy order (1 = Shannon, the paper's default; ``"inf"`` allowed). ``max_samples``: score a
    seeded random subsample of that many rows instead (``n_used`` says how many were scored).
    Returns ``Vendi``, ``n``, ``n_used``, ``q``, ``subsampled``.
    """
    x = as_features(features, "features").astype(np.float64, copy=False)
    n = x.shape[0]
    if q != "inf" and (not isinstance(q, int | float) or q < 0):
        raise InputError(f"Vendi: q must be a number >= 0 or 'inf', got {q!r}.")
    subsampled = max_samples is not None and n > int(max_samples)
    if subsampled:
        if int(max_samples) < 1:
            raise InputError(f"Vendi: max_samples must be >= 1, got {max_samples}.")
        x = x[np.sort(np.random.default_rng(int(seed)).choice(n, int(max_samples), replace=False))]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms == 0, 1.0, norms)  # as sklearn.preprocessing.normalize: zero rows stay zero
    m = x.shape[0]
    xt = torch.from_numpy(np.ascontiguousarray(x))  # torch's BLAS, as KID's: no second thread pool spinning beside it
    gram = (xt @ xt.T) if m <= x.shape[1] else (xt.T @ xt)
    w = torch.linalg.eigvalsh(gram / m).numpy()
    return {"Vendi": float(np.exp(_entropy_q(w, q))), "n": int(n), "n_used": int(m), "q": q,
            "subsampled": bool(subsampled)}


def vendi_per_label(features: ArrayLike, labels: ArrayLike, names: Sequence[str], **kwargs: Any
                    ) -> list[dict[str, Any]]:
    """Vendi score of the samples positive (label 1) for each column of ``labels`` (e.g. pathology).

    ``labels``: ``[N, L]`` with 1 / 0 / -1 / NaN; a column with fewer than 2 positives gets ``Vendi`` None.
    """
    x = as_features(features, "features")
    lab = np.asarray(labels, dtype=np.float64)
    if lab.ndim != 2 or lab.shape[0] != x.shape[0] or lab.shape[1] != len(names):
        raise InputError(f"Vendi per label: labels must be [{x.shape[0]}, {len(names)}], got {lab.shape}.")
    out = []
    for j, name in enumerate(names):
        rows = np.flatnonzero(lab[:, j] == 1)
        res = vendi_score(x[rows], **kwargs) if rows.size >= 2 else {"Vendi": None, "n": int(rows.size)}
        out.append({"label": name, **res})
    return out


# --------------------------------------------------------------------------------------------
# Intra-prompt MS-SSIM
# --------------------------------------------------------------------------------------------


def ms_ssim_scales(height: int, width: int, kernel_size: int = MS_SSIM_KERNEL) -> int:
    """The most MS-SSIM scales (<= 5) torchmetrics accepts for this image size."""
    for s in range(len(MS_SSIM_BETAS), 0, -1):
        div = max(1, s - 1) ** 2
        if min(height, width) >= 2 ** s and height // div > kernel_size - 1 and width // div > kernel_size - 1:
            return s
    raise InputError(f"MS-SSIM: images of {height} x {width} px are too small for a {kernel_size} px kernel; "
                     f"use images of at least {kernel_size + 1} px.")


def _as_image(img: Any, where: str) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[-1] in (1, 3, 4):
        a = a[..., :3].mean(axis=-1) if a.shape[-1] >= 3 else a[..., 0]
    if a.ndim != 2:
        raise InputError(f"MS-SSIM: {where} is not a grey image (shape {a.shape}).")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    a = a.astype(np.float32)
    if a.size and (a.min() < 0 or a.max() > 1):
        raise InputError(f"MS-SSIM: {where} has values outside [0, 1] ({a.min():.3g}..{a.max():.3g}); "
                         "pass uint8 images or floats scaled to [0, 1].")
    return a


def intra_prompt_ms_ssim(groups: Mapping[str, Sequence[Any]] | Sequence[Sequence[Any]], *,
                         scales: int | None = None) -> dict[str, Any]:
    """Mean pairwise MS-SSIM among the images of each prompt (several seeds), and their mean.

    ``groups``: prompt -> images (or a list of image lists), each image ``H x W`` (uint8, or floats in
    [0, 1]), all of one size. Returns ``MS_SSIM`` (mean over prompts of the per-prompt mean over all
    pairs), ``per_prompt`` (prompt, n_images, n_pairs, MS_SSIM), ``scales`` and ``betas`` used.
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    items = list(groups.items()) if isinstance(groups, Mapping) else [(i, g) for i, g in enumerate(groups)]
    if not items:
        raise InputError("MS-SSIM: no prompts given.")
    shape = None
    per_prompt = []
    used = None
    for key, imgs in items:
        arr = [_as_image(im, f"image {j} of prompt {key!r}") for j, im in enumerate(imgs)]
        if len(arr) < 2:
            raise InputError(f"MS-SSIM: prompt {key!r} has {len(arr)} image(s); generate at least 2 seeds per prompt.")
        for j, a in enumerate(arr):
            if shape is None:
                shape = a.shape
            elif a.shape != shape:
                raise InputError(f"MS-SSIM: image {j} of prompt {key!r} is {a.shape}, others {shape}; "
                                 "generate every image at one size.")
        if used is None:
            s = ms_ssim_scales(*shape) if scales is None else int(scales)
            betas = np.asarray(MS_SSIM_BETAS[:s], dtype=np.float64)
            used = tuple(float(b) for b in betas / betas.sum())
        i, j = np.triu_indices(len(arr), k=1)
        x = torch.from_numpy(np.stack(arr))[:, None]
        vals = ms_ssim(x[i], x[j], data_range=1.0, kernel_size=MS_SSIM_KERNEL, sigma=1.5, betas=used,
                       reduction="none")
        per_prompt.append({"prompt": key, "n_images": len(arr), "n_pairs": len(i),
                           "MS_SSIM": float(vals.double().mean())})
    return {"MS_SSIM": float(np.mean([p["MS_SSIM"] for p in per_prompt])), "per_prompt": per_prompt,
            "n_prompts": len(per_prompt), "scales": len(used), "betas": list(used)}


__all__ = ["intra_prompt_ms_ssim", "ms_ssim_scales", "vendi_per_label", "vendi_score"]


@register("Vendi", inputs=("synthetic",),
          outputs=(Output("Vendi", display="Vendi score", direction="higher", column="Vendi", ci=False),
                   Output("n_vendi", display="Vendi images scored", direction="none", shown=False, ci=False)))
def vendi_metric(synthetic: np.ndarray, *, seed: int = 0, vendi_max_samples: int | None = VENDI_MAX_SAMPLES
                 ) -> dict[str, Any]:
    """Vendi score (q = 1, cosine kernel) of the synthetic features; above ``vendi_max_samples`` images a seeded
    subsample of that many (``n_vendi``: images scored). No bootstrap interval: a resample's duplicates count as
    identical images and pull the score down, so its percentile interval would not describe the spread."""
    res = vendi_score(synthetic, max_samples=vendi_max_samples, seed=seed)
    return {"Vendi": res["Vendi"], "n_vendi": res["n_used"]}
