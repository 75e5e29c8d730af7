"""Utility: does a classifier trained on synthetic X-rays work on real ones?

CheXGenBench's downstream test: train a 14-label classifier on real, synthetic and real + synthetic images
and compare them on a real test split (macro / per-class AUROC, F1 micro / macro, accuracy). Report
generation with LLaVA-Rad, CheXGenBench's second utility test, is out of this project's scope.

    python -m evaluators utility --train real.csv@train --synthetic synth.csv --test real.csv@test --out utility.json

Heavy imports (torch, timm) happen inside the functions, so importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "TrainResult",
    "classification_metrics",
    "evaluate_classifier",
    "format_table",
    "run_utility",
    "standard_settings",
    "train_classifier",
]


def __getattr__(name: str) -> Any:  # lazy re-exports keep `import evaluators.utility` light
    if name in ("TrainResult", "train_classifier"):
        from . import train

        return getattr(train, name)
    if name in ("evaluate_classifier", "classification_metrics"):
        from . import evaluate

        return getattr(evaluate, name)
    if name in ("run_utility", "standard_settings", "format_table", "side_by_side"):
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
