"""Multi-label classification metrics for the utility benchmark (CheXGenBench's downstream task).

Labels are ``[N, C]`` arrays of 0/1 with NaN for masked entries (e.g. uncertain labels under the
``ignore`` policy); masked entries are left out of every metric. Definitions:

- AUC per class: ROC AUC by the Mann-Whitney rank statistic with tied scores sharing ranks (equal
  to scikit-learn's ``roc_auc_score``); ``None`` when a class has only one label value present.
  Macro AUC: the mean over classes whose AUC is defined (``None`` if none is).
- F1 at a threshold (default 0.5, CheXGenBench's): micro F1 pools TP/FP/FN over all entries;
  macro F1 averages per-class F1, with F1 = 0 for a class with no positives and no predictions
  (scikit-learn's ``zero_division=0``).
- Accuracy: element-wise (per-label) accuracy, the mean over all unmasked (image, label)
  entries; not subset (exact-match) accuracy, which is near 0 for 14 labels and uninformative.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from ..errors import InputError


def _matrix(x: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: could not read as numbers ({exc}).") from exc
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InputError(f"{name}: expected an [N, C] matrix, got shape {tuple(arr.shape)}.")
    return arr


def _labels(y_true: object) -> np.ndarray:
    y = _matrix(y_true, "y_true")
    seen = y[~np.isnan(y)]
    bad = seen[(seen != 0) & (seen != 1)]
    if bad.size:
        raise InputError(f"y_true: labels must be 0, 1 or NaN (masked); found {sorted(set(bad.tolist()))[:5]}. "
                         "Map uncertain (-1) labels with a label policy first.")
    return y


def _names(names: Sequence[str] | None, c: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(c)]
    names = [str(n) for n in names]
    if len(names) != c:
        raise InputError(f"names: {len(names)} names given for {c} label columns.")
    return names


def _same_shape(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{what}: y_true has shape {a.shape} but predictions have shape {b.shape}.")


def binary_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC of scores ``s`` for 0/1 labels ``y``; None when only one class is present."""
    pos = y == 1
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)  # average ranks for ties = half credit for tied pairs
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def multilabel_auc(y_true: object, scores: object, names: Sequence[str] | None = None) -> dict:
    """Per-class ROC AUC (NaN labels masked) and their macro mean: ``{"per_class", "macro"}``."""
    y, s = _labels(y_true), _matrix(scores, "scores")
    _same_shape(y, s, "AUC")
    if not np.isfinite(s).all():
        raise InputError("scores: contain NaN or inf; the classifier output is invalid.")
    per_class: dict[str, float | None] = {}
    for j, name in enumerate(_names(names, y.shape[1])):
        keep = ~np.isnan(y[:, j])
        per_class[name] = binary_auc(y[keep, j], s[keep, j])
    defined = [v for v in per_class.values() if v is not None]
    return {"per_class": per_class, "macro": float(np.mean(defined)) if defined else None}


BOOTSTRAP_REPLICATES = 1000


def bootstrap_weights(n: int, groups: Sequence | None, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] resampling weights of n test images: each replicate draws the patients (``groups``; each image
    its own group when None) with replacement, and an image weighs as often as its patient was drawn. The same
    (n, groups, n_boot, seed) give the same weights, so settings scored on one test set are paired."""
    g = np.arange(n) if groups is None else np.unique(np.asarray(groups, dtype=object).astype(str),
                                                      return_inverse=True)[1]
    n_groups = int(g.max()) + 1 if n else 0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, max(n_groups, 1), size=(n_boot, n_groups))
    counts = np.stack([np.bincount(d, minlength=n_groups) for d in draws]) if n_groups else np.zeros((n_boot, 0))
    return counts[:, g].astype(np.float32)


def _weighted_aucs(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC of one class under each row of weights ``w`` [B, n] (ties count half; NaN where a replicate has
    no positive or no negative weight): AUC = sum_i pos sum_j neg w_i w_j [s_j < s_i] / (W_pos W_neg)."""
    _, inv = np.unique(s, return_inverse=True)
    k = int(inv.max()) + 1
    pos, neg = y == 1, y == 0
    out = np.full(len(w), np.nan)
    for b, wb in enumerate(w):
        negw = np.bincount(inv[neg], weights=wb[neg], minlength=k)
        below = np.cumsum(negw) - negw
        wp, wn = wb[pos].sum(), negw.sum()
        if wp > 0 and wn > 0:
            out[b] = float((wb[pos] * (below[inv[pos]] + 0.5 * negw[inv[pos]])).sum() / (wp * wn))
    return out


