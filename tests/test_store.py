"""Results store: round trip, concurrent writers, and a writer killed mid-way leaves the file usable."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sqlite3
import time

from evaluators.store import ResultsStore, flatten_metrics

RESULT = {
    "overall": {"demo": {"FID": 12.5, "KID": 0.01, "KID_std": 0.001, "Precision": 0.8, "n_real": 10, "n_synthetic": 5}},
    "Inception Score": {"mean": 2.0, "std": 0.1},
    "settings": {"k": 5},
}


def test_round_trip(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    rid = store.save("fidelity", RESULT, model="demo", synthetic="s", reference="r")
    got = store.get(rid)
    assert got["result"] == RESULT and got["model"] == "demo" and got["settings"] == {"k": 5}
    assert got["metrics"]["FID (demo)"] == 12.5 and "n_real (demo)" not in got["metrics"]
    assert got["metrics"]["Inception Score"] == 2.0
    store.save("fidelity", RESULT, status="complete", run_id=rid)
    assert [r["id"] for r in store.runs()] == [rid]
    assert store.runs(kind="privacy") == []


def test_flatten_drops_non_finite():
    flat = flatten_metrics({"overall": {"e": {"FID": float("nan")}}})
    assert flat == {"FID (e)": None}


def _writer(path, n):
    store = ResultsStore(path)
    for i in range(n):
        store.save("fidelity", {"overall": {"e": {"FID": float(i)}}}, model=f"m{os.getpid()}")


def test_concurrent_writers(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path)
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert len(ResultsStore(path).runs()) == 100


def _endless_writer(path):
    store = ResultsStore(path)
    while True:
        store.save("fidelity", {"overall": {"e": {"FID": 1.0}}, "blob": "x" * 100_000})


def test_killed_writer_leaves_database_consistent(tmp_path):
    path = tmp_path / "r.sqlite"
    ResultsStore(path)
    p = mp.get_context("spawn").Process(target=_endless_writer, args=(path,))
    p.start()
    time.sleep(4.0)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = len(ResultsStore(path).runs())
    assert n > 0
    ResultsStore(path).save("fidelity", RESULT)
    assert len(ResultsStore(path).runs()) == n + 1


def test_finite_makes_results_valid_json():
    import json
    import math

    import numpy as np

    from evaluators.store import finite

    raw = {"a": math.nan, "b": [1.5, math.inf, (np.float32("nan"), np.float64(2.0))], "c": np.int64(3), "d": "x"}
    out = finite(raw)
    assert out == {"a": None, "b": [1.5, None, [None, 2.0]], "c": 3, "d": "x"}
    assert type(out["c"]) is int and type(out["b"][2][1]) is float
    json.loads(json.dumps(out, allow_nan=False))  # no NaN token left
