"""Memorisation: is a synthetic image a (near) copy of some training image?

CheXGenBench compares each synthetic image only with the training image *of its prompt*. A model that
memorised copies whichever training image it saw, so here every synthetic image is compared with the
*whole* training set: its nearest training image (cosine similarity of encoder features) is found,
and the image is flagged when that similarity is unusually high.

"Unusually high" is calibrated, not guessed: take real images the model never saw, find *their*
nearest training image, and flag synthetic images above the 99th percentile (configurable) of those
similarities. By construction about 1% of fresh real images would be flagged, so a generator that
produces new images should be flagged at about that rate, and a copier far above it.

Calibration must use held-out *patients*: a held-out study of a training patient looks like that
patient's training images (same anatomy), which would raise the threshold and hide copies. Pass the
patient ids and :func:`calibrate_threshold` drops held-out images of training patients (and says how
many it dropped in :func:`calibration`).

The search takes feature matrices (any encoder); :func:`nearest_train` is an exact numpy search for
small sets, and the FAISS reference index gives the same top-1 for large ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from . import REID_THRESHOLD

DEFAULT_PERCENTILE = 99.0


def _unit(x: object, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InputError(f"{name}: expected a non-empty N x D feature matrix, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: features contain NaN or infinite values.")
    norm = np.linalg.norm(arr, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise InputError(
            f"{name}: an all-zero feature vector has no direction (cosine similarity undefined)."
        )
    return arr / norm


def nearest_train(
    query: object, train: object, *, k: int = 1, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and index of the ``k`` nearest training rows for each query row.

    Returns (sims [Nq, k], idx [Nq, k]), best first. Exact; memory O(chunk x Ntrain).
    """
    q, t = _unit(query, "query features"), _unit(train, "training features")
    if q.shape[1] != t.shape[1]:
        raise InputError(
            f"Feature sizes differ: query {q.shape[1]} vs training {t.shape[1]}; use one encoder."
        )
    k = max(1, min(int(k), t.shape[0]))
    sims = np.empty((q.shape[0], k), dtype=np.float32)
    idx = np.empty((q.shape[0], k), dtype=np.int64)
    for s in range(0, q.shape[0], chunk):
        block = q[s : s + chunk] @ t.T
        top = (
            np.argpartition(-block, k - 1, axis=1)[:, :k]
            if k < t.shape[0]
            else np.tile(np.arange(k), (len(block), 1))
        )
        vals = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        sims[s : s + chunk] = np.take_along_axis(vals, order, axis=1)
        idx[s : s + chunk] = np.take_along_axis(top, order, axis=1)
    return sims, idx


@dataclass
class Calibration:
    """A memorisation threshold and what it was computed from."""

    threshold: float
    percentile: float
    n_used: int
    n_dropped_same_patient: int = 0
    notes: list[str] = field(default_factory=list)


def calibration(
    heldout_to_train_sims: object,
    percentile: float = DEFAULT_PERCENTILE,
    *,
    heldout_patient_ids: Sequence[object] | None = None,
    train_patient_ids: Sequence[object] | None = None,
) -> Calibration:
    """Threshold = ``percentile``-th percentile of held-out real images' top-1 similarity to training.

    With patient ids, held-out images whose patient also appears in training are left out (see the
    module docstring); without them the caller vouches that the held-out set is patient-disjoint.
    """
    sims = np.asarray(heldout_to_train_sims, dtype=np.float64)
    if sims.ndim == 2:
        sims = sims[:, 0]  # top-1 column of a [N, k] result
    if sims.ndim != 1 or sims.size == 0:
        raise InputError("Calibration needs the top-1 similarity of at least one held-out real image.")
    if not np.all(np.isfinite(sims)):
        raise InputError("Calibration similarities contain NaN or infinite values.")
    if not 0 < float(percentile) <= 100:
        raise InputError(f"Percentile must be in (0, 100], got {percentile}.")
    notes: list[str] = []
    dropped = 0
    if heldout_patient_ids is not None:
        if train_patient_ids is None:
            raise InputError("Give train_patient_ids together with heldout_patient_ids.")
        if len(heldout_patient_ids) != sims.size:
            raise InputError(
                f"heldout_patient_ids has {len(heldout_patient_ids)} entries for {sims.size} similarities."
            )
        train_set = {str(p) for p in train_patient_ids}
        keep = np.array([str(p) not in train_set for p in heldout_patient_ids])
        dropped = int((~keep).sum())
        if dropped:
            notes.append(
                f"{dropped} held-out image(s) belong to training patients and were left out of calibration."
            )
        sims = sims[keep]
        if sims.size == 0:
            raise InputError(
                "Every held-out image belongs to a patient in the training set; calibration needs held-out "
                "patients (a patient-disjoint split)."
            )
    if sims.size < 100 / (100 - percentile + 1e-9) and percentile < 100:
        notes.append(
            f"Only {sims.size} held-out images: the {percentile:g}th percentile is close to their maximum."
        )
    thr = float(np.percentile(sims, percentile))
    return Calibration(thr, float(percentile), int(sims.size), dropped, notes)


