"""Applying a trained classifier to a test set, and the metrics CheXGenBench reports for it.

Metrics (as CheXGenBench's ``downstream_inference.py``, computed by evaluators.metrics.classification): macro
AUROC over the classes whose test labels have both outcomes, per-class AUROC, F1 micro / macro and
element-wise accuracy at a 0.5 threshold. Classes the
test set does not annotate (all blank, e.g. Fracture for NIH data) are left out and listed with the reason;
under the 'ignore' policy uncertain entries are left out entry by entry.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import jobs
from ..errors import InputError
from ..metrics.classification import BOOTSTRAP_REPLICATES
from ..pathologies import PATHOLOGIES
from .data import GRAY_MEAN, GRAY_STD, Preloaded, preload, targets

THRESHOLD = 0.5


def classification_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    names: Sequence[str] = PATHOLOGIES,
    threshold: float = THRESHOLD,
    groups: Sequence | None = None,
    n_boot: int = BOOTSTRAP_REPLICATES,
    seed: int = 0,
) -> dict[str, Any]:
    """The utility report for one test set: macro/per-class AUC, F1 micro/macro, accuracy, excluded classes.

    ``mask`` (0/1, same shape) marks the entries that count; a class with no counted entry is 'not
    annotated' and left out entirely. The numbers come from evaluators.metrics.classification.
    ``n_boot`` > 0 adds the macro AUC's 95% percentile interval over ``n_boot`` resamples of the test set's
    patients (``groups``; else images), and keeps the replicates under ``_auc_replicates`` (not saved) so that
    settings tested on the same set can be compared pairwise (:func:`evaluators.utility.run.paired_vs_real`).
    """
    from ..metrics.classification import (
        bootstrap_weights,
        classification_report,
        macro_auc_replicates,
        percentile_ci,
    )

    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 2 or y.shape[1] != len(names):
        raise InputError(f"Labels {y.shape} and scores {s.shape} must both be [N, {len(names)}].")
    m = np.ones_like(y, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    excluded = {names[j]: "not annotated in the test set" for j in range(len(names)) if not m[:, j].any()}
    cols = [j for j in range(len(names)) if m[:, j].any()]
    if not cols:
        raise InputError("The test set annotates none of the 14 labels; nothing can be evaluated.")
    eval_names = [names[j] for j in cols]
    yc = np.where(m[:, cols], y[:, cols], np.nan)
    rep = classification_report(yc, s[:, cols], threshold, eval_names)
    per_class_auc = {n: float(v) for n, v in rep["auc_per_class"].items() if v is not None}
    for k, n in enumerate(eval_names):
        if n not in per_class_auc:
            pos = bool(np.nansum(yc[:, k]) > 0)
            excluded[n] = f"only {'positive' if pos else 'negative'} test labels (AUC undefined)"
    boot: dict[str, Any] = {}
    if n_boot and rep["auc_macro"] is not None:
        reps = macro_auc_replicates(yc, s[:, cols], bootstrap_weights(len(y), groups, int(n_boot), int(seed)))
        boot = {"macro_auc_ci95": percentile_ci(reps),
                "macro_auc_bootstrap": {"replicates": int(n_boot), "seed": int(seed),
                                        "unit": "image" if groups is None or len(set(map(str, groups))) == len(y)
                                        else "patient"},
                "_auc_replicates": reps}
    return {
        **boot,
        "macro_auc": float(rep["auc_macro"]) if rep["auc_macro"] is not None else float("nan"),
        "per_class_auc": per_class_auc,
        "f1_micro": float(rep["f1_micro"]),
        "f1_macro": float(rep["f1_macro"]),
        "accuracy": float(rep["accuracy"]),
        "threshold": threshold,
        "n_images": len(y),
        "positives": {n: int(np.nansum(yc[:, k] == 1)) for k, n in enumerate(eval_names)},
        "classes_evaluated": eval_names,
        "excluded": excluded,
    }


def predict(model: Any, images: np.ndarray, *, device: str, batch_size: int = 64) -> np.ndarray:
    """Sigmoid scores [N, C] for uint8 images [N, S, S]."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            jobs.check()
            batch = torch.from_numpy(images[start : start + batch_size]).to(device)
            x = (batch.float().unsqueeze(1) / 255.0 - GRAY_MEAN) / GRAY_STD
            out.append(torch.sigmoid(model(x).float()).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(PATHOLOGIES)), dtype=np.float32)


def evaluate_preloaded(model: Any, data: Preloaded, *, policy: str, device: str, batch_size: int = 64) -> dict:
    """Metrics of a model (already built) on a preloaded test set."""
    y, mask = targets(data, policy)
    scores = predict(model, data.images, device=device, batch_size=batch_size)
    return classification_metrics(y, scores, mask, groups=data.groups)


def evaluate_classifier(
    model_dir: str | os.PathLike,
    test_set: Any,
    *,
    policy: str | None = None,
    device: str | None = None,
    batch_size: int = 64,
    preloaded: Preloaded | None = None,
    show_bar: bool = True,
) -> dict:
    """Metrics of a saved classifier on an ImageSet, at the image size and label policy it was trained with."""
    from ..settings import select_device
    from .models import load_classifier

    dev = select_device(device)
    model, config = load_classifier(model_dir, dev)
    pol = policy or config.get("policy", "zeros")
    size = int(config["image_size"])
    data = preloaded if preloaded is not None else preload(test_set, size, name="test", show_bar=show_bar)
    if data.images.shape[1:] != (size, size):
        raise InputError(f"Test images are {data.images.shape[1:]} but the classifier was trained at {size}px.")
    result = evaluate_preloaded(model, data, policy=pol, device=dev, batch_size=batch_size)
    result.update({"policy": pol, "model": config["model"], "weights": config.get("weights", "?")})
    return result
