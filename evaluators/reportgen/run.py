"""The report-generation utility: train on real, synthetic and real + synthetic image/report pairs, test on real.

CheXGenBench's second utility test asks whether a report generator trained on synthetic X-rays (each with the
prompt it was generated from as its report) writes correct reports for real ones. Every setting trains the
same model entry with the same seed and is tested on the same real test split; a "most frequent report"
baseline (the training set's most common report written for every test image) anchors the scores.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UnavailableError
from ..utility.data import TEST_SPLIT_NAMES, split_train_val
from ..utility.run import MIXED, REAL, SYNTHETIC, _patient_overlap, _slug, standard_settings
from .entry import ReportModelEntry
from .registry import availability, get_entry
from .scores import MeteorScorer, score_reports
from .text import normalise
from .train import Pairs, concat_pairs, generate, load_model, load_pairs, report_labels, train_captioner

BASELINE = "most frequent report"
METRIC_ROWS = (
    ("clinical F1 macro", ("clinical", "f1_macro")),
    ("clinical F1 micro", ("clinical", "f1_micro")),
    ("CheXbert F1 macro", ("clinical_chexbert", "f1_macro")),
    ("CheXbert F1 micro", ("clinical_chexbert", "f1_micro")),
    ("BLEU-1", ("bleu1",)),
    ("BLEU-4", ("bleu4",)),
    ("ROUGE-L", ("rougeL",)),
    ("METEOR", ("meteor",)),
    ("copies of a training report", ("copy_rate",)),
    ("distinct reports", ("distinct_reports",)),
)
__all__ = ["BASELINE", "MIXED", "REAL", "SYNTHETIC", "format_table", "paired_line", "paired_vs_real",
           "run_report_utility", "side_by_side", "standard_settings"]


def _load(spec: str) -> Any:
    from ..imagesets import load_image_set

    return load_image_set(spec)


def most_frequent_report(reports: Sequence[str]) -> str:
    """The most common report (compared normalised; ties: first seen), as first written."""
    norm = [normalise(r) for r in reports]
    counts = Counter(norm)
    best = max(counts.values())
    for r, n in zip(reports, norm, strict=True):
        if counts[n] == best:
            return r
    raise InputError("No training reports.")


def _trainable_rows(p: Pairs) -> Pairs:
    keep = np.flatnonzero(~np.isin(p.data.splits, TEST_SPLIT_NAMES))
    return p.subset(keep)


def _value(metrics: Mapping[str, Any], path: Sequence[str]) -> Any:
    v: Any = metrics
    for k in path:
        if not isinstance(v, Mapping) or k not in v:
            return None
        v = v[k]
    return v


def paired_vs_real(results: Mapping[str, Mapping[str, Any]]) -> dict:
    """Each setting's clinical F1 micro minus the real setting's, with the 95% interval of the paired differences
    (the same resamples of the test reports); the replicates are then dropped from ``results`` (not saved)."""
    from ..metrics.classification import paired_difference

    reps = {n: r["scores"]["clinical"].pop("_f1_micro_replicates", None) for n, r in results.items()}
    if reps.get(REAL) is None:
        return {}
    real = results[REAL]["scores"]["clinical"]["f1_micro"]
    return {n: {"vs": REAL, **{("f1_micro_diff" if k == "diff" else k): v for k, v in paired_difference(
                r["scores"]["clinical"]["f1_micro"], real, reps[n], reps[REAL]).items()}}
            for n, r in results.items() if n != REAL and reps.get(n) is not None}


def paired_line(paired: Mapping[str, dict]) -> str:
    """Clinical F1 micro of each setting minus real's, with the paired interval (the CLI's and the app's line)."""
    from ..metrics.classification import paired_text

    return "; ".join(paired_text(n, d["vs"], d["f1_micro_diff"], d["ci95"], d["tells_apart"])
                     for n, d in paired.items())


