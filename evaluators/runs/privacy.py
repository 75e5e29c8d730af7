"""The privacy job: the memorisation search over the whole reference and re-ID, one verdict per image."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..store import finite
from .context import RunContext
from .result import RunResult

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class PrivacyConfig:
    """Settings of a privacy run; None means the engine's default (:mod:`evaluators.privacy.search`)."""

    reid: Any = "auto"  # auto, a name, a weights file, or None (no re-ID)
    k: int = 5
    percentile: float | None = None
    heldout: str | None = None
    match: str | None = None
    candidates: int | None = None
    calibration_queries: int | None | str = "default"  # None or 0: every training image

    def settings(self) -> dict:
        return asdict(self)


def reid_status(choice, short: bool = False) -> str:
    """'re-ID by MODEL (verification AUC ...)', or 're-ID: unavailable (reason)'; ``short`` keeps the first sentence."""
    if choice.available:
        return f"re-ID by {choice.label()}"
    reason = str(choice.reason)
    if short:
        reason = reason.split(". ")[0].split(" (looked for")[0] + "; see the Setup tab"
    return f"re-ID: unavailable ({reason})"


def run(ctx: RunContext, synthetic, config: PrivacyConfig, *, progress: Progress | None = None) -> RunResult:
    """Memorisation + re-ID of ``synthetic`` against ``ctx``'s reference (search and re-ID choice cached on ctx)."""
    from ..privacy.search import DEFAULT_CANDIDATES, DEFAULT_MATCH
    from ..privacy.suite import _check, run_privacy

    _check(config.k, 99.0 if config.percentile is None else config.percentile, config.match or DEFAULT_MATCH,
           config.candidates or DEFAULT_CANDIDATES)  # bad settings fail before the index is built
    queries = None if config.calibration_queries in (0, None) else config.calibration_queries
    search = ctx.search(percentile=config.percentile, heldout=config.heldout, match=config.match,
                        candidates=config.candidates, k=config.k, calibration_queries=queries, progress=progress)
    choice = ctx.reid_choice(config.reid)
    data = run_privacy(None, synthetic, search=search, reid=choice, device=ctx.device, progress=progress)
    data["settings"]["train"] = ctx.name
    data["settings"]["reid"] = choice.name if choice.available else (None if config.reid is None else str(config.reid))
    data["reid"]["status"] = reid_status(choice)
    summ = data["summary"]
    data["memorisation"] = {"n": len(data["samples"]), "n_flagged": sum(s["flagged"] for s in data["samples"]),
                            "threshold": summ["memorisation_threshold"],
                            "expected_fraction": summ["expected_fraction_flagged"]}
    return RunResult("privacy", finite(data), config)
