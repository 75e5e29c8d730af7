"""One way to save a result: JSON, CSV (where the axis has one), a results-store row, and a ``partial`` row
with its reason when a job fails or is cancelled."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .result import RunResult, to_json

log = logging.getLogger("evaluators.runs")

PARTIAL_NOTE = "stopped before the end; encoded features are cached and a rerun resumes from them"


def session_folder(session: str | None) -> str:
    """The per-session folder name under uploads/, synthetic/, exports/ and runs/ ('local' without one)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", session or "").strip("-")[:64]
    return name or "local"


def run_folder(kind: str, session: str | None = None) -> Path:
    """A fresh folder for one run's files: ``CHEXGEN_HOME/runs/<session>/<kind>-<time>-<id>``."""
    from ..settings import subdir

    out = subdir("runs") / session_folder(session) / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_json(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_json(data))
    return path


@dataclass
class Saved:
    json_path: Path | None
    csv_path: Path | None
    run_id: int | None


# Writers of an axis's CSV, by result kind (the fidelity CSV has CheXGenBench's column names).
def _csv_writer(kind: str) -> Callable[[dict, Path], Path] | None:
    if kind == "fidelity":
        from ..fidelity import write_csv

        return write_csv
    return None


def save(result: RunResult, *, json_path: str | Path | None = None, csv_path: str | Path | None = None,
         store: Any = None, model: str | None = None, synthetic: str | None = None, reference: str | None = None,
         session: str | None = None, settings: dict | None = None) -> Saved:
    """Write ``result`` as JSON (and CSV) and save it in ``store`` (a ResultsStore; None: the default one; False:
    not saved)."""
    jp = write_json(result.data, json_path) if json_path else None
    cp = None
    if csv_path:
        writer = _csv_writer(result.kind)
        if writer is None:
            raise ValueError(f"{result.kind} results have no CSV form")
        cp = writer(result.data, Path(csv_path))
    run_id = None
    if store is not False:
        if store is None:
            from ..store import ResultsStore

            store = ResultsStore()
        from ..store import finite

        run_id = store.save(result.kind, finite(result.data), model=model, synthetic=synthetic, reference=reference,
                            session=session, settings=settings)
    return Saved(jp, cp, run_id)


@contextlib.contextmanager
def partial_on_failure(kind: str, synthetic: Any, *, store: Any = None, model: str | None = None,
                       reference: str | None = None, session: str | None = None, settings: dict | None = None,
                       note: str = PARTIAL_NOTE) -> Iterator[None]:
    """A job that fails or is cancelled leaves a ``partial`` row in the results store (with the reason and
    ``note``: what a rerun reuses), then re-raises."""
    try:
        yield
    except BaseException as exc:
        cancelled = isinstance(exc, KeyboardInterrupt) or "cancel" in type(exc).__name__.lower()
        reason = "cancelled" if cancelled else f"{type(exc).__name__}: {exc}"
        reason = getattr(exc, "reason", None) or reason  # evaluators.jobs.Stopped: cancelled / client left / time
        n = len(synthetic) if synthetic is not None else 0
        result = {"status": "partial", "error": reason, "settings": settings or {},
                  "synthetic": {"name": getattr(synthetic, "name", None), "n": n}, "note": note}
        try:
            if store is None:
                from ..store import ResultsStore

                store = ResultsStore()
            if store is not False:
                store.save(kind, result, model=model, synthetic=getattr(synthetic, "name", None), reference=reference,
                           session=session, settings=settings or {}, status="partial")
        except Exception:  # never hide the original error behind a store problem
            log.exception("could not record the partial %s run", kind)
        raise