def macro_auc_replicates(y_true: object, scores: object, weights: np.ndarray) -> np.ndarray:
    """Macro AUC under each row of resampling ``weights`` [B, N] (:func:`bootstrap_weights`), over the classes whose
    AUC is defined on the full set (NaN labels masked); in a replicate a class without both outcomes is left out of
    the mean, as :func:`multilabel_auc` leaves it out of the full set's."""
    y, s = _labels(y_true), _matrix(scores, "scores")
    _same_shape(y, s, "AUC")
    per = []
    for j in range(y.shape[1]):
        keep = ~np.isnan(y[:, j])
        if binary_auc(y[keep, j], s[keep, j]) is not None:
            per.append(_weighted_aucs(y[keep, j], s[keep, j], np.asarray(weights)[:, keep]))
    if not per:
        return np.full(len(weights), np.nan)
    import warnings

    with warnings.catch_warnings():  # a replicate in which no class has both outcomes: NaN, left out of the interval
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(per, axis=1), axis=1)


def percentile_ci(replicates: np.ndarray) -> list[float]:
    """The 95% percentile interval of bootstrap replicates (NaN replicates left out)."""
    r = np.asarray(replicates, dtype=np.float64)
    return [float(np.nanpercentile(r, 2.5)), float(np.nanpercentile(r, 97.5))]


def paired_difference(point: float, base_point: float, reps: np.ndarray, base_reps: np.ndarray) -> dict:
    """``point - base_point`` with the 95% interval of the replicate differences: both scored on the same resamples
    of one test set (paired), so what they share cancels. ``tells_apart``: the interval excludes 0."""
    lo, hi = percentile_ci(np.asarray(reps, dtype=np.float64) - np.asarray(base_reps, dtype=np.float64))
    return {"diff": float(point - base_point), "ci95": [lo, hi], "tells_apart": bool(lo > 0 or hi < 0)}


def paired_text(name: str, vs: str, diff: float, ci95: Sequence[float], tells_apart: bool) -> str:
    """'synthetic minus real -0.046 [-0.098, +0.029] (the test set cannot tell them apart)'."""
    verdict = "the test set tells them apart" if tells_apart else "the test set cannot tell them apart"
    return f"{name} minus {vs} {diff:+.3f} [{ci95[0]:+.3f}, {ci95[1]:+.3f}] ({verdict})"


def interval_rows(label: str, names: Sequence[str], ci: Mapping[str, Sequence[float] | None],
                  paired: Mapping[str, dict] | None, diff_key: str, vs: str) -> list[dict]:
    """Side-by-side table rows under metric ``label``: its 95% interval per setting (low, high), then each setting
    minus ``vs`` (``paired[name][diff_key]``) with the paired interval; a setting without one has None."""
    rows = []
    if any(ci.values()):
        rows += [{"metric": f"{label} 95% CI {end}", **{n: (ci[n][k] if ci.get(n) else None) for n in names}}
                 for k, end in ((0, "low"), (1, "high"))]
    if paired:
        rows += [{"metric": f"{label} minus {vs}{suffix}",
                  **{n: (paired[n][diff_key] if k is None else paired[n]["ci95"][k]) if n in paired else None
                     for n in names}}
                 for suffix, k in (("", None), (" (paired 95% CI low)", 0), (" (paired 95% CI high)", 1))]
    return rows


