"""The app's Utility axis: a classifier trained on the synthetic set, tested on the reference's real test split.

A thin layer over :func:`evaluators.utility.run.run_utility` (``python -m evaluators utility``). The
real-trained baseline depends only on the reference and the training settings, so it lives in a stable
folder under ``CHEXGEN_HOME/utility/baselines`` and is trained once: later runs resume its finished
checkpoint and only evaluate it. The synthetic (and optional real + synthetic) settings train in a per-run
folder under ``runs/<session>/``. A failed or cancelled job leaves a ``partial`` row in the results store.
Nothing here imports Gradio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluators import limits
from evaluators.errors import InputError
from evaluators.runs.utility import (  # noqa: F401
    PARTIAL_NOTE,
    UtilityConfig,
    baseline_for,
    lock_for,
    split_specs,
)

from .services import Progress, Studio, env_int

log = logging.getLogger("chexgen_ui")

# Defaults sized for a CPU: resnet18 at 64 px trains a few hundred images per epoch in seconds.
DEFAULT_EPOCHS = 3
DEFAULT_IMAGE_SIZE = 64
MAX_EPOCHS = 200
MAX_IMAGE_SIZE = 512
MIN_IMAGE_SIZE = 16
# Public mode (a Space, or --public): each overridable by an environment variable.
PUBLIC_MAX_EPOCHS = 5  # CHEXGEN_PUBLIC_MAX_UTILITY_EPOCHS
PUBLIC_MAX_IMAGE_SIZE = 128  # CHEXGEN_PUBLIC_MAX_UTILITY_IMAGE_SIZE
PUBLIC_MODELS = ("resnet18", "resnet50", "densenet121", "efficientnet_b0")  # architectures a public user may pick
MODEL_CHOICES = PUBLIC_MODELS  # offered in the app's dropdown (local mode also accepts any timm name)
BATCH_SIZE = 32
SEED = 0
POLICY = "zeros"
SCHEDULER = "cosine"

@dataclass(frozen=True)
class UtilityLimits:
    """Largest epochs and image size a utility job may ask for (tighter in public mode)."""

    max_epochs: int = MAX_EPOCHS
    max_image_size: int = MAX_IMAGE_SIZE
    models: tuple[str, ...] | None = None  # None: any timm architecture

    @classmethod
    def for_mode(cls, public: bool) -> UtilityLimits:
        if not public:
            return cls()
        return cls(
            max_epochs=min(MAX_EPOCHS, env_int("CHEXGEN_PUBLIC_MAX_UTILITY_EPOCHS", PUBLIC_MAX_EPOCHS)),
            max_image_size=min(MAX_IMAGE_SIZE, env_int("CHEXGEN_PUBLIC_MAX_UTILITY_IMAGE_SIZE",
                                                        PUBLIC_MAX_IMAGE_SIZE)),
            models=PUBLIC_MODELS,
        )


@dataclass
class UtilityRun:
    """A finished utility job: the report, the side-by-side table (rounded for display), files, store id."""

    result: dict
    table: pd.DataFrame
    json_path: Path
    run_id: int | None
    real_reused: bool  # the real baseline came from an earlier run's finished checkpoint (not retrained)


def default_model(device: str) -> str:
    """The engine's default classifier for ``device`` (resnet18 on a CPU, resnet50 on a GPU)."""
    from evaluators.utility.models import default_model as engine_default

    return engine_default(device)


def check_settings(studio: Studio, *, model: str | None, epochs: int, image_size: int) -> tuple[str, int, int]:
    """(model, epochs, image size) after checking them against the app's limits; InputError names the limit."""
    lim = UtilityLimits.for_mode(studio.public)
    try:
        epochs, image_size = int(epochs), int(image_size)
    except (TypeError, ValueError):
        raise InputError(f"Epochs and image size must be whole numbers (got {epochs!r}, {image_size!r}).") from None
    if not 1 <= epochs <= lim.max_epochs:
        raise InputError(f"Utility epochs must be between 1 and {lim.max_epochs} (got {epochs})"
                         + (" in this public app (CHEXGEN_PUBLIC_MAX_UTILITY_EPOCHS)." if studio.public else "."))
    if not MIN_IMAGE_SIZE <= image_size <= lim.max_image_size:
        raise InputError(f"Utility image size must be between {MIN_IMAGE_SIZE} and {lim.max_image_size} pixels "
                         f"(got {image_size})"
                         + (" in this public app (CHEXGEN_PUBLIC_MAX_UTILITY_IMAGE_SIZE)." if studio.public else "."))
    epochs = limits.check("epochs", epochs, studio.public)
    image_size = limits.check("image_size", image_size, studio.public)
    name = (model or "").strip() or default_model(studio.device)
    if lim.models is not None and name not in lim.models:
        raise InputError(f"Classifier {name!r} is not offered in this public app; choose one of "
                         f"{', '.join(lim.models)}.")
    return name, epochs, image_size


