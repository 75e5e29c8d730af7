"""FRD's first-run statement (evaluators.extraction_cost): which images are uncached, from the feature cache and the
remembered file hashes without reading any image, and the statement the CLI and the app show before a run."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluators import extraction_cost as ec
from evaluators.features import FeatureStore
from evaluators.filehashes import file_hashes
from tests.ui_world import make_world


def _pngs(folder, n: int, size: int = 64):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        arr = (np.random.default_rng(i).random((size, size)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.png")
        paths.append(str(folder / f"{i}.png"))
    return paths


def _age(paths) -> None:
    """Older than filehashes.RACY_SECONDS, so that their hashes are remembered."""
    import os
    import time

    for p in paths:
        os.utime(p, (time.time() - 60, time.time() - 60))


def test_seconds_per_image_follows_the_measured_table_and_grows_beyond_it():
    for side, sec in zip(ec.COST_SIDES, ec.COST_SECONDS, strict=True):
        assert ec.seconds_per_image(side * side) == pytest.approx(sec)
    assert ec.COST_SECONDS[1] < ec.seconds_per_image(200 * 200) < ec.COST_SECONDS[3]
    assert ec.seconds_per_image(2048 * 2048) > 3 * ec.COST_SECONDS[-1]  # 4x the pixels of the last point


def test_uncached_counts_from_the_cache_without_reading_images(tmp_path, monkeypatch):
    paths = _pngs(tmp_path / "imgs", 6)
    _age(paths)
    key = "radiomics-testkey"
    assert ec.uncached(paths, key) == paths  # no cache folder for the encoder yet
    hashes = file_hashes(paths)  # what a run leaves behind: each file's hash remembered
    FeatureStore(key).write(hashes[:4], {"features": np.zeros((4, 3), dtype=np.float32)})

    import evaluators.imageio

    def no_reading(path):
        raise AssertionError(f"{path} was read")

    monkeypatch.setattr(evaluators.imageio, "image_hash", no_reading)
    assert ec.uncached(paths, key) == paths[4:]
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(paths[0])  # changed on disk: its old hash no longer counts
    assert ec.uncached(paths, key) == [paths[0], *paths[4:]]


def test_first_run_cost_states_the_radiomic_extraction_of_uncached_images(tmp_path, monkeypatch):
    pytest.importorskip("radiomics")
    # its own home: the stand-in features written below must not reach later tests' radiomics cache (the same
    # tiny world's images, hence the same content hashes, are FRD's inputs in tests/test_runs.py)
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    from evaluators.encoders import load_encoder
    from evaluators.imagesets import load_image_set
    from evaluators.runs import RunContext

    world = make_world(tmp_path / "world", patients=20, size=64)  # not the demo world: FRD is a default metric
    ctx = RunContext(f"{world}@train", encoder="pixels", device="cpu")
    ref = ctx.reference_set()
    syn = load_image_set(f"{world}@test")
    _age([*ref.paths, *syn.paths])
    text = ec.first_run_cost(ctx, syn, min_seconds=0)
    n_ref, n_syn = len(ref), len(syn)
    per = ec.seconds_per_image(64 * 64)
    assert text == (f"FRD: radiomic features for {n_ref + n_syn} uncached image(s) ({n_ref} reference, {n_syn} "
                    f"synthetic; about 64 px square): about {per * (n_ref + n_syn):.0f} s on one core (~{per:.2f} "
                    "CPU-s per image), once; cached afterwards.")
    assert ec.first_run_cost(ctx, syn) is None  # a few seconds of work: nothing to say
    assert ec.first_run_cost(ctx, syn, ["pixels"], min_seconds=0) is None  # no FRD in this run
    hashes = file_hashes(list(ref.paths))  # the reference's features cached (as after one run)
    FeatureStore(load_encoder("radiomics").cache_key()).write(hashes, {"features": np.zeros((n_ref, 2), np.float32)})
    assert f"for {n_syn} uncached image(s) (0 reference, {n_syn} synthetic" in ec.first_run_cost(ctx, syn, min_seconds=0)


def test_first_run_cost_is_silent_on_the_demo_world(tmp_path):
    pytest.importorskip("radiomics")
    from evaluators.demo_world import generate_demo_world
    from evaluators.imagesets import load_image_set

    generate_demo_world(tmp_path / "demo", patients=8, seed=0, size=64)
    demo = load_image_set(str(tmp_path / "demo"))
    assert ec.first_run_cost(demo, demo, min_seconds=0) is None  # FRD is not a default metric there
    assert "uncached image(s)" in ec.first_run_cost(demo, demo, ["radiomics"], min_seconds=0)  # asked for


def test_cli_states_the_cost_before_the_run(tmp_path, monkeypatch, capsys):
    pytest.importorskip("radiomics")
    import evaluators.runs.fidelity
    from evaluators.cli import main as cli
    from evaluators.errors import InputError

    world = make_world(tmp_path / "world", patients=12, size=64)
    monkeypatch.setattr(ec, "MIN_SECONDS", 0.0)

    def stop(*a, **k):
        raise InputError("stopped after the estimate (test)")

    monkeypatch.setattr(evaluators.runs.fidelity, "run", stop)
    out = tmp_path / "f.json"
    assert cli(["fidelity", "--real", f"{world}@train", "--synthetic", f"{world}@test", "--encoder", "pixels",
                "--encoder", "radiomics", "--device", "cpu", "--out", str(out), "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "FRD: radiomic features for " in err and "once; cached afterwards." in err
    assert err.index("FRD: radiomic features") < err.index("stopped after the estimate")
    assert not out.exists()  # nothing written: the run itself never started
