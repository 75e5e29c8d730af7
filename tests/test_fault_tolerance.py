"""Fault tolerance: a killed fidelity run resumes from the feature cache, failed or cancelled app jobs
leave a ``partial`` row, a model that fails to load does not take the app down, and two sessions can
generate at once.

Covered elsewhere: the results store under concurrent writers (tests/test_store.py), the resumable
shard cache in-process (tests/test_features.py), the OOM retry with a smaller batch (tests/test_generators.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from chexgen_ui.services import Studio, session_folder
from evaluators.errors import InputError, UnavailableError
from evaluators.settings import subdir
from tests.ui_world import make_world

REPO = Path(__file__).resolve().parent.parent
ORACLE = "reference-oracle"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("ft_world"), patients=10, size=32)


@pytest.fixture(scope="module")
def studio(world, tmp_path_factory):
    s = Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False,
               store_path=tmp_path_factory.mktemp("ft_store") / "results.sqlite")
    s.index()
    return s


# ------------------------------------------------------------------------------------------ broken model
@pytest.fixture
def broken_model():
    from evaluators.generators import register_builtin, unregister_builtin

    def factory(device="cpu", dtype=None):
        raise RuntimeError("checkpoint unet.safetensors is corrupt (header length 0)")

    register_builtin("ft-broken", factory, {"steps": 1, "guidance": 0.0, "resolution": 32})
    yield "ft-broken"
    unregister_builtin("ft-broken")


def test_a_model_that_fails_to_load_is_reported_and_the_others_keep_working(studio, broken_model):
    with pytest.raises(UnavailableError, match=r"'ft-broken' failed to load: RuntimeError: checkpoint unet"):
        studio.generate(broken_model, "Small left pleural effusion.", n=1)
    with pytest.raises(UnavailableError, match="failed to load"):  # not cached: tried again, same clear error
        studio.generate(broken_model, "Small left pleural effusion.", n=1)
    assert len(studio.generate(ORACLE, "Small left pleural effusion.", n=1)) == 1


def test_the_app_turns_a_load_failure_into_a_page_error_and_keeps_serving(studio, broken_model):
    """The running app (Gradio server + client): the broken model's click shows its error, the next works."""
    from gradio_client import Client

    from chexgen_ui.app import build_app

    demo = build_app(studio=studio)
    demo.queue(max_size=4).launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True,
                                  quiet=True, enable_monitoring=False)
    try:
        client = Client(demo.local_url, verbose=False, download_files=False)
        args = ("Small left pleural effusion.", 1, 0, 1, 0.0)
        with pytest.raises(Exception, match="failed to load") as err:
            client.predict(broken_model, *args, api_name="/on_generate")
        assert "Traceback" not in str(err.value)
        out = client.predict(ORACLE, *args, api_name="/on_generate")
        assert any("1 image(s) from **reference-oracle**" in o for o in out if isinstance(o, str))
    finally:
        demo.close()


# ------------------------------------------------------------------------------------------ partial rows
def test_cancelled_and_failed_fidelity_runs_leave_partial_rows_and_a_rerun_completes(studio, world, tmp_path,
                                                                                      monkeypatch):
    from evaluators import fidelity
    from evaluators.imagesets import load_image_set

    # the classifier alignment loads the demo encoder (~10 s here) and is not what this test is about
    monkeypatch.setattr(fidelity, "_classifier_alignment", lambda *a, **k: {"available": False, "reason": "test"})

    syn = load_image_set(str(make_world(tmp_path / "syn", patients=10, size=32, seed=2)))  # 20 new images
    store = studio.store()

    class JobCancelled(Exception):  # what the app's cancel button raises inside the progress callback
        pass

    calls = []

    def cancel_after_first(done, total, desc=""):  # the user presses Cancel while the set is being encoded
        calls.append(desc)
        raise JobCancelled()

    with pytest.raises(JobCancelled):
        studio.run_fidelity(syn, model="m", per_pathology=False, min_count=1, kid_subsets=5, session="alice", progress=cancel_after_first)
    assert len(calls) == 1
    row = store.runs(kind="fidelity")[0]
    assert row["status"] == "partial" and row["session"] == "alice" and row["synthetic"] == syn.name
    assert store.get(row["id"])["result"]["error"] == "cancelled"

    run = studio.run_fidelity(syn, model="m", per_pathology=False, min_count=1, kid_subsets=5, session="alice")
    done = store.get(run.run_id)
    assert done["status"] == "complete" and np.isfinite(done["metrics"]["FID (pixels)"])

    # a failure (an unreadable upload) is recorded with its reason, and still reaches the user
    (tmp_path / "bad").mkdir()
    for i, path in enumerate(syn.paths[:3]):
        (tmp_path / "bad" / f"ok{i}.png").write_bytes(Path(path).read_bytes())
    (tmp_path / "bad" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG signature, then nothing
    bad = load_image_set(str(tmp_path / "bad"))
    with pytest.raises(InputError, match=r"bad\.png"):
        studio.run_fidelity(bad, model="m", per_pathology=False, min_count=1, kid_subsets=5, session="bob")
    row = store.runs(kind="fidelity")[0]
    assert row["status"] == "partial" and row["session"] == "bob"
    assert "bad.png" in store.get(row["id"])["result"]["error"]
    assert "partial" in set(studio.leaderboard()["status"])  # the leaderboard shows the mark


# ------------------------------------------------------------------------------------------ two sessions
def test_two_sessions_generating_at_once_get_their_own_results(studio):
    prompts = {"alice": ("Small left pleural effusion.", 3), "bob": ("Enlarged cardiac silhouette.", 11)}
    alone = {who: studio.generate(ORACLE, p, n=2, seed=s, session=who) for who, (p, s) in prompts.items()}
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def user(who):
        try:
            barrier.wait()
            p, s = prompts[who]
            gen = studio.generate(ORACLE, p, n=2, seed=s, session=who)
            results[who] = (gen, studio.export_zip(gen))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(who,)) for who in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and set(results) == set(prompts)
    for who, (gen, zip_path) in results.items():
        assert gen.session == who and gen.prompts == [prompts[who][0]] * 2
        for a, b in zip(gen.images, alone[who].images):
            np.testing.assert_array_equal(a, b)  # same as generating alone: nothing mixed between sessions
        np.testing.assert_allclose(gen.top1, alone[who].top1)
        assert zip_path.parent == subdir("exports") / session_folder(who)
    assert not np.array_equal(results["alice"][0].images[0], results["bob"][0].images[0])