def baseline_dir(reference: str, *, model: str, epochs: int, image_size: int) -> Path:
    """The stable folder of the real-trained baseline: one per reference and training settings."""
    return baseline_for(reference, _config(model, epochs, image_size, False))


def _config(model: str, epochs: int, image_size: int, mixed: bool, swap: bool = False) -> UtilityConfig:
    return UtilityConfig(model=model, epochs=epochs, image_size=image_size, mixed=bool(mixed), swap=bool(swap),
                         batch_size=BATCH_SIZE, seed=SEED, policy=POLICY, scheduler=SCHEDULER)


def progress_adapter(report: Progress | None) -> Callable[[dict], None] | None:
    """The engine's progress dicts -> the app's ``(done, total, desc)``; called every batch, so a callback
    that raises (the app's Cancel) stops training within one batch."""
    if report is None:
        return None
    current = {"setting": ""}

    def on(ev: dict) -> None:
        stage, name = ev.get("stage"), current["setting"]
        if stage == "setting":
            current["setting"] = str(ev.get("setting", ""))
            report(0, 0, f"utility: training on {current['setting']} images")
        elif stage == "preload":
            report(int(ev["done"]), int(ev["total"]), f"utility: loading {ev.get('set', 'images')}")
        elif stage == "batch":
            steps, epochs = int(ev["steps"]), int(ev["epochs"])
            report((int(ev["epoch"]) - 1) * steps + int(ev["step"]), epochs * steps,
                   f"utility · {name}: epoch {ev['epoch']}/{epochs}, loss {float(ev['loss']):.3f}")
        elif stage == "epoch":
            report(int(ev["epoch"]), int(ev["epochs"]), f"utility · {name}: epoch {ev['epoch']} done")

    return on


def display_table(rows: list[dict], settings: list[str]) -> pd.DataFrame:
    """The side-by-side rows as a DataFrame (metric, then one column per setting), rounded to 4 decimals."""
    df = pd.DataFrame(rows, columns=["metric", *settings])
    for c in settings:
        df[c] = [None if v is None or not np.isfinite(v) else round(float(v), 4)
                 for v in pd.to_numeric(df[c], errors="coerce").astype(float)]
    return df


def run_utility_job(studio: Studio, synthetic: Any, *, model: str | None = None, epochs: int = DEFAULT_EPOCHS,
                    image_size: int = DEFAULT_IMAGE_SIZE, mixed: bool = False, swap: bool = False,
                    session: str | None = None,
                    source: str | None = None, progress: Progress | None = None) -> UtilityRun:
    """Train on ``synthetic`` (and the cached real baseline), test both on the reference's test split
    (:func:`evaluators.runs.utility.run`); saved as kind 'utility' and as ``utility.json``.

    ``model``: a timm architecture (default: the engine's default for the device). ``mixed`` adds
    CheXGenBench's real + synthetic setting. ``source`` names the synthetic set's origin in the store.
    """
    from evaluators.runs import run_folder, save
    from evaluators.runs import utility as job

    name, epochs, image_size = check_settings(studio, model=model, epochs=epochs, image_size=image_size)
    studio.quota.check(session, 0, "This utility job")
    job.check_trainable(synthetic)
    config = _config(name, epochs, image_size, mixed, swap)
    _, test_spec = split_specs(studio.reference)
    with studio.partial_on_failure("utility", synthetic, model=source, session=session,
                                   settings=config.settings(test_spec), note=job.PARTIAL_NOTE):
        out = run_folder("utility", session)
        run = job.run(studio.ctx, synthetic, config, run_dir=out, source=source, progress=progress_adapter(progress),
                      keep_checkpoints=not studio.public)
    saved = save(run, json_path=out / "utility.json", store=studio.store(), model=source or "upload",
                 synthetic=getattr(synthetic, "name", None), reference=studio.reference, session=session)
    result = run.data
    return UtilityRun(result, display_table(result["table"], list(result["per_setting"])), saved.json_path,
                      saved.run_id, result["real_baseline"]["reused"])


def summary(run: UtilityRun) -> str:
    """One paragraph for the page: what trained on what, the headline AUCs, reuse, and the store id."""
    from evaluators.utility.run import auc_line

    res = run.result
    syn = res["per_setting"].get("synthetic", {})
    n_syn = f"{syn.get('n_train')}" + (f" (+{syn['n_val']} held out for validation)" if syn.get("n_val") else "")
    base = "reused (trained earlier with the same settings)" if run.real_reused else "trained now and cached"
    return (f"Utility: {res['model']} ({res['weights']}), {res['image_size']} px, {res['epochs']} epoch(s); "
            f"trained on {n_syn} synthetic image(s), tested on {res['n_test']} real test image(s) of "
            f"`{res['test']}`. {auc_line(res['per_setting'], res.get('paired'))}. Real baseline {base}. {res['seconds']:.0f} s; saved as run "
            f"#{run.run_id}." + "".join(f"\n\n- {n}" for n in res.get("notes") or []))


__all__ = ["UtilityLimits", "UtilityRun", "check_settings", "default_model", "run_utility_job", "summary"]