def side_by_side(results: Mapping[str, Mapping[str, Any]], paired: Mapping[str, dict] | None = None) -> list[dict]:
    """Rows {metric, <setting>: value}: the summary scores (clinical F1 micro with its 95% interval, and minus the
    real setting's with its paired interval), then clinical F1 per label."""
    rows = [{"metric": label, **{n: _value(r["scores"], path) for n, r in results.items()}}
            for label, path in METRIC_ROWS]
    from ..metrics.classification import interval_rows

    ci = {n: r["scores"]["clinical"].get("f1_micro_ci95") for n, r in results.items()}
    rows[2:2] = interval_rows("clinical F1 micro", list(results), ci, paired, "f1_micro_diff", REAL)
    rows = [r for r in rows if any(r[n] is not None for n in results)]
    labels: list[str] = []
    for r in results.values():
        labels += [c for c in r["scores"]["clinical"]["per_label_f1"] if c not in labels]
    for c in labels:
        rows.append({"metric": f"F1 {c}", **{n: r["scores"]["clinical"]["per_label_f1"].get(c)
                                           for n, r in results.items()}})
    return rows


def format_table(report: Mapping[str, Any]) -> str:
    names = list(report["table"][0].keys())[1:] if report["table"] else []
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for row in report["table"]:
        cells = []
        for n in names:
            v = row.get(n)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("—")
            else:
                cells.append(f"{v:d}" if isinstance(v, int) else f"{v:.3f}")
        lines.append(f"| {row['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _write_generated(path: Path, test: Pairs, paths: Sequence[str], generated: Sequence[str]) -> None:
    import pandas as pd

    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"path": list(paths), "reference": test.reports.tolist(), "generated": list(generated)}).to_csv(
        path, index=False)


