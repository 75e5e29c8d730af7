"""The app's Utility axis: a classifier trained on the synthetic set, tested on the reference's real test split.

A thin layer over :func:`evaluators.utility.run.run_utility` (``python -m evaluators utility``). The
real-trained baseline depends only on the reference and the training settings, so it lives in a stable
folder under ``CHEXGEN_HOME/utility/baselines`` and is trained once: later runs resume its finished
checkpoint and only evaluate it. The synthetic (and optional real + synthetic) settings train in a per-run
folder under ``runs/<session>/``. A failed or cancelled job leaves a ``partial`` row in the results store.
Nothing here imports Gradio.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evaluators import limits
from evaluators.errors import InputError
from evaluators.settings import subdir
from evaluators.store import finite

from .services import Progress, Studio, env_int, session_folder

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

PARTIAL_NOTE = ("stopped before the end; finished epochs of the real baseline are checkpointed and a rerun "
                "resumes from them")

_baseline_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


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


def split_specs(reference: str) -> tuple[str, str]:
    """(real training spec, real test spec) from the app's reference, e.g. 'demo@train' -> 'demo@test'."""
    from evaluators.imagesets import parse_set_spec

    base, split = parse_set_spec(reference)
    if split is not None and split.lower() in ("test", "testing"):
        raise InputError(f"The reference {reference!r} is a test split; the utility axis trains its real baseline "
                         "on the reference and tests on its 'test' split. Start the app with e.g. PATH@train.")
    return reference, f"{base}@test"


def baseline_dir(reference: str, *, model: str, epochs: int, image_size: int) -> Path:
    """The stable folder of the real-trained baseline: one per reference and training settings."""
    from evaluators.imagesets import parse_set_spec

    base, split = parse_set_spec(reference)
    resolved = base if base.split("@")[0] == "demo" else str(Path(base).expanduser().resolve())
    key = json.dumps([resolved, split, model, epochs, image_size, BATCH_SIZE, SEED, POLICY, SCHEDULER])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in Path(base).name)[:40] or "reference"
    return subdir("utility") / "baselines" / f"{name}-{split or 'all'}-{model}-{image_size}px-e{epochs}-{digest}"


def _lock_for(folder: Path) -> threading.Lock:
    with _locks_guard:
        return _baseline_locks.setdefault(str(folder), threading.Lock())


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


def _cli_hint(synthetic: Any, real: str, test: str, model: str, epochs: int, image_size: int, mixed: bool,
              work: Path) -> str:
    """The equivalent ``python -m evaluators utility`` command (the synthetic set named by its folder)."""
    root = getattr(synthetic, "root", None)
    syn = str(root) if root is not None else "SYNTHETIC_SET"
    cmd = (f"python -m evaluators utility --train {real} --synthetic {syn} --test {test} --model {model} "
           f"--epochs {epochs} --image-size {image_size} --batch-size {BATCH_SIZE} --seed {SEED} "
           f"--policy {POLICY} --scheduler {SCHEDULER} --work-dir {work} --out utility.json")
    return cmd + ("" if mixed else "  (the CLI also trains real+synthetic)")


