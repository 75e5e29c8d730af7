"""Metrics as pure functions of features and labels (fidelity, classification, bootstrap CIs).

Nothing here loads images or models: callers pass feature matrices ``[N, D]`` (numpy or torch) and
label / score matrices. See :mod:`.fidelity`, :mod:`.classification` and :mod:`.bootstrap`.
"""

from __future__ import annotations

from .bootstrap import bootstrap_ci, bootstrap_fid
from .classification import (
    accuracy,
    classification_report,
    f1_micro_macro,
    multilabel_auc,
    precision_recall_f1,
)
from .fidelity import (
    FID,
    KID,
    PRDC,
    InceptionScore,
    feature_stats,
    fid,
    fidelity_metrics,
    frechet_distance,
    inception_score,
    kid,
    kid_from_subsets,
    kid_subsets,
    prdc,
)

__all__ = [
    "FID",
    "KID",
    "PRDC",
    "InceptionScore",
    "accuracy",
    "bootstrap_ci",
    "bootstrap_fid",
    "classification_report",
    "f1_micro_macro",
    "feature_stats",
    "fid",
    "fidelity_metrics",
    "frechet_distance",
    "inception_score",
    "kid",
    "kid_from_subsets",
    "kid_subsets",
    "multilabel_auc",
    "prdc",
    "precision_recall_f1",
]