def run_report_utility(
    train_specs: Sequence[str] | Mapping[str, Sequence[str]],
    test_spec: str,
    *,
    model: str = "captioner",
    models_files: Sequence[str] = (),
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    image_size: int | None = None,
    patience: int | None = None,
    seed: int = 0,
    device: str | None = None,
    work_dir: str | os.PathLike | None = None,
    max_train_samples: int | None = None,
    max_steps: int | None = None,
    resume: bool = True,
    meteor: bool = True,
    chexbert: str | None = None,
    baseline: bool = True,
    progress: Callable[[dict], None] | None = None,
    show_bars: bool = True,
    loader: Callable[[str], Any] | None = None,
    keep_replicates: bool = False,
) -> dict:
    """Train one report generator per setting, generate a report for every real test image, score them all.

    ``train_specs``: image-set specs (one setting 'train') or {setting: [specs]} (see :func:`standard_settings`).
    ``model``: a report-model entry (``captioner``, ``llava-rad``, or one from ``models_files``). Checkpoints go
    to ``work_dir/<setting>/``; a rerun resumes (``resume=False`` restarts). ``chexbert``: CheXbert weights file
    (else ``$CHEXGEN_CHEXBERT_WEIGHTS``); without it, its F1 is reported unavailable with the reason.
    """
    from ..settings import select_device, subdir
    from .chexbert import try_load

    started = time.time()
    settings = {"train": list(train_specs)} if not isinstance(train_specs, Mapping) else {
        k: list(v) for k, v in train_specs.items()}
    if not settings or any(not v for v in settings.values()):
        raise InputError("Every setting needs at least one training set.")
    entry = get_entry(model, models_files)
    dev = select_device(device)
    ok, why = availability(entry, dev)
    if not ok:
        raise UnavailableError(f"Report model {entry.name!r} is unavailable: {why}. {entry.how_to_provide}".strip())
    size = int(image_size or entry.get("image_size", 64))
    load = loader or _load
    root = Path(work_dir).expanduser() if work_dir else subdir("report_utility") / _slug(f"{test_spec}_{entry.name}_{seed}")
    cache: dict[str, Pairs] = {}
    paths_of: dict[str, list[str]] = {}

    def get(spec: str) -> Pairs:
        if spec not in cache:
            s = load(spec)
            cache[spec] = load_pairs(s, size, name=spec, progress=progress, show_bar=show_bars)
            paths_of[spec] = list(getattr(s, "paths", [""] * len(s)))
        return cache[spec]

    test = get(test_spec)
    ref_labels = report_labels(test.reports.tolist())
    chex, chex_reason = try_load(chexbert, dev)
    meteor_fn = MeteorScorer() if meteor else None  # one Java process for every setting
    from ..metrics.classification import BOOTSTRAP_REPLICATES, bootstrap_weights

    weights = bootstrap_weights(len(test), test.data.groups, BOOTSTRAP_REPLICATES, seed=0)  # same for every setting
    common = dict(chexbert=chex, chexbert_reason=chex_reason, ref_labels=ref_labels, with_meteor=meteor,
                  meteor_fn=meteor_fn, weights=weights)
    try:
        results = _settings(settings, test, get, paths_of[test_spec], entry, common, root=root, size=size, seed=seed,
                            device=dev, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                            max_train_samples=max_train_samples, max_steps=max_steps, resume=resume,
                            progress=progress, show_bars=show_bars, baseline=baseline)
    finally:
        if meteor_fn is not None:
            meteor_fn.close()

    report = {
        "kind": "report-utility",
        "test": test_spec,
        "n_test": len(test),
        "model": entry.name,
        "model_label": entry.label,
        "model_kind": entry.kind,
        "image_size": size,
        "seed": seed,
        "device": dev,
        "labeler": "rules (evaluators.labeler)" + (", CheXbert" if chex is not None else ""),
        "chexbert": chex_reason,
        "settings": results,
        # what the results store lists per run (evaluators.store.flatten_metrics)
        "report_utility": {n: {"clinical_f1_macro": r["scores"]["clinical"]["f1_macro"],
                               "clinical_f1_micro": r["scores"]["clinical"]["f1_micro"],
                               "bleu4": r["scores"]["bleu4"], "rougeL": r["scores"]["rougeL"],
                               "meteor": r["scores"]["meteor"], "copy_rate": r["scores"]["copy_rate"]}
                           for n, r in results.items()},
        "seconds": round(time.time() - started, 1),
    }
    if not keep_replicates:
        report["paired"] = paired_vs_real(results)
    report["table"] = side_by_side(results, report.get("paired"))
    notes = [f"{n}: {r['test_patients_seen_in_training']} test patient(s) also appear in its training data"
             for n, r in results.items() if r.get("test_patients_seen_in_training")]
    if notes:
        report["notes"] = notes
    return report


