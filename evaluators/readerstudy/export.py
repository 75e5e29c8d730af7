"""Reader-study results out: JSON, CSV of the answers, and results-store rows (kind ``reader-study``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..store import ResultsStore, finite
from .results import compute_results
from .study import answer_rows, study_info

KIND = "reader-study"
CSV_COLUMNS = ("reader", "item", "truth", "source", "model", "call", "confidence", "findings", "quality", "comment",
               "updated")


def study_results(study_id: str) -> dict:
    """The study's info and every result, computed from the saved answers (JSON-safe: NaN -> None)."""
    info = study_info(study_id)
    res = compute_results(answer_rows(study_id))
    return finite({"study": info, **res})


def export(study_id: str, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json`` and ``answers.csv`` (one row per reader and image, with the truth) to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = study_results(study_id)
    (out / "results.json").write_text(json.dumps(res, indent=2))
    with open(out / "answers.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for row in answer_rows(study_id):
            row = dict(row)
            row["findings"] = "" if row["findings"] is None else ";".join(row["findings"])
            w.writerow(row)
    return {"json": out / "results.json", "csv": out / "answers.csv"}


def save_to_store(study_id: str, store: ResultsStore | None = None, session: str | None = None) -> list[int]:
    """One ``reader-study`` row per synthetic set (its images against all the study's real images), so the
    leaderboard lists the readers' accuracy/AUC next to the automatic scores of the same model name.
    ``session``: the app's browser session in public mode (its rows are seen by that session only)."""
    store = store or ResultsStore()
    info = study_info(study_id)
    res = compute_results(answer_rows(study_id))
    ids = []
    models = {r["source"]: r["model"] for r in answer_rows(study_id) if r["truth"] == "synthetic"}
    for src, acc in res["per_source"].items():
        summary = {"Reader accuracy": acc["accuracy"], "Reader accuracy CI low": acc["ci_low"],
                   "Reader accuracy CI high": acc["ci_high"], "Reader p vs 50%": acc["p_value_vs_50"],
                   "Reader AUC": acc["auc"], "Reader answers": acc["n"]}
        result = finite({"summary": summary, "study_id": study_id, "study_name": info["name"], "source": src,
                         "ci_method": res["ci_method"], "notes": info["notes"] + res["notes"],
                         "readers": res["readers"]})
        ids.append(store.save(KIND, result, model=models.get(src) or src, synthetic=src,
                              reference=info["settings"]["reference"], settings=info["settings"],
                              session=session))
    return ids