def f1_micro_replicates(y_true: np.ndarray, y_pred: np.ndarray, keep: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Micro F1 (0/1 labels and predictions [N, C], ``keep`` the counted entries) under each row of resampling
    ``weights`` [B, N]: 2 TP / (2 TP + FP + FN) with each image's counts weighted (NaN where nothing counts)."""
    t, q, k = np.asarray(y_true) == 1, np.asarray(y_pred) == 1, np.asarray(keep, dtype=bool)
    tp, fp, fn = ((t & q & k).sum(1), (~t & q & k).sum(1), (t & ~q & k).sum(1))
    w = np.asarray(weights, dtype=np.float64)
    num = 2 * (w @ tp)
    den = num + w @ fp + w @ fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    mask = ~np.isnan(y)
    yt = (y == 1) & mask
    yp = (p == 1) & mask
    tp = (yt & yp).sum(0)
    fp = (~yt & yp & mask).sum(0)
    fn = (yt & ~yp).sum(0)
    return tp, fp, fn, mask


def _binary_predictions(y_pred: object) -> np.ndarray:
    p = _matrix(y_pred, "y_pred")
    if not np.isin(p, (0, 1)).all():
        raise InputError("y_pred: expected 0/1 predictions; threshold the scores first (e.g. scores >= 0.5).")
    return p


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.maximum(den, 1), 0.0)


def precision_recall_f1(y_true: object, y_pred_binary: object) -> dict[str, float]:
    """Micro (pooled counts) and macro (mean over classes) precision, recall and F1; 0 where a
    denominator is 0 (scikit-learn's ``zero_division=0``, as CheXGenBench calls it)."""
    y, p = _labels(y_true), _binary_predictions(y_pred_binary)
    _same_shape(y, p, "F1")
    tp, fp, fn, _ = _counts(y, p)
    out: dict[str, float] = {}
    for name, num, den in (("precision", tp, tp + fp), ("recall", tp, tp + fn), ("f1", 2 * tp, 2 * tp + fp + fn)):
        out[f"{name}_micro"] = float(_safe_div(np.asarray(num.sum()), np.asarray(den.sum())))
        out[f"{name}_macro"] = float(_safe_div(num, den).mean())
    return out


def f1_micro_macro(y_true: object, y_pred_binary: object) -> dict[str, float]:
    """Micro F1 (pooled counts) and macro F1 (mean of per-class F1, 0 for an empty class)."""
    prf = precision_recall_f1(y_true, y_pred_binary)
    return {"f1_micro": prf["f1_micro"], "f1_macro": prf["f1_macro"]}


def accuracy(y_true: object, y_pred_binary: object) -> float:
    """Element-wise accuracy over unmasked (image, label) entries."""
    y, p = _labels(y_true), _binary_predictions(y_pred_binary)
    _same_shape(y, p, "accuracy")
    mask = ~np.isnan(y)
    if not mask.any():
        raise InputError("accuracy: every label is masked (NaN); nothing to score.")
    return float((y[mask] == p[mask]).mean())


def classification_report(y_true: object, scores: object, threshold: float = 0.5,
                          names: Sequence[str] | None = None) -> dict:
    """Macro and per-class AUC, then at ``scores >= threshold`` (CheXGenBench's rule): micro/macro
    precision, recall and F1, and element-wise accuracy. Scores are probabilities (after sigmoid)."""
    s = _matrix(scores, "scores")
    auc = multilabel_auc(y_true, s, names)
    pred = (s >= threshold).astype(np.float64)
    return {
        "auc_macro": auc["macro"],
        "auc_per_class": auc["per_class"],
        **precision_recall_f1(y_true, pred),
        "accuracy": accuracy(y_true, pred),
        "threshold": float(threshold),
        "n": int(s.shape[0]),
    }


__all__ = [
    "accuracy",
    "binary_auc",
    "classification_report",
    "f1_micro_macro",
    "multilabel_auc",
    "precision_recall_f1",
]