def calibrate_threshold(
    heldout_to_train_sims: object,
    percentile: float = DEFAULT_PERCENTILE,
    *,
    heldout_patient_ids: Sequence[object] | None = None,
    train_patient_ids: Sequence[object] | None = None,
) -> float:
    """The memorisation threshold (see :func:`calibration`, which also reports what was dropped)."""
    return calibration(
        heldout_to_train_sims,
        percentile,
        heldout_patient_ids=heldout_patient_ids,
        train_patient_ids=train_patient_ids,
    ).threshold


def flag(sims_top1: object, threshold: float) -> np.ndarray:
    """True where an image's top-1 similarity to training is strictly above the threshold."""
    sims = np.asarray(sims_top1, dtype=np.float64)
    if sims.ndim == 2:
        sims = sims[:, 0]
    return sims > float(threshold)


def memorisation_summary(
    sims_top1: object,
    threshold: float | Calibration,
    *,
    nn_index: object | None = None,
    train_patient_ids: Sequence[object] | None = None,
    top: int = 20,
) -> dict:
    """How many synthetic images are flagged, and which training images/patients they copy.

    ``nn_index[i]`` is the training row nearest to synthetic image i (for the top list and the count
    of distinct training images and patients hit). The expected flag rate of a non-copying generator
    is ``1 - percentile/100``; ``excess_over_expected`` is the observed rate divided by it.
    """
    cal = threshold if isinstance(threshold, Calibration) else None
    thr = cal.threshold if cal else float(threshold)
    sims = np.asarray(sims_top1, dtype=np.float64)
    if sims.ndim == 2:
        sims = sims[:, 0]
    if sims.size == 0:
        raise InputError("No synthetic images to summarise.")
    flags = flag(sims, thr)
    out: dict = {
        "n": int(sims.size),
        "threshold": thr,
        "n_flagged": int(flags.sum()),
        "fraction_flagged": float(flags.mean()),
        "top1_mean": float(sims.mean()),
        "top1_median": float(np.median(sims)),
        "top1_max": float(sims.max()),
    }
    if cal is not None:
        expected = 1 - cal.percentile / 100
        out.update(
            percentile=cal.percentile,
            calibration_n=cal.n_used,
            expected_fraction=expected,
            excess_over_expected=float(flags.mean() / expected) if expected > 0 else float("nan"),
            notes=list(cal.notes),
        )
    order = np.argsort(-sims, kind="stable")[: int(top)]
    top_rows = [{"synthetic": int(i), "similarity": float(sims[i]), "flagged": bool(flags[i])} for i in order]
    if nn_index is not None:
        nn = np.asarray(nn_index)
        if nn.ndim == 2:
            nn = nn[:, 0]
        if nn.shape[0] != sims.size:
            raise InputError(f"nn_index has {nn.shape[0]} rows for {sims.size} similarities.")
        out["distinct_train_images_flagged"] = int(np.unique(nn[flags]).size)
        for row in top_rows:
            row["train_index"] = int(nn[row["synthetic"]])
        if train_patient_ids is not None:
            pids = np.asarray([str(p) for p in train_patient_ids])
            out["distinct_train_patients_flagged"] = int(np.unique(pids[nn[flags]]).size)
            for row in top_rows:
                row["train_patient"] = str(pids[row["train_index"]])
    out["top"] = top_rows
    return out


def _labels_matrix(labels: object, n: int):
    """(matrix [n, 14] float with 1 = positive, pathology names) from an array or DataFrame."""
    from ..pathologies import PATHOLOGIES, label_columns_present

    if hasattr(labels, "columns"):
        cols = label_columns_present(labels.columns)
        if not cols:
            raise InputError("Labels table has none of the 14 CheXpert label columns.")
        mat = labels[cols].apply(lambda c: c.astype("float64")).to_numpy()
        names = cols
    else:
        mat = np.asarray(labels, dtype=np.float64)
        if mat.ndim != 2 or mat.shape[1] != len(PATHOLOGIES):
            raise InputError(f"Labels must be [N, {len(PATHOLOGIES)}] (CheXpert order), got {mat.shape}.")
        names = list(PATHOLOGIES)
    if mat.shape[0] != n:
        raise InputError(f"Labels have {mat.shape[0]} rows for {n} synthetic images.")
    return mat, names