def _settings(settings: Mapping[str, list[str]], test: Pairs, get: Callable[[str], Pairs], test_paths: Sequence[str],
              entry: ReportModelEntry, common: dict, *, root: Path, size: int, seed: int, device: str,
              epochs: int | None, batch_size: int | None, lr: float | None, patience: int | None,
              max_train_samples: int | None, max_steps: int | None, resume: bool, progress: Any, show_bars: bool,
              baseline: bool) -> dict[str, dict]:
    """Train, generate and score every setting, then the most-frequent-report baseline."""
    results: dict[str, dict] = {}
    for name, specs in settings.items():
        if progress is not None:
            progress({"stage": "setting", "setting": name, "train": specs})
        parts = [get(s) for s in specs]
        t0 = time.time()
        info = _train(entry, parts, out_dir=root / _slug(name), size=size, seed=seed, device=device, epochs=epochs,
                      batch_size=batch_size, lr=lr, patience=patience, max_train_samples=max_train_samples,
                      max_steps=max_steps, resume=resume, progress=progress, show_bars=show_bars)
        t1 = time.time()
        if progress is not None:
            progress({"stage": "generate", "setting": name, "n": len(test)})
        generated = info.pop("generate")(test.data.images)
        gen_seconds = time.time() - t1
        training_reports = concat_pairs([_trainable_rows(p) for p in parts], name).reports.tolist()
        scores = score_reports(generated, test.reports.tolist(), training_reports=training_reports, **common)
        csv = root / _slug(name) / "generated.csv"
        _write_generated(csv, test, test_paths, generated)
        results[name] = {
            "train": specs,
            **info,
            "train_seconds": round(t1 - t0, 1),
            "generate_seconds": round(gen_seconds, 1),
            "test_patients_seen_in_training": _patient_overlap([p.data for p in parts], test.data),
            "generated_csv": str(csv),
            "examples": [{"reference": r, "generated": g} for r, g in zip(test.reports[:3], generated[:3])],
            "scores": scores,
        }
    if baseline:
        first = next(iter(settings.values()))
        pool = concat_pairs([_trainable_rows(get(s)) for s in (settings.get(REAL) or first)], "baseline").reports
        text = most_frequent_report(pool.tolist())
        results[BASELINE] = {
            "train": list(settings.get(REAL) or first),
            "report": text,
            "scores": score_reports([text] * len(test), test.reports.tolist(), training_reports=pool.tolist(),
                                    **common),
        }
    return results


def _train(entry: ReportModelEntry, parts: Sequence[Pairs], *, out_dir: Path, size: int, seed: int, device: str,
           epochs: int | None, batch_size: int | None, lr: float | None, patience: int | None,
           max_train_samples: int | None, max_steps: int | None, resume: bool, progress: Any,
           show_bars: bool) -> dict[str, Any]:
    """Train one setting; a dict of what to report plus ``generate``: uint8 images -> reports."""
    if entry.kind == "captioner":
        arch = {k: entry.get(k) for k in ("encoder", "d_model", "layers", "heads", "ff", "max_len", "dropout")
                if entry.get(k) is not None}
        res = train_captioner(
            parts, architecture=arch, model_name=entry.name, epochs=int(epochs or entry.get("epochs", 15)),
            image_size=size, batch_size=int(batch_size or entry.get("batch_size", 32)),
            lr=float(lr or entry.get("lr", 1e-3)), label_loss=float(entry.get("label_loss", 1.0)), seed=seed,
            out_dir=out_dir, device=device, patience=int(patience or entry.get("patience", 4)),
            max_train_samples=max_train_samples, resume=resume, progress=progress, show_bars=show_bars)
        net, vocab, _ = load_model(res.model_dir, device)
        info = {k: v for k, v in res.to_dict().items() if k not in ("config",)}
        info["generate"] = lambda images: generate(net, images, vocab, device=device)
        return info
    from .vlm import finetune_llava, generate_llava, load_finetuned

    train_parts, val_parts = [], []
    for i, p in enumerate(parts):
        tr, va, _ = split_train_val(p.data, val_fraction=0.1, seed=seed + i)
        train_parts.append(p.subset(tr))
        val_parts.append(p.subset(va))
    tr_all, va_all = concat_pairs(train_parts, "train"), concat_pairs(val_parts, "validation")
    if max_train_samples is not None and max_train_samples < len(tr_all):
        tr_all = tr_all.subset(np.arange(max_train_samples))
    summary = finetune_llava(entry, tr_all.data.images, tr_all.reports.tolist(), va_all.data.images,
                             va_all.reports.tolist(), out_dir=out_dir, device=device, seed=seed, epochs=epochs,
                             batch_size=batch_size, lr=lr, max_steps=max_steps, resume=resume, progress=progress)
    model, processor = load_finetuned(entry, summary["model_dir"], device)
    prompt = str(entry.get("prompt"))
    max_new = int(entry.get("max_new_tokens", 128))
    summary["generate"] = lambda images: generate_llava(model, processor, images, prompt=prompt,
                                                        max_new_tokens=max_new, device=device)
    return summary
