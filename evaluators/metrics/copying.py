"""Data-copying tests as pure functions of feature matrices: Meehan et al.'s C_T and Alaa et al.'s AuthPct.

- **C_T** (Meehan, Chaudhuri, Dasgupta, "A Non-Parametric Test to Detect Data-Copying in Generative
  Models", AISTATS 2020): k-means cells fitted on the *training* features; in each cell the distances of
  held-out test samples (P_n) and of synthetic samples (Q_m) to their nearest *training sample of that
  cell* are compared with a Mann-Whitney U test, Z-scored under H0; C_T is the average of the cell
  Z-scores weighted by the test-set share of each cell, over the cells holding more than ``tau`` of the
  synthetic samples (default: more than 20 samples, the authors' and dgm-eval's ``tau = 20 / m``).
  C_T << 0: synthetic samples sit closer to the training set than fresh real samples do (copying);
  C_T >> 0: they sit farther (underfitting); ~0 for a fresh sample of the training distribution.
  The per-cell arithmetic equals ``data_copying_tests.py`` of the authors (casey-meehan/data-copying), which
  dgm-eval's ``ct.py`` copies: ``u = mannwhitneyu(LQm, LPn).statistic``, ``Z = (u - (nm/2 - 0.5)) /
  sqrt(nm(n+m+1)/12)`` (their continuity term, no tie correction). Unlike theirs, a cell without test
  samples is reported with no score instead of raising (its weight is 0 anyway).
- **AuthPct** (Alaa, van Breugel, Saveliev, van der Schaar, "How Faithful is your Synthetic Data?",
  ICML 2022; dgm-eval's ``authpct.py``): a synthetic sample is *authentic* when the distance to its
  nearest training sample is larger than that training sample's distance to its own nearest other
  training sample; AuthPct = 100 x the authentic share. Ties count as inauthentic (dgm-eval's strict
  ``<``), so an exact copy of a duplicated training image is inauthentic too.

Memory is bounded: nearest neighbours are found in row blocks (torch matmuls of at most ~8M entries),
never as a full distance matrix, so 50,000 x 50,000 sets of 768-d features stay well under 4 GB
(see ``benchmarks/bench_copying.py``). Candidate neighbours are found in float32 and their distances
recomputed exactly in float64, so an exact copy has distance 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .fidelity import ArrayLike, as_features
from .registry import Output, register

_BLOCK_ELEMENTS = 1 << 23  # distance entries per block (float32: 32 MB)
MIN_SYNTHETIC_PER_CELL = 20  # Meehan et al. / dgm-eval: tau = 20 / m, cells need MORE than 20 samples


def _same_dim(named: dict[str, np.ndarray]) -> None:
    dims = {name: a.shape[1] for name, a in named.items()}
    if len(set(dims.values())) > 1:
        raise InputError("Feature sizes differ (" + ", ".join(f"{k}: {v}" for k, v in dims.items())
                         + "); extract every set with the same encoder.")


def nearest_neighbours(queries: ArrayLike, reference: ArrayLike, *, exclude_self: bool = False,
                       block_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance (float64) and index of each query's nearest reference row, in bounded memory.

    ``exclude_self=True`` (queries and reference are the same matrix) skips each row's own index, so
    row ``i`` gets its nearest *other* row (an exact duplicate elsewhere gives distance 0).
    Candidates are searched in float32 blocks of ``block_rows`` queries; the winner's distance is then
    recomputed exactly in float64.
    """
    q = as_features(queries, "query features")
    r = as_features(reference, "reference features")
    _same_dim({"queries": q, "reference": r})
    if exclude_self and (q.shape != r.shape):
        raise InputError("nearest_neighbours(exclude_self=True) needs the same matrix as queries and reference.")
    if exclude_self and r.shape[0] < 2:
        raise InputError("Nearest other neighbour: needs at least 2 samples.")
    # centre on the reference mean: smaller norms, less float32 cancellation in |a|^2 - 2ab + |b|^2
    centre = r.mean(axis=0, dtype=np.float64).astype(np.float32)
    qt = torch.from_numpy(np.ascontiguousarray(q.astype(np.float32, copy=False) - centre))
    rt = torch.from_numpy(np.ascontiguousarray(r.astype(np.float32, copy=False) - centre))
    q_sq, r_sq = (qt * qt).sum(1), (rt * rt).sum(1)
    n = qt.shape[0]
    idx = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    step = block_rows or max(1, _BLOCK_ELEMENTS // max(1, rt.shape[0]))
    for s in range(0, n, step):
        d2 = torch.addmm(r_sq[None, :], qt[s:s + step], rt.T, alpha=-2).add_(q_sq[s:s + step, None])
        if exclude_self:
            rows = torch.arange(s, min(s + step, n))
            d2[rows - s, rows] = float("inf")
        best = torch.argmin(d2, dim=1).numpy()
        idx[s:s + step] = best
        diff = q[s:s + step].astype(np.float64) - r[best].astype(np.float64)  # exact, in float64
        dist[s:s + step] = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return dist, idx


# --------------------------------------------------------------------------------------------
# AuthPct
# --------------------------------------------------------------------------------------------


def train_radii(train: ArrayLike, *, block_rows: int | None = None) -> np.ndarray:
    """Each training sample's distance to its nearest other training sample (AuthPct's radii; cacheable)."""
    t = as_features(train, "training features")
    if t.shape[0] < 2:
        raise InputError(f"AuthPct: the training set needs at least 2 samples, got {t.shape[0]}.")
    return nearest_neighbours(t, t, exclude_self=True, block_rows=block_rows)[0]


def authenticity(train: ArrayLike, synthetic: ArrayLike, *, block_rows: int | None = None,
                 train_radius: np.ndarray | None = None) -> dict[str, Any]:
    """Alaa et al.'s authenticity per synthetic sample and AuthPct (percent authentic).

    Returns ``AuthPct`` (0-100), ``n_synthetic``, ``n_train`` and per-sample arrays: ``authentic``
    (bool), ``distance`` (to the nearest training sample), ``nearest_train`` (its index) and
    ``train_radius`` (that training sample's distance to its nearest other training sample).
    """
    t = as_features(train, "training features")
    g = as_features(synthetic, "synthetic features")
    _same_dim({"training": t, "synthetic": g})
    if t.shape[0] < 2:
        raise InputError(f"AuthPct: the training set needs at least 2 samples, got {t.shape[0]}.")
    if train_radius is None:
        radius = train_radii(t, block_rows=block_rows)
    else:
        radius = np.asarray(train_radius)
        if radius.shape != (t.shape[0],):
            raise InputError(f"AuthPct: train_radius has shape {radius.shape}, expected ({t.shape[0]},).")
    dist, nn = nearest_neighbours(g, t, block_rows=block_rows)
    authentic = radius[nn] < dist
    return {
        "AuthPct": float(100.0 * authentic.mean()),
        "n_synthetic": int(g.shape[0]),
        "n_train": int(t.shape[0]),
        "authentic": authentic,
        "distance": dist,
        "nearest_train": nn,
        "train_radius": radius[nn],
    }


def authpct(train: ArrayLike, synthetic: ArrayLike, **kwargs: Any) -> float:
    """AuthPct in percent: the share of synthetic samples that are authentic (see :func:`authenticity`)."""
    return authenticity(train, synthetic, **kwargs)["AuthPct"]


# --------------------------------------------------------------------------------------------
# C_T
# --------------------------------------------------------------------------------------------


def mann_whitney_z(gen_dist: np.ndarray, test_dist: np.ndarray) -> float:
    """Meehan et al.'s Z-scored Mann-Whitney U of generated vs test distances (their exact formula).

    ``U`` = #pairs (generated, test) with the generated distance larger (+1/2 per tie), scipy's
    ``mannwhitneyu(gen, test).statistic``; ``Z = (U - (nm/2 - 0.5)) / sqrt(nm(n+m+1)/12)``.
    """
    from scipy.stats import mannwhitneyu

    m, n = len(gen_dist), len(test_dist)
    if m == 0 or n == 0:
        raise InputError("Mann-Whitney Z: both samples need at least one distance.")
    u = float(mannwhitneyu(gen_dist, test_dist, alternative="less", method="asymptotic").statistic)
    return (u - (n * m / 2 - 0.5)) / np.sqrt(n * m * (n + m + 1) / 12)


def kmeans_cells(train: ArrayLike, cells: int, *, seed: int = 0) -> Any:
    """scikit-learn ``KMeans`` with ``cells`` clusters fitted on the training features (k-means++, seeded)."""
    from sklearn.cluster import KMeans

    t = as_features(train, "training features")
    if not 1 <= cells <= t.shape[0]:
        raise InputError(f"C_T: cells must be between 1 and the training set size ({t.shape[0]}), got {cells}.")
    return KMeans(n_clusters=int(cells), n_init=1, random_state=int(seed)).fit(t.astype(np.float64, copy=False))


def assign_cells(x: ArrayLike, centres: ArrayLike, *, block_rows: int = 4096) -> np.ndarray:
    """Each row's nearest centre by exact Euclidean distance (float64; the first centre on a tie).

    The same answer row by row whatever the block or the set, so the cells recomputed from the centres a result
    stored (:func:`encode_centres`) are the cells it scored: candidates come from a float64 matmul, and every row
    whose two nearest centres are closer than that matmul's rounding could separate is decided again by the
    explicit sum of squared differences (a few rows at most; 50,000 x 768 against 50 centres: ~0.5 s)."""
    a = as_features(x, "features")
    c = np.asarray(centres, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != a.shape[1] or len(c) == 0:
        raise InputError(f"Cell centres of shape {c.shape} do not fit features of {a.shape[1]} dimensions.")
    c_sq = np.einsum("ij,ij->i", c, c)
    out = np.empty(a.shape[0], dtype=np.int64)
    for s in range(0, a.shape[0], block_rows):
        b = a[s:s + block_rows].astype(np.float64)
        d2 = c_sq[None, :] - 2.0 * (b @ c.T)  # |b|^2 left out: the same for every centre of a row
        best = np.argmin(d2, axis=1)
        if len(c) > 1:
            two = np.partition(d2, 1, axis=1)[:, :2]
            scale = np.einsum("ij,ij->i", b, b) + c_sq.max()
            close = np.flatnonzero(two[:, 1] - two[:, 0] <= 1e-9 * scale)
            for i in close:  # a near tie: decide it exactly, by the explicit distances
                best[i] = int(np.argmin(np.square(b[i] - c).sum(axis=1)))
        out[s:s + block_rows] = best
    return out


def encode_centres(centres: np.ndarray) -> dict[str, Any]:
    """Cell centres as compact JSON: little-endian float32 in base64, with the shape (50 x 768: ~205 kB)."""
    import base64

    c = np.ascontiguousarray(centres, dtype="<f4")
    return {"dtype": "float32", "shape": list(c.shape), "base64": base64.b64encode(c.tobytes()).decode("ascii")}


def decode_centres(blob: dict) -> np.ndarray:
    """The centres :func:`encode_centres` wrote (float32, exactly)."""
    import base64

    try:
        c = np.frombuffer(base64.b64decode(blob["base64"]), dtype="<f4").reshape([int(n) for n in blob["shape"]])
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"The stored C_T cell centres cannot be read ({exc}); rerun the privacy job.") from exc
    return c.astype(np.float32)


def c_t_from_cells(train: ArrayLike, train_cells: ArrayLike, test: ArrayLike, test_cells: ArrayLike,
                   synthetic: ArrayLike, synthetic_cells: ArrayLike, *,
                   min_synthetic: int = MIN_SYNTHETIC_PER_CELL, n_cells: int | None = None,
                   block_rows: int | None = None) -> dict[str, Any]:
    """C_T for given cell labels (integers ``0..k-1``, ``k = n_cells`` or the largest label + 1);
    see :func:`c_t` for the result."""
    t = as_features(train, "training features")
    p = as_features(test, "held-out test features")
    q = as_features(synthetic, "synthetic features")
    _same_dim({"training": t, "test": p, "synthetic": q})
    lab = {}
    for name, arr, x in (("train", train_cells, t), ("test", test_cells, p), ("synthetic", synthetic_cells, q)):
        a = np.asarray(arr).reshape(-1)
        if a.shape[0] != x.shape[0] or not np.issubdtype(a.dtype, np.integer) or (a.size and a.min() < 0):
            raise InputError(f"C_T: {name} cell labels must be one non-negative integer per sample "
                             f"({x.shape[0]}), got shape {a.shape} dtype {a.dtype}.")
        lab[name] = a
    k = int(max(a.max() for a in lab.values())) + 1
    if n_cells is not None:
        if n_cells < k:
            raise InputError(f"C_T: n_cells={n_cells} but a cell label is {k - 1}.")
        k = int(n_cells)
    n, m = p.shape[0], q.shape[0]
    rows = []
    for c in range(k):
        ti, pi, qi = (np.flatnonzero(lab[s] == c) for s in ("train", "test", "synthetic"))
        row: dict[str, Any] = {"cell": c, "n_train": int(ti.size), "n_test": int(pi.size),
                               "n_synthetic": int(qi.size), "test_share": pi.size / n,
                               "synthetic_share": qi.size / m, "Z_U": None, "included": False}
        if ti.size and pi.size and qi.size:
            lp, _ = nearest_neighbours(p[pi], t[ti], block_rows=block_rows)
            lq, _ = nearest_neighbours(q[qi], t[ti], block_rows=block_rows)
            row["Z_U"] = float(mann_whitney_z(lq, lp))
            row["included"] = qi.size > min_synthetic
        rows.append(row)
    inc = [r for r in rows if r["included"]]
    weight = sum(r["test_share"] for r in inc)
    value = float(sum(r["test_share"] * r["Z_U"] for r in inc) / weight) if weight > 0 else float("nan")
    return {"C_T": value, "cells": rows, "n_cells": k, "n_cells_included": len(inc),
            "min_synthetic_per_cell": int(min_synthetic), "n_train": int(t.shape[0]), "n_test": int(n),
            "n_synthetic": int(m)}


def default_cells(n_train: int, n_test: int, n_synthetic: int) -> int:
    """Cells such that an even split leaves >= 50 synthetic and >= 20 test samples per cell (2..50)."""
    return int(np.clip(min(n_synthetic // 50, n_test // 20, n_train // 20), 2, 50))


def c_t(train: ArrayLike, test: ArrayLike, synthetic: ArrayLike, *, cells: int | None = None, seed: int = 0,
        min_synthetic: int = MIN_SYNTHETIC_PER_CELL, block_rows: int | None = None) -> dict[str, Any]:
    """Meehan et al.'s C_T data-copying statistic with per-cell scores.

    ``cells`` k-means cells on the training features (default :func:`default_cells`); a cell counts
    when it holds more than ``min_synthetic`` synthetic samples. Returns ``C_T`` (NaN when no cell
    qualifies), ``cells`` (per cell: sizes, test / synthetic shares, ``Z_U`` or None, ``included``),
    the counts, and ``assignments`` (cell index per train / test / synthetic sample, numpy arrays, to
    colour an embedding map).
    """
    t = as_features(train, "training features")
    p = as_features(test, "held-out test features")
    q = as_features(synthetic, "synthetic features")
    _same_dim({"training": t, "test": p, "synthetic": q})
    k = default_cells(t.shape[0], p.shape[0], q.shape[0]) if cells is None else int(cells)
    km = kmeans_cells(t, k, seed=seed)
    assign = {"train": km.labels_.astype(np.int64),
              "test": km.predict(p.astype(np.float64, copy=False)).astype(np.int64),
              "synthetic": km.predict(q.astype(np.float64, copy=False)).astype(np.int64)}
    out = c_t_from_cells(t, assign["train"], p, assign["test"], q, assign["synthetic"],
                         min_synthetic=min_synthetic, n_cells=k, block_rows=block_rows)
    out["seed"] = int(seed)
    out["assignments"] = assign
    return out


# --------------------------------------------------------------------------------------------
# Registered on the privacy axis (computed by the privacy job from the reference index's features)
# --------------------------------------------------------------------------------------------


@register("C_T", inputs=("train", "heldout", "synthetic"), axis="privacy", per_pathology=False,
          outputs=(Output("C_T", display="C_T (data copying; < 0: copying)", direction="none", ci=False),
                   Output("C_T_cells", display="C_T cells used", direction="none", shown=False, ci=False)))
def c_t_metric(train: np.ndarray, heldout: np.ndarray, synthetic: np.ndarray, *, seed: int = 0) -> dict[str, Any]:
    """C_T with the default cells. The k-means centres (float32, :func:`encode_centres`) are the cells: every sample
    goes to its nearest stored centre (:func:`assign_cells`), so the embedding map recomputes each training image's
    cell from the JSON exactly. ``cells`` (per-cell Z and sizes) and the synthetic images' cells travel along.
    No cell with enough synthetic images: C_T None with the reason."""
    t, p, q = (as_features(a, name) for a, name in ((train, "training features"), (heldout, "held-out features"),
                                                    (synthetic, "synthetic features")))
    _same_dim({"training": t, "held-out": p, "synthetic": q})
    k = default_cells(t.shape[0], p.shape[0], q.shape[0])
    centres = kmeans_cells(t, k, seed=seed).cluster_centers_.astype(np.float32)
    cells = [assign_cells(a, centres) for a in (t, p, q)]
    out = c_t_from_cells(t, cells[0], p, cells[1], q, cells[2], n_cells=k)
    value = out["C_T"] if np.isfinite(out["C_T"]) else None
    res = {"C_T": value, "C_T_cells": out["n_cells_included"], "cells": out["cells"], "n_cells": out["n_cells"],
           "synthetic_cell": cells[2].tolist(), "n_train": out["n_train"],
           "n_heldout": out["n_test"], "n_synthetic": out["n_synthetic"], "seed": int(seed),
           "min_synthetic_per_cell": out["min_synthetic_per_cell"], "centres": encode_centres(centres)}
    if value is None:
        res["reason"] = (f"no k-means cell holds more than {out['min_synthetic_per_cell']} synthetic images "
                         f"({out['n_synthetic']} images over {out['n_cells']} cells); generate more images")
    return res


@register("AuthPct", inputs=("train", "synthetic"), axis="privacy", per_pathology=False,
          outputs=(Output("AuthPct", display="AuthPct (authentic %)", direction="higher", ci=False),))
def authpct_metric(train: np.ndarray, synthetic: np.ndarray, *, train_radius: np.ndarray | None = None
                   ) -> dict[str, Any]:
    """AuthPct; ``train_radius`` (:func:`train_radii` of ``train``, cached with the index) skips the N x N part."""
    out = authenticity(train, synthetic, train_radius=train_radius)
    return {"AuthPct": out["AuthPct"], "n_train": out["n_train"], "n_synthetic": out["n_synthetic"]}


__all__ = [
    "assign_cells",
    "authenticity",
    "authpct",
    "c_t",
    "c_t_from_cells",
    "decode_centres",
    "default_cells",
    "encode_centres",
    "kmeans_cells",
    "mann_whitney_z",
    "nearest_neighbours",
    "train_radii",
]