def run_utility_job(studio: Studio, synthetic: Any, *, model: str | None = None, epochs: int = DEFAULT_EPOCHS,
                    image_size: int = DEFAULT_IMAGE_SIZE, mixed: bool = False, session: str | None = None,
                    source: str | None = None, progress: Progress | None = None) -> UtilityRun:
    """Train on ``synthetic`` (and the cached real baseline), test both on the reference's test split.

    ``model``: a timm architecture (default: the engine's default for the device). ``mixed`` adds
    CheXGenBench's real + synthetic setting. ``source`` names the synthetic set's origin in the store
    (a model name, 'upload'...). The report is saved as kind 'utility' and as ``utility.json``.
    """
    from evaluators.imagesets import load_image_set
    from evaluators.utility.run import MIXED, REAL, SYNTHETIC, run_utility, side_by_side, standard_settings

    name, epochs, image_size = check_settings(studio, model=model, epochs=epochs, image_size=image_size)
    studio.quota.check(session, 0, "This utility job")
    real_spec, test_spec = split_specs(studio.reference)
    labels = np.asarray(synthetic.labels, dtype=np.float32)
    if len(synthetic) < 2 or np.isnan(labels).all():
        raise InputError(
            f"The synthetic set {getattr(synthetic, 'name', '')!r} has "
            + ("fewer than 2 images" if len(synthetic) < 2 else "no labels (no label columns and no prompts)")
            + "; the utility axis trains a classifier on its images and labels. Upload a CSV with a 'prompt' "
              "column or the 14 label columns, or generate the set from a model (it carries the reference prompts)."
        )
    settings = {"model": name, "epochs": epochs, "image_size": image_size, "mixed": bool(mixed),
                "batch_size": BATCH_SIZE, "seed": SEED, "policy": POLICY, "scheduler": SCHEDULER,
                "test": test_spec}
    syn_key = f"synthetic:{getattr(synthetic, 'name', 'set')}"
    loaded: dict[str, Any] = {syn_key: synthetic}

    def loader(spec: str) -> Any:
        if spec not in loaded:
            loaded[spec] = studio.reference_set() if spec == studio.reference else load_image_set(spec)
        return loaded[spec]

    with studio.partial_on_failure("utility", synthetic, model=source, session=session, settings=settings,
                                   note=PARTIAL_NOTE):
        try:
            loader(test_spec)
        except InputError as exc:
            raise InputError(f"The utility axis tests on the reference's test split {test_spec!r}, which could "
                             f"not be loaded: {exc}") from None
        common = dict(model=name, epochs=epochs, image_size=image_size, batch_size=BATCH_SIZE, seed=SEED,
                      policy=POLICY, scheduler=SCHEDULER, device=studio.device, show_bars=False,
                      progress=progress_adapter(progress), loader=loader)
        base = baseline_dir(studio.reference, model=name, epochs=epochs, image_size=image_size)
        with _lock_for(base):  # two sessions never train the same baseline at once
            try:
                real = run_utility({REAL: [real_spec]}, test_spec, work_dir=base, **common)
            except InputError as exc:
                if "different run" not in str(exc):
                    raise
                log.warning("the cached real baseline in %s no longer matches the reference; retraining", base)
                real = run_utility({REAL: [real_spec]}, test_spec, work_dir=base, resume=False, **common)
        out = subdir("runs") / session_folder(session) / f"utility-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        wanted = standard_settings([real_spec], [syn_key])
        syn_settings = {k: v for k, v in wanted.items() if k == SYNTHETIC or (k == MIXED and mixed)}
        try:
            syn = run_utility(syn_settings, test_spec, work_dir=out / "work", **common)
        finally:
            if studio.public:  # public mode keeps utility.json only: the checkpoints are ~170 MB per job
                shutil.rmtree(out / "work", ignore_errors=True)

    r = real["settings"][REAL]
    real_reused = r["epochs_run"] > 0 and r["resumed_from_epoch"] == r["epochs_run"]
    results = {**real["settings"], **syn["settings"]}
    table = side_by_side(results)
    result = finite({
        **{k: syn[k] for k in ("test", "n_test", "model", "weights", "image_size", "policy", "scheduler", "seed",
                               "epochs", "device")},
        "synthetic": {"name": getattr(synthetic, "name", None), "n": len(synthetic), "source": source},
        "real_baseline": {"work_dir": str(base), "reused": real_reused},
        "settings": settings,
        "per_setting": results,
        "table": table,
        # what the results store lists per run (evaluators.store.flatten_metrics: 'AUC (<setting>)')
        "utility": {n: {"auc_macro": v["metrics"]["macro_auc"], "f1_micro": v["metrics"]["f1_micro"],
                        "f1_macro": v["metrics"]["f1_macro"], "accuracy": v["metrics"]["accuracy"],
                        "n_train": v["n_train"]} for n, v in results.items()},
        "notes": [*real.get("notes", []), *syn.get("notes", [])],
        "seconds": round(real["seconds"] + syn["seconds"], 1),
        "cli": _cli_hint(synthetic, real_spec, test_spec, name, epochs, image_size, mixed, out / "work"),
    })
    json_path = out / "utility.json"
    json_path.write_text(json.dumps(result, indent=2, default=str))
    run_id = studio.store().save("utility", result, model=source or "upload", synthetic=getattr(synthetic, "name", None),
                                 reference=studio.reference, session=session, settings=settings)
    return UtilityRun(result, display_table(result["table"], list(results)), json_path, run_id, real_reused)


def summary(run: UtilityRun) -> str:
    """One paragraph for the page: what trained on what, the headline AUCs, reuse, and the store id."""
    res = run.result
    auc = {n: v["auc_macro"] for n, v in res["utility"].items()}
    fmt = ", ".join(f"{n} {'n/a' if v is None else f'{v:.3f}'}" for n, v in auc.items())
    n_syn = res["utility"].get("synthetic", {}).get("n_train")
    base = "reused (trained earlier with the same settings)" if run.real_reused else "trained now and cached"
    return (f"Utility: {res['model']} ({res['weights']}), {res['image_size']} px, {res['epochs']} epoch(s); "
            f"trained on {n_syn} synthetic image(s), tested on {res['n_test']} real test image(s) of "
            f"`{res['test']}`. Macro AUC: {fmt}. Real baseline {base}. {res['seconds']:.0f} s; saved as run "
            f"#{run.run_id}." + "".join(f"\n\n- {n}" for n in res.get("notes") or []))


__all__ = ["UtilityLimits", "UtilityRun", "check_settings", "default_model", "run_utility_job", "summary"]