# ------------------------------------------------------------------------------------------ killed and resumed
RUNNER = textwrap.dedent("""
    import sys, time
    import evaluators.features as features
    features.CHUNK = 4  # small shards, so a kill lands between them
    pause = float(sys.argv[1])
    if pause:
        write = features.FeatureStore.write
        def slow_write(self, *a, **k):
            out = write(self, *a, **k)
            time.sleep(pause)
            return out
        features.FeatureStore.write = slow_write
    from evaluators.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _shards(home: Path) -> dict[str, list[str]]:
    out = {}
    for p in sorted((home / "features").rglob("shard-*.npz")):
        with np.load(p, allow_pickle=False) as d:
            out[p.name] = d["hashes"].tolist()
    return out


def _fidelity(home: Path, script: Path, args: list[str], pause: float, *, kill_after_shard: bool = False):
    env = {**os.environ, "CHEXGEN_HOME": str(home), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(pause), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_after_shard:
        deadline = time.monotonic() + 120
        while not list((home / "features").rglob("shard-*.npz")):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no shard appeared in 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        return proc.returncode, ""
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def test_a_killed_fidelity_run_resumes_from_the_cache_and_matches_an_uninterrupted_run(tmp_path):
    real = make_world(tmp_path / "real", patients=10, size=32, seed=0)
    syn = make_world(tmp_path / "syn", patients=10, size=32, seed=1)
    script = tmp_path / "run_fidelity.py"
    script.write_text(RUNNER)

    def args(out):
        return ["fidelity", "--real", str(real), "--synthetic", str(syn), "--encoder", "pixels", "--batch-size", "4",
                "--kid-subsets", "10", "--no-alignment", "--device", "cpu", "--out", str(out)]

    home = tmp_path / "home"
    rc, _ = _fidelity(home, script, args(tmp_path / "killed.json"), pause=0.5, kill_after_shard=True)
    assert rc == -signal.SIGKILL and not (tmp_path / "killed.json").exists()
    before = _shards(home)
    done_before = sum(len(h) for h in before.values())
    assert len(before) >= 1 and done_before < 40  # 20 + 20 images, 4 per shard: the kill came part-way

    rc, out = _fidelity(home, script, args(tmp_path / "resumed.json"), pause=0.0)
    assert rc == 0, out
    after = _shards(home)
    assert all(after[name] == hashes for name, hashes in before.items())  # kept, not rewritten
    encoded = [h for name, hashes in after.items() if name not in before for h in hashes]
    assert len(encoded) == 40 - done_before  # the rerun encoded only the remainder...
    assert len(set(encoded) | {h for hs in before.values() for h in hs}) == 40  # ...each image once

    rc, out = _fidelity(tmp_path / "fresh", script, args(tmp_path / "fresh.json"), pause=0.0)
    assert rc == 0, out
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    fresh = json.loads((tmp_path / "fresh.json").read_text())
    for metric, value in fresh["overall"]["pixels"].items():
        if isinstance(value, float):
            assert resumed["overall"]["pixels"][metric] == pytest.approx(value, rel=1e-9, abs=1e-12), metric
        elif isinstance(value, int):
            assert resumed["overall"]["pixels"][metric] == value, metric
