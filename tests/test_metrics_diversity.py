"""Diversity: Vendi score against the vendi-score package, intra-prompt MS-SSIM against torchmetrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from vendi_score import vendi

from evaluators.errors import InputError
from evaluators.metrics import diversity as V

# ---------------------------------------------------------------- Vendi


@pytest.mark.parametrize("n,d", [(40, 64), (300, 24)])
def test_vendi_equals_vendi_score_package(n, d):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 0.5
    ours = V.vendi_score(x)
    assert ours["Vendi"] == pytest.approx(vendi.score_dual(x), rel=1e-9)
    assert ours["Vendi"] == pytest.approx(vendi.score_X(x), rel=1e-8)
    assert V.vendi_score(x, q=2)["Vendi"] == pytest.approx(vendi.score_dual(x, q=2), rel=1e-9)
    assert V.vendi_score(x, q="inf")["Vendi"] == pytest.approx(vendi.score_dual(x, q="inf"), rel=1e-9)
    assert 1 <= ours["Vendi"] <= n and ours["n_used"] == n and not ours["subsampled"]


def test_vendi_known_values_and_subsample():
    assert V.vendi_score(np.tile([[1.0, 2.0, 3.0]], (20, 1)))["Vendi"] == pytest.approx(1.0)
    assert V.vendi_score(np.eye(7) * 3)["Vendi"] == pytest.approx(7.0)
    two = np.vstack([np.tile([1.0, 0.0], (5, 1)), np.tile([0.0, 1.0], (5, 1))])
    assert V.vendi_score(two)["Vendi"] == pytest.approx(2.0)  # two distinct modes, equally weighted
    x = np.random.default_rng(0).normal(size=(500, 8))
    sub = V.vendi_score(x, max_samples=100, seed=3)
    assert sub["subsampled"] and sub["n_used"] == 100 and sub["n"] == 500
    rows = np.sort(np.random.default_rng(3).choice(500, 100, replace=False))
    assert sub["Vendi"] == pytest.approx(vendi.score_dual(x[rows]), rel=1e-9)


def test_vendi_per_label():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 6))
    labels = np.full((30, 2), np.nan)
    labels[:10, 0] = 1
    labels[10:, 0] = 0
    labels[0, 1] = 1
    out = V.vendi_per_label(x, labels, ["A", "B"])
    assert out[0]["Vendi"] == pytest.approx(vendi.score_dual(x[:10]), rel=1e-9) and out[0]["n"] == 10
    assert out[1]["Vendi"] is None and out[1]["n"] == 1
    with pytest.raises(InputError, match="labels must be"):
        V.vendi_per_label(x, labels[:5], ["A", "B"])


# ---------------------------------------------------------------- intra-prompt MS-SSIM


def test_scales_follow_torchmetrics_limits():
    assert V.ms_ssim_scales(64, 64) == 3 and V.ms_ssim_scales(128, 128) == 4 and V.ms_ssim_scales(176, 176) == 5
    with pytest.raises(InputError, match="too small"):
        V.ms_ssim_scales(8, 8)


def test_intra_prompt_ms_ssim_equals_torchmetrics():
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

    rng = np.random.default_rng(0)
    base = rng.uniform(size=(64, 64)).astype(np.float32)
    smooth = torch.nn.functional.avg_pool2d(torch.from_numpy(base)[None, None], 5, 1, 2)[0, 0].numpy()
    group = [np.clip(smooth + rng.normal(scale=s, size=smooth.shape), 0, 1).astype(np.float32) for s in (0.02, 0.05, 0.1)]
    out = V.intra_prompt_ms_ssim({"p": group, "q": [smooth, smooth]})
    assert out["scales"] == 3 and sum(out["betas"]) == pytest.approx(1.0)
    metric = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0, betas=tuple(out["betas"]))
    ref = []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        metric.reset()
        metric.update(torch.from_numpy(group[i])[None, None], torch.from_numpy(group[j])[None, None])
        ref.append(float(metric.compute()))
    p, q = out["per_prompt"]
    assert p["MS_SSIM"] == pytest.approx(np.mean(ref), rel=1e-5) and p["n_pairs"] == 3
    assert q["MS_SSIM"] == pytest.approx(1.0, abs=1e-5)  # one image twice: no diversity
    assert out["MS_SSIM"] == pytest.approx((p["MS_SSIM"] + q["MS_SSIM"]) / 2)


def test_oracle_seeds_are_more_diverse_than_one_image():
    """The reference oracle draws a fresh patient per seed: lower MS-SSIM than a repeated image."""
    from evaluators.generators.baselines import OracleGenerator

    prompt = "Small left pleural effusion."
    imgs = OracleGenerator().generate([prompt] * 4, [0, 1, 2, 3], height=64, width=64)
    out = V.intra_prompt_ms_ssim({prompt: imgs, "same": [imgs[0]] * 4})
    per = {p["prompt"]: p["MS_SSIM"] for p in out["per_prompt"]}
    assert per[prompt] < per["same"] - 0.05


def test_ms_ssim_bad_input():
    img = np.zeros((64, 64), np.float32)
    with pytest.raises(InputError, match="at least 2 seeds"):
        V.intra_prompt_ms_ssim({"p": [img]})
    with pytest.raises(InputError, match="one size"):
        V.intra_prompt_ms_ssim({"p": [img, np.zeros((32, 32), np.float32)]})
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        V.intra_prompt_ms_ssim({"p": [img, img + 2]})
