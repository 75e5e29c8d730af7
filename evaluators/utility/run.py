"""The utility experiment: train on real, synthetic and real + synthetic images, test each on real images.

CheXGenBench's question is whether a classifier trained on synthetic X-rays works on real ones. Every
setting trains the same architecture with the same seed, image size and label policy, and is tested on the
same real test split; the report puts the settings side by side. Images are loaded once per run and shared.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .data import TEST_SPLIT_NAMES, Preloaded, preload
from .evaluate import evaluate_preloaded
from .models import default_model, load_classifier, resolve_weights
from .train import Progress, train_classifier

REAL, SYNTHETIC, MIXED, SWAP = "real", "synthetic", "real+synthetic", "mixed"


@dataclass(frozen=True)
class Swap:
    """CheXGenBench's "mixed" setting: the real training set with ``fraction`` of its trainable images (seeded)
    replaced by as many synthetic ones, so the training size stays that of the real setting."""

    real: tuple[str, ...]
    synthetic: tuple[str, ...]
    fraction: float = 0.5

    def __iter__(self):  # the specs it draws on (reports list them as the setting's training sets)
        return iter((*self.real, *self.synthetic))
METRIC_ROWS = (("macro AUC", "macro_auc"), ("F1 micro", "f1_micro"), ("F1 macro", "f1_macro"), ("accuracy", "accuracy"))


def standard_settings(real: Sequence[str], synthetic: Sequence[str], *, swap: bool = False) -> dict[str, Any]:
    """CheXGenBench's settings from lists of real and synthetic set specs (empty ones left out): real, synthetic,
    real+synthetic (both concatenated) and, with ``swap``, "mixed" (half the real images swapped for synthetic)."""
    settings: dict[str, Any] = {}
    if real:
        settings[REAL] = list(real)
    if synthetic:
        settings[SYNTHETIC] = list(synthetic)
    if real and synthetic:
        settings[MIXED] = [*real, *synthetic]
        if swap:
            settings[SWAP] = Swap(tuple(real), tuple(synthetic))
    if not settings:
        raise InputError("Give at least one training set (real and/or synthetic).")
    return settings


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name).strip("_") or "setting"


def _load(spec: str, *, split: str | None = None) -> Any:
    from ..imagesets import load_image_set

    return load_image_set(spec, split=split)


def run_utility(
    train_specs: Sequence[str] | Mapping[str, Sequence[str]],
    test_spec: str,
    *,
    model: str | None = None,
    epochs: int = 20,
    image_size: int = 128,
    batch_size: int = 32,
    lr: float | None = None,
    seed: int = 0,
    policy: str = "zeros",
    scheduler: str = "cosine",
    patience: int = 4,
    pretrained: bool | str = False,
    device: str | None = None,
    work_dir: str | os.PathLike | None = None,
    max_train_samples: int | None = None,
    num_workers: int = 0,
    resume: bool = True,
    progress: Progress | None = None,
    show_bars: bool = True,
    loader: Any = None,
    keep_replicates: bool = False,
) -> dict:
    """Train one classifier per setting and test each on ``test_spec``; the side-by-side report.

    ``train_specs``: a list of image-set specs (concatenated into one setting, 'train'), or a mapping
    {setting name: [specs]} such as :func:`standard_settings` gives. ``loader`` (spec -> ImageSet) defaults
    to evaluators.imagesets.load_image_set. Checkpoints go to ``work_dir/<setting>/``; a rerun resumes.
    Each setting's macro AUC carries a patient-bootstrap 95% interval, and every setting is compared with 'real'
    on the same resamples (``paired``); ``keep_replicates`` leaves the replicates in for a caller that pairs
    settings of several calls (:func:`paired_vs_real`).
    """
    from ..settings import select_device, subdir

    started = time.time()
    settings = {"train": list(train_specs)} if not isinstance(train_specs, Mapping) else {
        k: v if isinstance(v, Swap) else list(v) for k, v in train_specs.items()
    }
    if any(not list(v) for v in settings.values()) or not settings:
        raise InputError("Every setting needs at least one training set.")
    dev = select_device(device)
    resolve_weights(model or default_model(dev), pretrained)  # fail before any image is loaded
    load = loader or _load
    root = Path(work_dir).expanduser() if work_dir else subdir("utility") / _slug(f"{test_spec}_{seed}")

    cache: dict[str, Preloaded] = {}

    def get(spec: str) -> Preloaded:
        if spec not in cache:
            cache[spec] = preload(load(spec), image_size, name=spec, progress=progress, show_bar=show_bars)
        return cache[spec]

    test = get(test_spec)
    if not test.annotated.any():
        raise InputError(f"Test set {test_spec!r} has no labels (all 14 columns blank); the utility test needs "
                         "labelled real images.")
    results: dict[str, dict] = {}
    weights = model_used = None
    for name, specs in settings.items():
        if progress is not None:
            progress({"stage": "setting", "setting": name, "train": specs})
        notes_swap: list[str] = []
        parts = _swapped(specs, get, seed, notes_swap) if isinstance(specs, Swap) else [get(s) for s in specs]
        overlap = _patient_overlap(parts, test)
        res = train_classifier(
            [],
            preloaded=parts,
            names=[p.name for p in parts] if isinstance(specs, Swap) else specs,
            model=model,
            epochs=epochs,
            image_size=image_size,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            out_dir=root / _slug(name),
            device=dev,
            progress=progress,
            patience=patience,
            policy=policy,
            scheduler=scheduler,
            pretrained=pretrained,
            max_train_samples=max_train_samples,
            num_workers=num_workers,
            resume=resume,
            show_bars=show_bars,
        )
        net, _ = load_classifier(res.model_dir, dev)
        metrics = evaluate_preloaded(net, test, policy=policy, device=dev)
        weights, model_used = res.weights, res.model
        results[name] = {
            "train": list(specs),
            **({"swap": notes_swap[0]} if notes_swap else {}),
            "n_train": res.n_train,
            "n_val": res.n_val,
            "validation": res.validation,
            "epochs_run": res.epochs_run,
            "best_epoch": res.best_epoch,
            "best_val_auc": res.best_val_auc,
            "stopped_early": res.stopped_early,
            "resumed_from_epoch": res.resumed_from_epoch,
            "train_seconds": round(res.seconds, 1),
            "model_dir": res.model_dir,
            "test_patients_seen_in_training": overlap,
            "metrics": metrics,
        }
    report = {
        "test": test_spec,
        "n_test": len(test),
        "model": model_used,
        "weights": weights,
        "image_size": image_size,
        "policy": policy,
        "scheduler": scheduler,
        "seed": seed,
        "epochs": epochs,
        "device": dev,
        "settings": results,
        "seconds": round(time.time() - started, 1),
    }
    if not keep_replicates:
        report["paired"] = paired_vs_real(results)
    report["table"] = side_by_side(results, report.get("paired"))
    notes = [
        f"{n}: {r['test_patients_seen_in_training']} test patient(s) also appear in its training data"
        for n, r in results.items()
        if r["test_patients_seen_in_training"]
    ]
    if notes:
        report["notes"] = notes
    return report


def _swapped(swap: Swap, get, seed: int, notes: list[str]) -> list[Preloaded]:
    """The real sets with ``swap.fraction`` of their trainable rows replaced by as many synthetic rows (seeded)."""
    rng = np.random.default_rng(seed)
    real = [get(s) for s in swap.real]
    syn = [get(s) for s in swap.synthetic]
    trainable = [np.flatnonzero(~np.isin(p.splits, list(TEST_SPLIT_NAMES))) for p in real]
    n_real = sum(len(t) for t in trainable)
    n_swap = round(n_real * swap.fraction)
    drop = set(rng.choice(n_real, size=n_swap, replace=False).tolist()) if n_swap else set()
    kept, offset = [], 0
    for p, rows in zip(real, trainable, strict=True):
        keep = [r for j, r in enumerate(rows.tolist()) if offset + j not in drop]
        offset += len(rows)
        kept.append(p.subset(np.asarray(keep, dtype=np.int64)))
    pool = [(i, r) for i, p in enumerate(syn) for r in range(len(p))]
    take = min(n_swap, len(pool))
    picked = [pool[k] for k in sorted(rng.choice(len(pool), size=take, replace=False).tolist())] if take else []
    added = [syn[i].subset(np.asarray([r for j, r in picked if j == i], dtype=np.int64)) for i in range(len(syn))]
    notes.append(f"{n_swap} of {n_real} real training images swapped for {take} synthetic ones"
                 + ("" if take == n_swap else f" (only {len(pool)} synthetic images exist)") + f" (seed {seed})")
    return [*kept, *[a for a in added if len(a)]]


def _patient_overlap(parts: Sequence[Preloaded], test: Preloaded) -> int:
    test_patients = {g for g in test.groups.tolist() if g.startswith("patient:")}
    train_patients = {  # test-split rows of a training set are never trained on (see train.py)
        g for p in parts for g, split in zip(p.groups.tolist(), p.splits.tolist(), strict=True)
        if g.startswith("patient:") and split not in TEST_SPLIT_NAMES
    }
    return len(test_patients & train_patients)


def paired_vs_real(results: Mapping[str, dict]) -> dict:
    """Each setting's macro AUC minus the real setting's, with a 95% interval from the same test resamples (paired:
    both models scored on each resample), then the replicates are dropped from ``results`` (they are not saved).
    {} without a real setting or replicates. An interval that holds 0 says the test set cannot tell them apart."""
    from ..metrics.classification import paired_difference

    reps = {n: r["metrics"].pop("_auc_replicates", None) for n, r in results.items()}
    base = reps.get(REAL)
    if base is None:
        return {}
    out = {}
    for n, rep in reps.items():
        if n == REAL or rep is None or len(rep) != len(base):
            continue
        d = paired_difference(results[n]["metrics"]["macro_auc"], results[REAL]["metrics"]["macro_auc"], rep, base)
        out[n] = {"vs": REAL, "macro_auc_diff": d["diff"], "ci95": d["ci95"], "tells_apart": d["tells_apart"]}
    return out


def auc_line(per_setting: Mapping[str, dict], paired: Mapping[str, dict] | None = None) -> str:
    """One line: each setting's macro AUC with its 95% interval, and each minus real with its paired interval and
    whether the test set tells them apart (the summary the CLI prints)."""
    def num(v) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"

    parts = []
    for n, r in per_setting.items():
        m, ci = r["metrics"], r["metrics"].get("macro_auc_ci95")
        parts.append(f"{n} {num(m['macro_auc'])}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
    boot = next((r["metrics"]["macro_auc_bootstrap"] for r in per_setting.values()
                 if "macro_auc_bootstrap" in r["metrics"]), None)
    line = "macro AUC" + (f" (95% CI, {boot['replicates']} resamples of the test {boot['unit']}s)" if boot else "")
    line += ": " + ", ".join(parts)
    from ..metrics.classification import paired_text

    for n, d in (paired or {}).items():
        line += "; " + paired_text(n, d["vs"], d["macro_auc_diff"], d["ci95"], d["tells_apart"])
    return line


def side_by_side(results: Mapping[str, dict], paired: Mapping[str, dict] | None = None) -> list[dict]:
    """Rows {metric, <setting>: value...}: the summary metrics (the macro AUC with its 95% interval, and minus the
    real setting's with its paired interval), then AUC per class."""
    rows = [{"metric": label, **{n: r["metrics"][key] for n, r in results.items()}} for label, key in METRIC_ROWS]
    from ..metrics.classification import interval_rows

    ci = {n: r["metrics"].get("macro_auc_ci95") for n, r in results.items()}
    rows[1:1] = interval_rows("macro AUC", list(results), ci, paired, "macro_auc_diff", REAL)
    classes: list[str] = []
    for r in results.values():
        classes += [c for c in r["metrics"]["per_class_auc"] if c not in classes]
    for c in classes:
        rows.append({"metric": auc_label(c, results),
                     **{n: r["metrics"]["per_class_auc"].get(c) for n, r in results.items()}})
    return rows


MIN_TEST_POSITIVES = 10
"""A per-class AUC from fewer positive test images than this is labelled as unreliable where it is shown."""


def auc_label(name: str, results: Mapping[str, dict]) -> str:
    """'AUC Edema', or 'AUC Edema (6 test positives: unreliable)' below :data:`MIN_TEST_POSITIVES` (one AUC
    step is then 1/6 of the positives: an AUC 0.9 on 2 positives says little)."""
    counts = [r["metrics"].get("positives", {}).get(name) for r in results.values()]
    pos = min((int(c) for c in counts if c is not None), default=None)
    if pos is None or pos >= MIN_TEST_POSITIVES:
        return f"AUC {name}"
    return f"AUC {name} ({pos} test positive{'s' if pos != 1 else ''}: unreliable)"


def format_table(report: Mapping[str, Any]) -> str:
    """The side-by-side table as Markdown."""
    names = list(report["settings"])
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in report["table"]:
        cells = []
        for n in names:
            v = row.get(n)
            cells.append("—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}")
        lines.append(f"| {row['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
