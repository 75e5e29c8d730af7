"""Bootstrap confidence intervals: coverage of the estimate, shrinking width, the FID fast path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluators.errors import InputError
from evaluators.metrics.bootstrap import bootstrap_ci, bootstrap_fid
from evaluators.metrics.fidelity import fid, prdc


def _shifted(n: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 0.7


def test_ci_contains_estimate_and_shrinks_with_n():
    widths = []
    for n in (200, 2000):
        real, fake = _shifted(n, 3, seed=n)
        ci = bootstrap_fid(real, fake, n_boot=200, seed=1)
        assert ci["low"] < ci["estimate"] < ci["high"]
        assert ci["estimate"] == pytest.approx(fid(real, fake), rel=1e-9)
        assert ci["n_boot"] == 200 and ci["std"] > 0
        widths.append(ci["high"] - ci["low"])
    assert widths[1] < 0.6 * widths[0]  # ~1/sqrt(10) expected


@pytest.mark.parametrize(("n", "d"), [(300, 5), (40, 60)])  # covariance path and n < d path
def test_fid_fast_path_equals_generic_bootstrap(n, d):
    real, fake = _shifted(n, d, seed=3)
    fake = fake[: n - 7]
    for resample in ("both", "fake", "real"):
        slow = bootstrap_ci(fid, real, fake, n_boot=12, seed=5, resample=resample)
        fast = bootstrap_fid(real, fake, n_boot=12, seed=5, resample=resample)
        for key in ("estimate", "mean", "low", "high", "std"):
            assert fast[key] == pytest.approx(slow[key], rel=1e-6), (resample, key)


def test_dict_metric_gives_one_interval_per_key_and_is_reproducible():
    real, fake = _shifted(120, 4, seed=4)
    out = bootstrap_ci(lambda r, f: prdc(r, f, k=3), real, fake, n_boot=20, seed=9)
    assert set(out) == {"precision", "recall", "density", "coverage"}
    for v in out.values():
        assert v["low"] <= v["mean"] <= v["high"] and v["n_boot"] == 20
    assert bootstrap_ci(lambda r, f: prdc(r, f, k=3), real, fake, n_boot=20, seed=9) == out
    other = bootstrap_ci(lambda r, f: prdc(r, f, k=3), real, fake, n_boot=20, seed=10)
    assert other["precision"]["mean"] != out["precision"]["mean"]


def test_resample_one_side_keeps_the_other_fixed():
    real, fake = _shifted(100, 2, seed=6)
    ci = bootstrap_ci(lambda r, f: float(np.mean(r)), real, fake, n_boot=30, resample="fake")
    assert ci["low"] == ci["high"] == pytest.approx(real.mean())
    ci = bootstrap_ci(lambda r, f: float(np.mean(r)), real, fake, n_boot=30, resample="both")
    assert ci["low"] < ci["high"]


def test_single_set_metric_torch_inputs_and_nan_replicates():
    x = torch.arange(50, dtype=torch.float64)[:, None]
    ci = bootstrap_ci(lambda r: float(r.mean()), x, n_boot=50, seed=0)
    assert ci["low"] < 24.5 < ci["high"]
    calls = iter(range(1000))

    def flaky(r):
        return float("nan") if next(calls) % 2 else float(r.mean())

    ci = bootstrap_ci(flaky, x, n_boot=10, seed=0, estimate=False)
    assert ci["n_boot"] == 5 and ci["n_requested"] == 10


def test_bad_arguments_raise_input_error():
    real, fake = _shifted(20, 2)
    with pytest.raises(InputError, match="alpha"):
        bootstrap_ci(fid, real, fake, alpha=1.5)
    with pytest.raises(InputError, match="resample"):
        bootstrap_ci(fid, real, fake, resample="neither")
    with pytest.raises(InputError, match="n_boot"):
        bootstrap_fid(real, fake, n_boot=1)
