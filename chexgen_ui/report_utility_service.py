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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from evaluators.errors import InputError

from .services import Progress, Studio
from .utility_service import display_table, split_specs

MODEL = "captioner"
DEFAULT_EPOCHS = 3
MAX_EPOCHS, PUBLIC_MAX_EPOCHS = 50, 5
SEED = 0
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
    from evaluators.runs.utility import baseline_dir as engine_dir

    return engine_dir("report_utility", reference, [MODEL, f"e{epochs}", SEED])


def run_report_job(studio: Studio, synthetic: Any, *, epochs: int = DEFAULT_EPOCHS, session: str | None = None,
                   source: str | None = None, progress: Progress | None = None, meteor: bool = True) -> ReportRun:
    """Train the captioner on ``synthetic`` (images + prompts) and on the reference's train split (cached), test
    both on the reference's test split (:func:`evaluators.runs.report_utility.run`); saved as kind
    'report-utility' and as ``report_utility.json``. ``meteor=False`` skips METEOR (a Java process, about 10 s)."""
    from evaluators.runs import report_utility as job
    from evaluators.runs import run_folder, save

    limit = PUBLIC_MAX_EPOCHS if studio.public else MAX_EPOCHS
    try:
        epochs = int(epochs)
    except (TypeError, ValueError):
        raise InputError(f"Report-utility epochs must be a whole number (got {epochs!r}).") from None
    if not 1 <= epochs <= limit:
        raise InputError(f"Report-utility epochs must be between 1 and {limit} (got {epochs}).")
    job.check_pairs(synthetic)
    _, test_spec = split_specs(studio.reference)
    config = job.ReportUtilityConfig(model=MODEL, epochs=epochs, seed=SEED, meteor=meteor)
    with studio.partial_on_failure("report-utility", synthetic, model=source, session=session,
                                   settings=config.settings(test_spec), note=job.PARTIAL_NOTE):
        out = run_folder("report-utility", session)
        run = job.run(studio.ctx, synthetic, config, run_dir=out, source=source, progress=progress_adapter(progress))
    saved = save(run, json_path=out / "report_utility.json", store=studio.store(), model=source or "upload",
                 synthetic=getattr(synthetic, "name", None), reference=studio.reference, session=session)
    result = run.data
    return ReportRun(result, display_table(result["table"], list(result["per_setting"])), saved.json_path,
                     saved.run_id)


def summary(run: ReportRun) -> str:
    from evaluators.reportgen.run import paired_line

    res = run.result
    f1 = {n: v["clinical_f1_macro"] for n, v in res["report_utility"].items()}
    fmt = ", ".join(f"{n} {'n/a' if v is None else f'{v:.3f}'}" for n, v in f1.items())
    n_syn = res["per_setting"].get("synthetic", {}).get("n_train")
    return (f"Report utility: {res['model_label']}, {res['image_size']} px; trained on {n_syn} synthetic "
            f"image/prompt pair(s), tested on {res['n_test']} real test image(s) of `{res['test']}`. Clinical F1 "
            f"macro (rule labeler): {fmt}. " + (f"Clinical F1 micro, 95% CI: {paired_line(res['paired'])}. "
                                                if res.get("paired") else "") + f"CheXbert: {res['chexbert']}. {res['seconds']:.0f} s; saved as run "
            f"#{run.run_id}." + "".join(f"\n\n- {n}" for n in res.get("notes") or []))


__all__ = ["ReportRun", "run_report_job", "summary"]