def privacy_summary(
    reid_scores: object | None,
    flagged: object | None,
    labels: object | None = None,
    *,
    reid_threshold: float = REID_THRESHOLD,
) -> dict:
    """Overall privacy numbers and a per-pathology table (rows: pathology, n, re-ID and flag rates).

    ``reid_scores[i]``: re-ID score of synthetic image i against its matched real image (or its
    max over candidates); ``flagged[i]``: memorisation flag; ``labels``: [N, 14] CheXpert values
    (or a DataFrame with the label columns) of the synthetic images' prompts. Either score may be
    None when that model is unavailable; its columns are then NaN, never invented.
    Per-pathology rows count images whose label is positive (1); pathologies with n = 0 are kept.
    """
    import pandas as pd

    scores = None if reid_scores is None else np.asarray(reid_scores, dtype=np.float64).ravel()
    flags = None if flagged is None else np.asarray(flagged, dtype=bool).ravel()
    if scores is None and flags is None:
        raise InputError("privacy_summary needs re-ID scores, memorisation flags, or both.")
    n = scores.size if scores is not None else flags.size
    if scores is not None and flags is not None and scores.size != flags.size:
        raise InputError(f"{scores.size} re-ID scores but {flags.size} memorisation flags; one per image.")
    if n == 0:
        raise InputError("No synthetic images to summarise.")
    if scores is not None and not np.all(np.isfinite(scores)):
        raise InputError("Re-ID scores contain NaN or infinite values.")

    def _stats(mask: np.ndarray) -> dict:
        m = int(mask.sum())
        nan = float("nan")
        s = scores[mask] if scores is not None else None
        return {
            "n": m,
            "mean_reid": float(s.mean()) if s is not None and m else nan,
            "max_reid": float(s.max()) if s is not None and m else nan,
            "fraction_reidentified": float((s > reid_threshold).mean()) if s is not None and m else nan,
            "fraction_flagged": float(flags[mask].mean()) if flags is not None and m else nan,
        }

    overall = _stats(np.ones(n, dtype=bool))
    overall["reid_threshold"] = reid_threshold
    table = None
    if labels is not None:
        mat, names = _labels_matrix(labels, n)
        rows = [{"pathology": name, **_stats(mat[:, j] == 1)} for j, name in enumerate(names)]
        table = pd.DataFrame(
            rows,
            columns=["pathology", "n", "mean_reid", "max_reid", "fraction_reidentified", "fraction_flagged"],
        )
    return {"overall": overall, "per_pathology": table}


# --------------------------------------------------------------------------------------------------
# Finite-sample (conformal) calibration


def smallest_level(n: int) -> float:
    """The smallest false-flag level that ``n`` calibration scores can support: 1 / (n + 1)."""
    return 1.0 / (int(n) + 1)


def conformal_threshold(scores: object, level: float) -> float:
    """The ``ceil((n + 1)(1 - level))``-th smallest of ``n`` calibration scores.

    A new image exchangeable with the calibration images scores above it with probability at most
    ``level`` (the split-conformal guarantee, Vovk et al.; Angelopoulos & Bates 2021, sec. 1). A level
    below ``1 / (n + 1)`` would need a rank beyond ``n``: refused with the level ``n`` can support.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise InputError("Calibration needs at least one finite score.")
    if not 0 < float(level) < 1:
        raise InputError(f"The false-flag level must be in (0, 1), got {level}.")
    k = int(np.ceil((s.size + 1) * (1 - float(level)) - 1e-9))
    if k > s.size:
        lo = smallest_level(s.size)
        raise InputError(
            f"A false-flag level of {level:g} needs at least {int(np.ceil(1 / level - 1 - 1e-9))} calibration "
            f"images; {s.size} support levels down to {lo:.4g} (percentile {100 * (1 - lo):.4g}). Use a higher "
            "level (a lower --percentile) or a larger training / held-out set."
        )
    return float(s[max(k, 1) - 1])


def p_values(calibration_scores: object, scores: object) -> np.ndarray:
    """Empirical (conformal) p-value of each score: ``(1 + #{calibration >= score}) / (n + 1)``.

    Small means "higher than almost every image of a new patient". ``p <= level`` exactly when the score
    is above :func:`conformal_threshold` (for scores not tied with a calibration score).
    """
    cal = np.sort(np.asarray(calibration_scores, dtype=np.float64).ravel())
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_ge = cal.size - np.searchsorted(cal, s, side="left")
    return (1.0 + n_ge) / (cal.size + 1.0)


def realised_rate_bound(n: int, level: float, q: float = 0.9) -> float:
    """With ``n`` calibration scores, the rate at which new patients' images are flagged is itself random
    (Beta(n + 1 - k, k) with k = ceil((n + 1)(1 - level))); its ``q`` quantile (Angelopoulos & Bates, sec. 3.2)."""
    from scipy.stats import beta

    k = int(np.ceil((int(n) + 1) * (1 - float(level)) - 1e-9))
    if k > n or k < 1:
        return float("nan")
    return float(beta.ppf(q, n + 1 - k, k))
