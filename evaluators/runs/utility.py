"""The utility job: a classifier trained on the synthetic set beside one trained on the reference (cached), both
tested on the reference's real test split (CheXGenBench's question: does training on synthetic X-rays work?).

The real-trained baseline depends only on the reference and the training settings, so it lives in a stable
folder under ``CHEXGEN_HOME/utility/baselines`` and is trained once: later runs resume its finished checkpoint
and only evaluate it. The synthetic (and optional real + synthetic) settings train under the run's folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..store import finite
from .context import RunContext
from .result import RunResult

log = logging.getLogger("evaluators.runs")

PARTIAL_NOTE = ("stopped before the end; finished epochs of the real baseline are checkpointed and a rerun "
                "resumes from them")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


@dataclass(frozen=True)
class UtilityConfig:
    model: str = "resnet18"
    epochs: int = 3
    image_size: int = 64
    mixed: bool = False  # also the real + synthetic setting (both sets concatenated)
    swap: bool = False  # also CheXGenBench's "mixed": half the real training images swapped for synthetic ones
    batch_size: int = 32
    seed: int = 0
    policy: str = "zeros"
    scheduler: str = "cosine"

    def settings(self, test: str) -> dict:
        return {**asdict(self), "test": test}


def split_specs(reference: str) -> tuple[str, str]:
    """(real training spec, real test spec) from a reference, e.g. 'demo@train' -> 'demo@test'."""
    from ..imagesets import parse_set_spec

    base, split = parse_set_spec(reference)
    if split is not None and split.lower() in ("test", "testing"):
        raise InputError(f"The reference {reference!r} is a test split; the utility axis trains its real baseline "
                         "on the reference and tests on its 'test' split. Give e.g. PATH@train.")
    return reference, f"{base}@test"


def baseline_dir(kind: str, reference: str, key: list) -> Path:
    """The stable folder of a real-trained baseline (``kind``: utility, report_utility): one per reference and
    training settings ``key``."""
    from ..imagesets import parse_set_spec
    from ..settings import subdir

    base, split = parse_set_spec(reference)
    resolved = base if base.split("@")[0] == "demo" else str(Path(base).expanduser().resolve())
    digest = hashlib.sha256(json.dumps([resolved, split, *key]).encode()).hexdigest()[:12]
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in Path(base).name)[:40] or "reference"
    tag = "-".join(str(k) for k in key[:3])
    return subdir(kind) / "baselines" / f"{name}-{split or 'all'}-{tag}-{digest}"


def baseline_for(reference: str, config: UtilityConfig) -> Path:
    c = config
    return baseline_dir("utility", reference, [c.model, f"{c.image_size}px", f"e{c.epochs}", c.batch_size, c.seed,
                                               c.policy, c.scheduler])


def lock_for(folder: Path) -> threading.Lock:
    """One lock per baseline folder: two jobs of one process never train the same baseline at once."""
    with _locks_guard:
        return _locks.setdefault(str(folder), threading.Lock())


def check_trainable(synthetic: Any, *, need_prompts: bool = False) -> None:
    labels = np.asarray(synthetic.labels, dtype=np.float32)
    if len(synthetic) < 2 or np.isnan(labels).all():
        raise InputError(
            f"The synthetic set {getattr(synthetic, 'name', '')!r} has "
            + ("fewer than 2 images" if len(synthetic) < 2 else "no labels (no label columns and no prompts)")
            + "; the utility axis trains a classifier on its images and labels. Upload a CSV with a 'prompt' "
              "column or the 14 label columns, or generate the set from a model (it carries the reference prompts)."
        )
    from ..utility.data import TEST_SPLIT_NAMES, VALID_SPLIT_NAMES

    table = getattr(synthetic, "table", None)
    if table is not None and "split" in table and table["split"].isin(VALID_SPLIT_NAMES + TEST_SPLIT_NAMES).all():
        raise InputError(  # found now, not after the real baseline's training
            f"Every image of the synthetic set {getattr(synthetic, 'name', '')!r} is in a valid/test split, and "
            "those rows are never trained on; give its train split (SET@train) or a set without a split column.")


def reference_loader(ctx: RunContext, synthetic: Any, syn_key: str) -> Callable[[str], Any]:
    """spec -> ImageSet, reusing the context's reference set and the synthetic set already loaded."""
    from ..imagesets import load_image_set

    loaded: dict[str, Any] = {syn_key: synthetic}

    def loader(spec: str) -> Any:
        if spec not in loaded:
            loaded[spec] = ctx.reference_set() if spec == ctx.spec else load_image_set(spec)
        return loaded[spec]

    return loader


