"""The fidelity job: a synthetic set against the context's reference index, every registered metric."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..store import finite
from .context import RunContext
from .result import RunResult

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class FidelityConfig:
    """Settings of a fidelity run (the CLI's flags and the app's widgets fill the same fields)."""

    encoders: tuple[str, ...] | None = None  # None: the index's encoder, plus inception when available locally
    per_pathology: bool = True
    match: str = "labels"
    bootstrap: int = 0
    min_count: int = 10
    k: int = 5
    kid_subsets: int = 100
    seed: int = 0
    batch_size: int = 64
    skip_bad: bool = False
    alignment: bool = True
    preprocess: str = "auto"
    include: tuple[str, ...] = ()  # opt-in metrics of the registry (FD_inf): evaluators.metrics.registry.opt_in()

    def settings(self) -> dict:
        return asdict(self)


def run(ctx: RunContext, synthetic, config: FidelityConfig, *, progress: Progress | None = None) -> RunResult:
    """Every fidelity metric of ``synthetic`` against ``ctx``'s reference (its index, built once)."""
    from ..fidelity import run_fidelity

    index = ctx.index(progress)
    data = run_fidelity(
        index, synthetic, encoders=list(config.encoders) if config.encoders else None,
        per_pathology=config.per_pathology, match=config.match, bootstrap=config.bootstrap,
        min_count=config.min_count, k=config.k, kid_subsets=config.kid_subsets, seed=config.seed,
        device=ctx.device, dtype=ctx.dtype, batch_size=config.batch_size, skip_bad=config.skip_bad,
        alignment=config.alignment, progress=progress, load_encoder=ctx.load_encoder, preprocess=config.preprocess,
        real_name=ctx.name, include=tuple(config.include),
    )
    return RunResult("fidelity", finite(data), config)
