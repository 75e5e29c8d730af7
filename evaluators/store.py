"""The results store: every run (fidelity, privacy, utility, full) in one SQLite file under CHEXGEN_HOME.

The leaderboard reads it. SQLite in WAL mode with a busy timeout, one transaction per write, so several
processes (CLI runs, app sessions) can write at once and a killed writer leaves the file consistent.
A run saved before it finished is marked ``partial``.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from .settings import chexgen_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created TEXT NOT NULL,
    kind TEXT NOT NULL,
    model TEXT,
    synthetic TEXT,
    reference TEXT,
    status TEXT NOT NULL DEFAULT 'complete',
    session TEXT,
    settings TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    result TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS runs_kind ON runs(kind);
"""


def default_path() -> Path:
    return chexgen_home() / "results.sqlite"


def finite(obj):
    """NaN/inf -> None, recursively through dicts, lists and tuples (numpy scalars become Python numbers), so a
    result is valid JSON and shows missing values as missing."""
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def flatten_metrics(result: dict) -> dict[str, float]:
    """The headline numbers of a run as {column: value} (what the leaderboard shows and sorts)."""
    flat: dict[str, float] = {}
    modes = result.get("preprocess") or {}
    for enc, vals in (result.get("overall") or {}).items():
        tag = enc if modes.get(enc, "clean") == "clean" else f"{enc}, {modes[enc]}"  # modes never share a column
        for key, value in vals.items():
            if isinstance(value, int | float) and not key.startswith("n_"):
                flat[f"{key} ({tag})"] = finite(float(value))
    if "Inception Score" in result:
        mode = modes.get("inception", "clean")
        flat["Inception Score" if mode == "clean" else f"Inception Score ({mode})"] = result["Inception Score"]["mean"]
    ms = result.get("Intra-prompt MS-SSIM") or {}
    if ms.get("available"):
        flat["Intra-prompt MS-SSIM"] = finite(ms.get("MS_SSIM"))
    al = result.get("alignment") or {}
    if al.get("macro_AUC") is not None:
        flat["Alignment AUC"] = al["macro_AUC"]
    for key, value in (result.get("summary") or {}).items():
        if isinstance(value, int | float):
            flat[key] = finite(float(value))
    for setting, vals in (result.get("utility") or {}).items():
        if isinstance(vals, dict) and vals.get("auc_macro") is not None:
            flat[f"AUC ({setting})"] = vals["auc_macro"]
    for setting, vals in (result.get("report_utility") or {}).items():  # evaluators.reportgen
        for key, label in (("clinical_f1_macro", "clinical F1 macro"), ("bleu4", "BLEU-4")):
            if isinstance(vals, dict) and vals.get(key) is not None:
                flat[f"{label} ({setting})"] = vals[key]
    return flat


def preprocess_of(result: dict) -> str | None:
    """The run's preprocessing mode(s) (``chexgenbench``, ``clean`` or ``raddino: chexgenbench, demo: clean``), or
    None for runs without encoders."""
    modes = result.get("preprocess")
    encoder = result.get("encoder")
    if not isinstance(modes, dict) and isinstance(encoder, dict) and encoder.get("preprocess"):
        modes = {encoder.get("name", "encoder"): encoder["preprocess"]}  # privacy runs: one encoder's metadata
    if not isinstance(modes, dict) or not modes:
        return None
    values = set(modes.values())
    return values.pop() if len(values) == 1 else ", ".join(f"{k}: {v}" for k, v in modes.items())


class ResultsStore:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con, con:
            con.executescript(SCHEMA)
            columns = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
            if "preprocess" not in columns:  # stores written before preprocessing modes existed
                try:
                    con.execute("ALTER TABLE runs ADD COLUMN preprocess TEXT")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA busy_timeout=30000")
        con.row_factory = sqlite3.Row
        return con

    def save(
        self,
        kind: str,
        result: dict,
        *,
        model: str | None = None,
        synthetic: str | None = None,
        reference: str | None = None,
        settings: dict | None = None,
        status: str = "complete",
        session: str | None = None,
        run_id: int | None = None,
    ) -> int:
        """Insert a run (or update ``run_id``, e.g. a partial run that finished) and return its id."""
        row = {
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "kind": kind,
            "model": model,
            "synthetic": synthetic,
            "reference": reference,
            "status": status,
            "session": session,
            "settings": json.dumps(settings if settings is not None else result.get("settings", {}), default=str),
            "metrics": json.dumps(flatten_metrics(result)),
            "result": json.dumps(result, default=str),
            "preprocess": preprocess_of(result),
        }
        with closing(self._connect()) as con, con:
            if run_id is None:
                cur = con.execute(
                    f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values())
                )
                return int(cur.lastrowid)
            con.execute(
                f"UPDATE runs SET {', '.join(f'{k} = ?' for k in row)} WHERE id = ?", [*row.values(), run_id]
            )
            return run_id

    def runs(self, kind: str | None = None, session: str | None = None) -> list[dict]:
        """All runs, newest first, with metrics decoded (the result JSON is left out; see :meth:`get`)."""
        q = ("SELECT id, created, kind, model, synthetic, reference, status, session, settings, metrics, preprocess "
             "FROM runs")
        cond, args = [], []
        if kind:
            cond.append("kind = ?")
            args.append(kind)
        if session:
            cond.append("(session = ? OR session IS NULL)")
            args.append(session)
        if cond:
            q += " WHERE " + " AND ".join(cond)
        with closing(self._connect()) as con:
            rows = con.execute(q + " ORDER BY id DESC", args).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["settings"] = json.loads(d["settings"])
            d["metrics"] = json.loads(d["metrics"])
            out.append(d)
        return out

    def get(self, run_id: int) -> dict | None:
        with closing(self._connect()) as con:
            r = con.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if r is None:
            return None
        d = dict(r)
        for key in ("settings", "metrics", "result"):
            d[key] = json.loads(d[key])
        return d