def headline(per_setting: dict) -> dict:
    """Per setting: the numbers the results store lists (evaluators.store.flatten_metrics: 'AUC (<setting>)')."""
    return {n: {"auc_macro": v["metrics"]["macro_auc"], "f1_micro": v["metrics"]["f1_micro"],
                "f1_macro": v["metrics"]["f1_macro"], "accuracy": v["metrics"]["accuracy"], "n_train": v["n_train"]}
            for n, v in per_setting.items()}


def run(ctx: RunContext, synthetic: Any, config: UtilityConfig, *, run_dir: Path, source: str | None = None,
        progress: Callable[[dict], None] | None = None, keep_checkpoints: bool = True) -> RunResult:
    """Train on ``synthetic`` (and the cached real baseline), test both on the reference's test split."""
    from ..utility.run import (
        MIXED,
        REAL,
        SWAP,
        SYNTHETIC,
        paired_vs_real,
        run_utility,
        side_by_side,
        standard_settings,
    )

    check_trainable(synthetic)
    real_spec, test_spec = split_specs(ctx.spec or ctx.name)
    syn_key = f"synthetic:{getattr(synthetic, 'name', 'set')}"
    loader = reference_loader(ctx, synthetic, syn_key)
    try:
        loader(test_spec)
    except InputError as exc:
        raise InputError(f"The utility axis tests on the reference's test split {test_spec!r}, which could "
                         f"not be loaded: {exc}") from None
    c = config
    common = dict(model=c.model, epochs=c.epochs, image_size=c.image_size, batch_size=c.batch_size, seed=c.seed,
                  policy=c.policy, scheduler=c.scheduler, device=ctx.device, show_bars=False, progress=progress,
                  loader=loader, keep_replicates=True)  # the settings of both calls are paired below
    base = baseline_for(real_spec, c)
    with lock_for(base):
        try:
            real = run_utility({REAL: [real_spec]}, test_spec, work_dir=base, **common)
        except InputError as exc:
            if "different run" not in str(exc):
                raise
            log.warning("the cached real baseline in %s no longer matches the reference; retraining", base)
            real = run_utility({REAL: [real_spec]}, test_spec, work_dir=base, resume=False, **common)
    wanted = standard_settings([real_spec], [syn_key], swap=c.swap)
    syn_settings = {k: v for k, v in wanted.items() if k in (SYNTHETIC, SWAP) or (k == MIXED and c.mixed)}
    try:
        syn = run_utility(syn_settings, test_spec, work_dir=run_dir / "work", **common)
    finally:
        if not keep_checkpoints:  # the public app keeps utility.json only: checkpoints are ~170 MB per job
            shutil.rmtree(run_dir / "work", ignore_errors=True)
    r = real["settings"][REAL]
    real_reused = r["epochs_run"] > 0 and r["resumed_from_epoch"] == r["epochs_run"]
    results = {**real["settings"], **syn["settings"]}
    paired = paired_vs_real(results)  # one test set, the same resamples: synthetic settings vs the real baseline
    syn_root = getattr(synthetic, "root", None)
    data = {
        **{k: syn[k] for k in ("test", "n_test", "model", "weights", "image_size", "policy", "scheduler", "seed",
                               "epochs", "device")},
        "synthetic": {"name": getattr(synthetic, "name", None), "n": len(synthetic), "source": source},
        "real_baseline": {"work_dir": str(base), "reused": real_reused},
        "settings": c.settings(test_spec),
        "per_setting": results,
        "table": side_by_side(results, paired),
        "paired": paired,
        "utility": headline(results),
        "notes": [*real.get("notes", []), *syn.get("notes", [])],
        "seconds": round(real["seconds"] + syn["seconds"], 1),
        "cli": (f"python -m evaluators utility --train {real_spec} --synthetic {syn_root or 'SYNTHETIC_SET'} "
                f"--test {test_spec} --model {c.model} --epochs {c.epochs} --image-size {c.image_size} "
                f"--batch-size {c.batch_size} --seed {c.seed} --policy {c.policy} --scheduler {c.scheduler} "
                f"--work-dir {run_dir / 'work'} --out utility.json"
                + ("" if c.mixed else "  (the CLI also trains real+synthetic)")),
    }
    return RunResult("utility", finite(data), config)
