"""The leaderboard over the results store (:class:`evaluators.store.ResultsStore`): one row per run with its
headline numbers, the pair of runs a user most often compares, and two runs side by side."""

from __future__ import annotations

import pandas as pd

from .errors import InputError
from .store import finite


def leaderboard(store, kind: str | None = None, session: str | None = None) -> pd.DataFrame:
    """Every run (of ``kind``; of ``session`` plus the shared ones when given), newest first: id, date, kind,
    model, synthetic set, reference set, notes (:func:`validity_note`), status, preprocessing, scalar settings, then
    one column per headline number."""
    rows = []
    demo_world: dict[str, bool] = {}
    for r in store.runs(kind=kind or None, session=session):
        s = r["settings"] or {}
        row = {"id": r["id"], "date": r["created"], "kind": r["kind"], "model": r["model"] or "",
               "synthetic": r["synthetic"] or "", "reference": r.get("reference") or "",
               "notes": validity_note(r.get("reference") or "", r["metrics"] or {}, demo_world, model=r["model"]),
               "status": r["status"],
               "preprocess": r.get("preprocess") or "",
               "settings": ", ".join(f"{k}={v}" for k, v in s.items() if not isinstance(v, dict | list))}
        row.update({k: finite(v) for k, v in (r["metrics"] or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def validity_note(reference: str, metrics: dict, seen: dict[str, bool] | None = None, *, model: str | None = None) -> str:
    """What a run's numbers are not valid for, on its leaderboard row, when its reference is not the demo world: the
    demo encoder's metrics (``X (demo)``, ``X (demo, ...)``), and a model that draws demo-world phantoms
    (:mod:`evaluators.generators.trained_on`). ``seen`` caches the demo-world test per reference."""
    from .domain import is_demo_world
    from .generators.trained_on import training_source

    demo_encoder = any("(demo)" in k or "(demo," in k for k in metrics)
    demo_model = training_source(model) is not None and is_demo_world(training_source(model))
    if not reference or not (demo_encoder or demo_model):
        return ""
    seen = {} if seen is None else seen
    if reference not in seen:
        seen[reference] = is_demo_world(reference)
    if seen[reference]:
        return ""
    notes = ["model draws demo-world phantoms: not a model of this reference's images"] if demo_model else []
    if demo_encoder:
        notes.append("demo encoder (trained on phantoms) on images that are not the demo world: not comparable with "
                     "RadDino numbers")
    return "; ".join(notes)


def run_choices(board: pd.DataFrame) -> tuple[list[tuple[str, int]], int | None, int | None]:
    """(picker choices, run A, run B) for the side-by-side view: every run in the table, newest first,
    named by id, kind, model and date. Preselected: the newest run that has an earlier run of its kind
    (B) and that earlier run (A), the pair a user most often compares; with no such pair, the newest
    run as B and A left empty (runs of different kinds share few fields)."""
    if board.empty:
        return [], None, None
    runs = board.sort_values("id", ascending=False)
    choices = [(f"#{r.id} {r.kind} · {r.model or '-'} · {str(r.date)[:16]}", int(r.id)) for r in runs.itertuples()]
    paired = runs[runs.duplicated("kind", keep="last")]  # newest first: runs with an earlier run of their kind
    if paired.empty:
        return choices, None, int(runs["id"].iloc[0])
    b = paired.iloc[0]
    a = runs[(runs["kind"] == b["kind"]) & (runs["id"] < b["id"])].iloc[0]
    return choices, int(a["id"]), int(b["id"])


def compare_runs(store, a: int, b: int, session: str | None = None) -> pd.DataFrame:
    """Two runs side by side: every setting and metric as a row. With ``session``, only that session's runs and
    the shared ones (saved without a session) can be compared."""
    ra, rb = store.get(int(a)), store.get(int(b))
    for rid, r in ((a, ra), (b, rb)):
        if r is None or (session is not None and r["session"] not in (None, session)):
            raise InputError(f"No run with id {rid} in the results store ({store.path}).")
    keys = ["kind", "model", "synthetic", "reference", "created", "status"]
    rows = [{"field": k, f"run {a}": ra[k], f"run {b}": rb[k]} for k in keys]
    for k in dict.fromkeys([*ra["settings"], *rb["settings"]]):
        rows.append({"field": f"setting: {k}", f"run {a}": str(ra["settings"].get(k, "")),
                     f"run {b}": str(rb["settings"].get(k, ""))})
    for k in dict.fromkeys([*ra["metrics"], *rb["metrics"]]):
        rows.append({"field": k, f"run {a}": ra["metrics"].get(k), f"run {b}": rb["metrics"].get(k)})
    return pd.DataFrame(rows).astype({f"run {a}": object, f"run {b}": object})
