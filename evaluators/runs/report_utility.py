"""The report-utility job: a report generator trained on the synthetic set's images and prompts beside one trained
on the reference (cached), both tested on the reference's real test split."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..store import finite
from .context import RunContext
from .result import RunResult
from .utility import baseline_dir, lock_for, reference_loader, split_specs

PARTIAL_NOTE = ("stopped before the end; finished epochs of the real-trained generator are checkpointed and a rerun "
                "resumes from them")


@dataclass(frozen=True)
class ReportUtilityConfig:
    model: str = "captioner"
    epochs: int = 3
    seed: int = 0
    meteor: bool = True  # METEOR starts a Java process (about 10 s)

    def settings(self, test: str) -> dict:
        return {"model": self.model, "epochs": self.epochs, "seed": self.seed, "test": test}


def check_pairs(synthetic: Any) -> None:
    prompts = [p for p in getattr(synthetic, "table", {"prompt": []})["prompt"].tolist()
               if isinstance(p, str) and p.strip()]
    if len(synthetic) < 2 or len(prompts) < len(synthetic):
        raise InputError(f"The synthetic set {getattr(synthetic, 'name', '')!r} needs at least 2 images, each with "
                         "its prompt: the report utility trains on (image, prompt) pairs. Upload a CSV with a "
                         "'prompt' column, or generate the set from a model.")


def run(ctx: RunContext, synthetic: Any, config: ReportUtilityConfig, *, run_dir: Path, source: str | None = None,
        progress: Callable[[dict], None] | None = None) -> RunResult:
    from ..reportgen.run import BASELINE, REAL, SYNTHETIC, paired_vs_real, run_report_utility, side_by_side

    check_pairs(synthetic)
    real_spec, test_spec = split_specs(ctx.spec or ctx.name)
    syn_key = f"synthetic:{getattr(synthetic, 'name', 'set')}"
    c = config
    common = dict(model=c.model, epochs=c.epochs, seed=c.seed, device=ctx.device, show_bars=False, meteor=c.meteor,
                  progress=progress, loader=reference_loader(ctx, synthetic, syn_key),
                  keep_replicates=True)  # both calls' settings are paired below
    base = baseline_dir("report_utility", real_spec, [c.model, f"e{c.epochs}", c.seed])
    with lock_for(base):
        real = run_report_utility({REAL: [real_spec]}, test_spec, work_dir=base, **common)
    syn = run_report_utility({SYNTHETIC: [syn_key]}, test_spec, work_dir=run_dir / "work", baseline=False, **common)
    results = {REAL: real["settings"][REAL], SYNTHETIC: syn["settings"][SYNTHETIC],
               BASELINE: real["settings"][BASELINE]}
    paired = paired_vs_real(results)  # one test set, the same resamples: synthetic and the baseline vs real
    data = {
        **{k: syn[k] for k in ("kind", "test", "n_test", "model", "model_label", "model_kind", "image_size", "seed",
                               "device", "labeler", "chexbert")},
        "synthetic": {"name": getattr(synthetic, "name", None), "n": len(synthetic), "source": source},
        "real_baseline": {"work_dir": str(base)},
        "settings": c.settings(test_spec),
        "per_setting": results,
        "table": side_by_side(results, paired),
        "paired": paired,
        "report_utility": {**real["report_utility"], **syn["report_utility"]},
        "notes": [*real.get("notes", []), *syn.get("notes", [])],
        "seconds": round(real["seconds"] + syn["seconds"], 1),
        "cli": (f"python -m evaluators report-utility --train {real_spec} --synthetic "
                f"{getattr(synthetic, 'root', None) or 'SYNTHETIC_SET'} --test {test_spec} --model {c.model} "
                f"--epochs {c.epochs} --seed {c.seed} --out report_utility.json  (the CLI also trains real+synthetic)"),
    }
    return RunResult("report-utility", finite(data), config)


__all__ = ["PARTIAL_NOTE", "ReportUtilityConfig", "check_pairs", "run"]
