"""The app's Report utility: a report generator trained on the synthetic set's images and prompts, tested on the
reference's real test split beside one trained on the reference's real training split.

A thin layer over :func:`evaluators.reportgen.run.run_report_utility` (``python -m evaluators report-utility``),
following the Utility axis (:mod:`chexgen_ui.utility_service`): the real-trained generator and the "most frequent
report" baseline depend only on the reference and the settings, so they live in a stable folder under
``CHEXGEN_HOME/report_utility/baselines`` and are trained once; the synthetic setting trains in a per-run folder
under ``runs/<session>/``. A failed or cancelled job leaves a ``partial`` row in the results store. Nothing here
imports Gradio.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from evaluators.errors import InputError
from evaluators.settings import subdir
from evaluators.store import finite

from .services import Progress, Studio, session_folder
from .utility_service import _lock_for, display_table, split_specs

MODEL = "captioner"
DEFAULT_EPOCHS = 3
MAX_EPOCHS, PUBLIC_MAX_EPOCHS = 50, 5
SEED = 0
PARTIAL_NOTE = ("stopped before the end; finished epochs of the real-trained generator are checkpointed and a rerun "
                "resumes from them")


@dataclass
class ReportRun:
    result: dict
    table: pd.DataFrame
    json_path: Path
    run_id: int | None


def progress_adapter(report: Progress | None):
    if report is None:
        return None
    current = {"setting": ""}

    def on(ev: dict) -> None:
        stage = ev.get("stage")
        if stage == "setting":
            current["setting"] = str(ev.get("setting", ""))
            report(0, 0, f"report utility: training on {current['setting']} pairs")
        elif stage == "preload":
            report(int(ev["done"]), int(ev["total"]), f"report utility: loading {ev.get('set', 'images')}")
        elif stage == "batch":
            steps, epochs = int(ev["steps"]), int(ev["epochs"])
            report((int(ev["epoch"]) - 1) * steps + int(ev["step"]), epochs * steps,
                   f"report utility · {current['setting']}: epoch {ev['epoch']}/{epochs}, loss {float(ev['loss']):.3f}")
        elif stage == "generate":
            report(0, 0, f"report utility · {ev.get('setting')}: writing {ev.get('n')} test reports")

    return on


def baseline_dir(reference: str, *, epochs: int) -> Path:
    from evaluators.imagesets import parse_set_spec

    base, split = parse_set_spec(reference)
    resolved = base if base.split("@")[0] == "demo" else str(Path(base).expanduser().resolve())
    digest = hashlib.sha256(json.dumps([resolved, split, MODEL, epochs, SEED]).encode()).hexdigest()[:12]
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in Path(base).name)[:40] or "reference"
    return subdir("report_utility") / "baselines" / f"{name}-{split or 'all'}-{MODEL}-e{epochs}-{digest}"


def run_report_job(studio: Studio, synthetic: Any, *, epochs: int = DEFAULT_EPOCHS, session: str | None = None,
                   source: str | None = None, progress: Progress | None = None, meteor: bool = True) -> ReportRun:
    """Train the captioner on ``synthetic`` (images + prompts) and on the reference's train split (cached), test
    both on the reference's test split; saved as kind 'report-utility' and as ``report_utility.json``.
    ``meteor=False`` skips METEOR (it starts a Java process, about 10 s)."""
    from evaluators.imagesets import load_image_set
    from evaluators.reportgen.run import BASELINE, REAL, SYNTHETIC, run_report_utility, side_by_side

    limit = PUBLIC_MAX_EPOCHS if studio.public else MAX_EPOCHS
    try:
        epochs = int(epochs)
    except (TypeError, ValueError):
        raise InputError(f"Report-utility epochs must be a whole number (got {epochs!r}).") from None
    if not 1 <= epochs <= limit:
        raise InputError(f"Report-utility epochs must be between 1 and {limit} (got {epochs}).")
    prompts = [p for p in getattr(synthetic, "table", pd.DataFrame({"prompt": []}))["prompt"].tolist()
               if isinstance(p, str) and p.strip()]
    if len(synthetic) < 2 or len(prompts) < len(synthetic):
        raise InputError(f"The synthetic set {getattr(synthetic, 'name', '')!r} needs at least 2 images, each with "
                         "its prompt: the report utility trains on (image, prompt) pairs. Upload a CSV with a "
                         "'prompt' column, or generate the set from a model.")
    real_spec, test_spec = split_specs(studio.reference)
    syn_key = f"synthetic:{getattr(synthetic, 'name', 'set')}"
    loaded: dict[str, Any] = {syn_key: synthetic}

    def loader(spec: str) -> Any:
        if spec not in loaded:
            loaded[spec] = studio.reference_set() if spec == studio.reference else load_image_set(spec)
        return loaded[spec]

    settings = {"model": MODEL, "epochs": epochs, "seed": SEED, "test": test_spec}
    common = dict(model=MODEL, epochs=epochs, seed=SEED, device=studio.device, show_bars=False, meteor=meteor,
                  progress=progress_adapter(progress), loader=loader)
    with studio.partial_on_failure("report-utility", synthetic, model=source, session=session, settings=settings,
                                   note=PARTIAL_NOTE):
        base = baseline_dir(studio.reference, epochs=epochs)
        with _lock_for(base):
            real = run_report_utility({REAL: [real_spec]}, test_spec, work_dir=base, **common)
        out = subdir("runs") / session_folder(session) / f"report-utility-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        syn = run_report_utility({SYNTHETIC: [syn_key]}, test_spec, work_dir=out / "work", baseline=False, **common)
    results = {REAL: real["settings"][REAL], SYNTHETIC: syn["settings"][SYNTHETIC],
               BASELINE: real["settings"][BASELINE]}
    result = finite({
        **{k: syn[k] for k in ("kind", "test", "n_test", "model", "model_label", "model_kind", "image_size", "seed",
                               "device", "labeler", "chexbert")},
        "synthetic": {"name": getattr(synthetic, "name", None), "n": len(synthetic), "source": source},
        "real_baseline": {"work_dir": str(base)},
        "settings": settings,
        "per_setting": results,
        "table": side_by_side(results),
        "report_utility": {**real["report_utility"], **syn["report_utility"]},
        "notes": [*real.get("notes", []), *syn.get("notes", [])],
        "seconds": round(real["seconds"] + syn["seconds"], 1),
        "cli": (f"python -m evaluators report-utility --train {real_spec} --synthetic "
                f"{getattr(synthetic, 'root', None) or 'SYNTHETIC_SET'} --test {test_spec} --model {MODEL} "
                f"--epochs {epochs} --seed {SEED} --out report_utility.json  (the CLI also trains real+synthetic)"),
    })
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "report_utility.json"
    json_path.write_text(json.dumps(result, indent=2, default=str))
    run_id = studio.store().save("report-utility", result, model=source or "upload",
                                 synthetic=getattr(synthetic, "name", None), reference=studio.reference,
                                 session=session, settings=settings)
    return ReportRun(result, display_table(result["table"], list(results)), json_path, run_id)


def summary(run: ReportRun) -> str:
    res = run.result
    f1 = {n: v["clinical_f1_macro"] for n, v in res["report_utility"].items()}
    fmt = ", ".join(f"{n} {'n/a' if v is None else f'{v:.3f}'}" for n, v in f1.items())
    n_syn = res["per_setting"].get("synthetic", {}).get("n_train")
    return (f"Report utility: {res['model_label']}, {res['image_size']} px; trained on {n_syn} synthetic "
            f"image/prompt pair(s), tested on {res['n_test']} real test image(s) of `{res['test']}`. Clinical F1 "
            f"macro (rule labeler): {fmt}. CheXbert: {res['chexbert']}. {res['seconds']:.0f} s; saved as run "
            f"#{run.run_id}." + "".join(f"\n\n- {n}" for n in res.get("notes") or []))


__all__ = ["ReportRun", "run_report_job", "summary"]
