"""The engine's stop token (evaluators/jobs.py), the knob limits (evaluators/limits.py) and the CLI's range checks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from evaluators import jobs, limits
from evaluators.errors import InputError
from evaluators.metrics.bootstrap import bootstrap_ci
from evaluators.metrics.fidelity import fid


def _sets():
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 16)), rng.normal(size=(30, 16)) + 0.2


def test_a_cancel_from_another_thread_stops_a_bootstrap_between_resamples():
    real, fake = _sets()
    seen = []
    token = jobs.Token(progress=lambda d, t, desc: seen.append((d, t, desc)))
    threading.Timer(0.5, token.cancel).start()
    t0 = time.monotonic()
    with jobs.running(token), pytest.raises(jobs.Stopped, match="cancelled"):
        bootstrap_ci(fid, real, fake, n_boot=10**7)
    assert time.monotonic() - t0 < 2.5
    assert seen and all(t == 10**7 and desc == "bootstrap resamples" for _, t, desc in seen)
    assert jobs.current() is None  # the token does not outlive its job
    bootstrap_ci(fid, real, fake, n_boot=5)  # without a token nothing is checked


def test_deadline_and_liveness_probe_stop_with_their_reason():
    token = jobs.Token(deadline_s=0.05)
    time.sleep(0.1)
    with pytest.raises(jobs.Stopped, match=r"time limit of 0\.05 s"):
        token.check()
    gone = jobs.Token(alive=lambda: False)
    with pytest.raises(jobs.Stopped, match="client disconnected"):
        gone.check()
    named = jobs.Token(alive=lambda: "cancelled")
    with pytest.raises(jobs.Stopped) as err:
        named.check()
    assert err.value.reason == "cancelled"
    broken = jobs.Token(alive=lambda: 1 / 0)  # a probe that fails never stops a job
    broken.check()


def test_limits_table_public_defaults_and_operator_override(monkeypatch):
    assert limits.check("bootstrap", 0, True) == 0 and limits.check("bootstrap", 200, True) == 200
    for bad in (1, 201, -3, 2.5, "x", None):
        with pytest.raises(InputError, match="Bootstrap resamples"):
            limits.check("bootstrap", bad, True)
    assert limits.check("bootstrap", 10_000, False) == 10_000
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_BOOTSTRAP", "1000")
    assert limits.maximum("bootstrap", True) == 1000 and limits.check("bootstrap", 1000, True) == 1000
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_BOOTSTRAP", "many")
    with pytest.raises(InputError, match="CHEXGEN_PUBLIC_MAX_BOOTSTRAP"):
        limits.maximum("bootstrap", True)
    for k in limits.KNOBS.values():  # public ranges are never wider than local ones, defaults inside them
        assert k.minimum <= k.public_default <= k.public_max <= k.local_max, k.name
    table = limits.table_markdown()
    assert all(k.env in table for k in limits.KNOBS.values())


@pytest.mark.parametrize("argv,words", [
    (["fidelity", "--min-count", "-1"], "--min-count"),
    (["fidelity", "--batch-size", "0"], "--batch-size"),
    (["fidelity", "--bootstrap", "1"], "--bootstrap"),
    (["fidelity", "--kid-subsets", "0"], "--kid-subsets"),
    (["utility", "--epochs", "0"], "--epochs"),
    (["utility", "--image-size", "8"], "--image-size"),
    (["utility", "--batch-size", "-4"], "--batch-size"),
    (["generate", "--steps", "0"], "--steps"),
])
def test_cli_ranges_are_checked_before_any_image_is_read(argv, words, capsys):
    from evaluators.cli import main

    common = {"fidelity": ["--real", "/nonexistent/real", "--synthetic", "/nonexistent/syn", "--out", "o.json"],
              "utility": ["--train", "/nonexistent/train", "--test", "/nonexistent/test", "--out", "u.json"],
              "generate": ["--model", "demo", "--prompts", "/nonexistent/p.csv", "--out", "/nonexistent/out"]}[argv[0]]
    with pytest.raises(SystemExit) as exit_:
        main([argv[0], *common, *argv[1:]])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert words in err and "out of range" in err and "nonexistent" not in err
