"""Reader-study results out: JSON, CSV of the answers and of the ROC points, and results-store rows (kind
``reader-study``)."""

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
ROC_COLUMNS = ("curve", "name", "threshold", "fpr", "tpr", "auc", "n")


def roc_rows(res: dict) -> list[dict]:
    """The ROC points of every curve (pooled, each reader, each synthetic set vs the real images) as flat rows;
    ``threshold`` = the 10-point score at or above which an answer counts as "synthetic" (blank for (0, 0))."""
    rows = []
    curves = [("pooled", "pooled", res["pooled"]), *(("reader", k, a) for k, a in res["per_reader"].items()),
              *(("synthetic set", k, a) for k, a in res["per_source"].items())]
    for curve, name, a in curves:
        for pt in a.get("roc") or []:
            rows.append({"curve": curve, "name": name, "threshold": pt["threshold"], "fpr": pt["fpr"],
                         "tpr": pt["tpr"], "auc": a["auc"], "n": a.get("n_roc", a["n"])})
    return rows


def study_results(study_id: str) -> dict:
    """The study's info and every result, computed from the saved answers (JSON-safe: NaN -> None)."""
    info = study_info(study_id)
    res = compute_results(answer_rows(study_id))
    return finite({"study": info, **res})


def export(study_id: str, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``answers.csv`` (one row per reader and image, with the truth) and ``roc.csv`` (the
    ROC points of the confidence ratings, pooled, per reader and per synthetic set) to ``out_dir``."""
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
    with open(out / "roc.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=ROC_COLUMNS)
        w.writeheader()
        w.writerows(roc_rows(res))
    return {"json": out / "results.json", "csv": out / "answers.csv", "roc_csv": out / "roc.csv"}


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
                         "readers": res["readers"], "roc": acc["roc"],
                         "roc_per_reader": _per_reader_roc(answer_rows(study_id), src)})
        ids.append(store.save(KIND, result, model=models.get(src) or src, synthetic=src,
                              reference=info["settings"]["reference"], settings=info["settings"],
                              session=session))
    return ids


def _per_reader_roc(rows: list[dict], source: str) -> dict:
    """Each reader's ROC (points and AUC) on one synthetic set's images against the study's real images."""
    res = compute_results([r for r in rows if r["truth"] == "real" or r["source"] == source])
    return {who: {"auc": a["auc"], "n": a["n_roc"], "points": a["roc"]} for who, a in res["per_reader"].items()}
