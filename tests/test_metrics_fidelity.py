"""Fidelity metrics against torchmetrics, prdc, scipy and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from evaluators.errors import InputError
from evaluators.metrics import fidelity as F

pytestmark = pytest.mark.filterwarnings("ignore:Metric .* will save all extracted features")


class Identity(torch.nn.Module):
    """Feature extractor for torchmetrics that returns its input (the 'images' are features)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.num_features = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _sets(n_real: int, n_fake: int, d: int, seed: int = 0, shift: float = 0.5, scale: float = 1.3):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    real = rng.normal(size=(n_real, d)) @ mix + 1.0
    fake = (rng.normal(size=(n_fake, d)) * scale + shift) @ mix + 1.0
    return real, fake


def _tm_fid(real: np.ndarray, fake: np.ndarray) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    m = FrechetInceptionDistance(feature=Identity(real.shape[1]))
    m.update(torch.from_numpy(real), real=True)  # float64 in -> float64 out
    m.update(torch.from_numpy(fake), real=False)
    return float(m.compute())


# ---------------------------------------------------------------- FID


def test_fid_matches_torchmetrics_and_scipy_well_posed():
    real, fake = _sets(400, 350, 16)
    ours = F.fid(real, fake)
    assert ours == pytest.approx(_tm_fid(real, fake), rel=1e-9)
    mu1, s1 = F.feature_stats(real)
    mu2, s2 = F.feature_stats(fake)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    ref = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
    assert ours == pytest.approx(ref, rel=1e-9)
    # statistics as torchmetrics defines them: unbiased covariance
    np.testing.assert_allclose(s1, np.cov(real, rowvar=False), rtol=1e-12, atol=1e-12)


def test_fid_n_smaller_than_d_is_finite_and_matches():
    real, fake = _sets(40, 50, 96, seed=1)
    ours = F.fid(real, fake)
    assert np.isfinite(ours)
    assert ours == pytest.approx(_tm_fid(real, fake), rel=1e-4)
    # independent formula: tr sqrt(S1 S2) = nuclear norm of A1 A2^T with S = A^T A
    a1 = (real - real.mean(0)) / np.sqrt(len(real) - 1)
    a2 = (fake - fake.mean(0)) / np.sqrt(len(fake) - 1)
    nuc = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum()
    ref = ((real.mean(0) - fake.mean(0)) ** 2).sum() + (a1**2).sum() + (a2**2).sum() - 2 * nuc
    assert ours == pytest.approx(ref, rel=1e-7)


def test_fid_shifted_gaussians_closed_form():
    rng = np.random.default_rng(3)
    d = 12
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    a, b = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T  # commuting: tr sqrt(S1 S2) = sum sqrt(a b)
    expected = ((mu1 - mu2) ** 2).sum() + a.sum() + b.sum() - 2 * np.sqrt(a * b).sum()
    assert F.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    # pure shift, same covariance: FID = ||mu1 - mu2||^2
    assert F.frechet_distance(mu1, s1, mu2, s1) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-8)
    # torch inputs work too
    assert F.frechet_distance(torch.from_numpy(mu1), torch.from_numpy(s1), mu2, s2) == pytest.approx(expected)


def test_fid_identical_sets_is_zero():
    real, _ = _sets(300, 10, 32)
    scale = np.trace(F.feature_stats(real)[1])
    assert abs(F.fid(real, real)) < 1e-6 * scale
    small, _ = _sets(20, 10, 64)  # singular covariance
    assert abs(F.fid(small, small)) < 1e-6 * np.trace(F.feature_stats(small)[1])


def test_fid_stateful_batch_order_and_size_do_not_matter():
    real, fake = _sets(257, 199, 24, seed=4)
    real = real + 1e4  # large mean next to the spread: raw second moments would cancel badly
    fake = fake + 1e4
    expected = F.fid(real, fake)
    m = F.FID(24)
    for i in range(0, 257, 50):
        m.update(real[i:i + 50], real=True)
    m.update(torch.from_numpy(fake[:1]), real=False)
    m.update(torch.from_numpy(fake[1:]), real=False)
    assert m.compute() == pytest.approx(expected, rel=1e-9)
    m2 = F.FID(24)
    perm = np.random.default_rng(0).permutation(257)
    m2.update(real[perm][:7], True)
    m2.update(real[perm][7:], True)
    m2.update(fake[::-1], False)
    assert m2.compute() == pytest.approx(expected, rel=1e-9)
    m.reset()
    with pytest.raises(InputError):
        m.compute()


def test_fid_stateful_can_keep_real_features():
    real, fake = _sets(100, 100, 8)
    m = F.FID(8, reset_real_features=False)
    m.update(real, True)
    m.update(fake, False)
    m.reset()
    assert m.real_n == 100 and m.fake_n == 0
    m.update(real, False)
    assert abs(m.compute()) < 1e-8


def test_fid_with_precomputed_real_stats():
    real, fake = _sets(200, 150, 8)
    full = F.fidelity_metrics(real, fake, kid_subsets=3)
    cached = F.fidelity_metrics(real, fake, kid_subsets=3, real_stats=F.feature_stats(real))
    assert cached["FID"] == full["FID"]
    shifted = F.fidelity_metrics(real, fake, kid_subsets=3, real_stats=(real.mean(0) + 1, np.cov(real.T)))
    assert shifted["FID"] != pytest.approx(full["FID"])
    core = {"FID", "KID", "KID_std", "Precision", "Recall", "Density", "Coverage", "n_real", "n_synthetic"}
    from evaluators.metrics import registry

    default_on = {o.key for m in registry.metrics("fidelity", inputs=("real", "synthetic")) if not m.opt_in
                  and m.applies_to(None) for o in m.outputs}
    assert core <= set(full) and default_on <= set(full)  # the registry's default metrics, FID...Coverage first
    assert set(full) - core - default_on <= {"n_vendi"}  # and nothing else but their stated details
    assert full["n_real"] == 200 and full["n_synthetic"] == 150


# ---------------------------------------------------------------- KID


def _tm_kid(real, fake, seed, **kw):
    from torchmetrics.image.kid import KernelInceptionDistance

    m = KernelInceptionDistance(feature=Identity(real.shape[1]), **kw)
    m.update(torch.from_numpy(real), real=True)
    m.update(torch.from_numpy(fake), real=False)
    torch.manual_seed(seed)
    mean, std = m.compute()
    return float(mean), float(std)


def test_kid_matches_torchmetrics_with_same_seed():
    real, fake = _sets(80, 90, 10, seed=5)
    tm = _tm_kid(real, fake, 7, subsets=9, subset_size=40)
    ours = F.kid(real, fake, subsets=9, subset_size=40, seed=7)
    assert ours[0] == pytest.approx(tm[0], rel=1e-10)
    assert ours[1] == pytest.approx(tm[1], rel=1e-8)
    assert ours[1] > 0
    # a different seed draws different subsets
    assert F.kid(real, fake, subsets=9, subset_size=40, seed=8)[0] != pytest.approx(tm[0], rel=1e-10)


def test_kid_default_subset_size_is_min_of_sets():
    real, fake = _sets(70, 55, 6, seed=6)
    tm = _tm_kid(real, fake, 0, subsets=5, subset_size=55)
    ours = F.kid(real, fake, subsets=5, seed=0)  # default: min(70, 55) = 55, cached fake sums
    assert ours[0] == pytest.approx(tm[0], rel=1e-10)
    assert ours[1] == pytest.approx(tm[1], rel=1e-6)
    # equal sizes: every subset is the whole set -> one MMD, std 0 (torchmetrics: round-off only)
    tm_eq = _tm_kid(real[:55], fake, 0, subsets=4, subset_size=55)
    mean, std = F.kid(real[:55], fake, subsets=4)
    assert mean == pytest.approx(tm_eq[0], rel=1e-10)
    assert std == 0.0 and tm_eq[1] < 1e-12


def test_kid_from_subsets_with_torchmetrics_draws_and_gamma():
    real, fake = _sets(40, 45, 5, seed=2)
    torch.manual_seed(11)
    draws = [(torch.randperm(40)[:20], torch.randperm(45)[:20]) for _ in range(6)]
    tm = _tm_kid(real, fake, 11, subsets=6, subset_size=20, degree=2, gamma=0.3, coef=0.5)
    ours = F.kid_from_subsets(real, fake, draws, degree=2, gamma=0.3, coef=0.5)
    assert ours[0] == pytest.approx(tm[0], rel=1e-10)
    for (a, b), (c, e) in zip(draws, F.kid_subsets(40, 45, subsets=6, subset_size=20, seed=11)):
        assert torch.equal(a, c) and torch.equal(b, e)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 8)), rng.normal(size=(300, 8))
    same, _ = F.kid(a, b, subsets=3)
    shifted, _ = F.kid(a, b + 1.0, subsets=3)
    assert abs(same) < 0.02 < shifted


def test_kid_errors_are_input_errors():
    real, fake = _sets(30, 20, 4)
    with pytest.raises(InputError, match="subset size"):
        F.kid(real, fake, subset_size=25)
    with pytest.raises(InputError, match="indices"):
        F.kid_from_subsets(real, fake, [(np.arange(5), np.arange(18, 23))])


# ---------------------------------------------------------------- Inception Score


def test_inception_score_matches_torchmetrics_with_same_seed():
    from torchmetrics.image.inception import InceptionScore

    logits = np.random.default_rng(1).normal(size=(103, 20)) * 3
    m = InceptionScore(feature=Identity(20), splits=10)
    m.update(torch.from_numpy(logits))
    torch.manual_seed(2)
    tm = [float(v) for v in m.compute()]
    ours = F.inception_score(logits, 10, seed=2)
    assert ours[0] == pytest.approx(tm[0], rel=1e-12)
    assert ours[1] == pytest.approx(tm[1], rel=1e-10)
    s = F.InceptionScore(splits=10, seed=2)
    s.update(logits[:50])
    s.update(logits[50:])
    assert s.compute() == pytest.approx(ours)


def test_inception_score_known_values():
    assert F.inception_score(np.zeros((40, 7)), splits=4)[0] == pytest.approx(1.0)
    confident = np.tile(np.eye(5) * 50.0, (8, 1))  # every split holds all 5 classes equally
    mean, std = F.inception_score(confident, splits=2, shuffle=False)
    assert mean == pytest.approx(5.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- PRDC


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_prdc_matches_prdc_package(dtype, capsys):
    from prdc import compute_prdc

    real, fake = _sets(300, 260, 10, seed=7, shift=0.3, scale=1.2)
    real, fake = real.astype(dtype), fake.astype(dtype)
    ref = compute_prdc(real, fake, 5)
    ours = F.prdc(real, fake, k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(float(ref[key]), abs=1e-6), key
    assert 0 < ours["precision"] < 1 and 0 < ours["coverage"] < 1  # a non-trivial case


def test_prdc_chunked_equals_unchunked_and_class():
    real, fake = _sets(123, 97, 6, seed=8)
    whole = F.prdc(real, fake, k=3, chunk_size=10_000)
    assert F.prdc(real, fake, k=3, chunk_size=7) == whole
    assert F.prdc(real, fake, k=3, chunk_size=1) == whole
    m = F.PRDC(k=3)
    m.update(real[:60], True)
    m.update(real[60:], True)
    m.update(torch.from_numpy(fake), False)
    assert m.compute() == whole


def test_prdc_identical_sets():
    real, _ = _sets(200, 10, 8, seed=9)
    out = F.prdc(real, real, k=5)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    assert out["density"] > 0.9
    from prdc import compute_prdc

    ref = compute_prdc(real, real, 5)  # exact ties at the k-th neighbour: '<' must stay strict
    assert out["density"] == pytest.approx(float(ref["density"]), abs=1e-12)


def test_prdc_disjoint_sets_are_zero():
    real, fake = _sets(100, 100, 4, shift=100.0, scale=1.0)
    out = F.prdc(real, fake, k=5)
    assert out == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_prdc_never_builds_the_full_distance_matrix(monkeypatch):
    real, fake = _sets(300, 250, 6, seed=10)
    expected = F.prdc(real, fake, k=5)
    shapes = []
    original = F._distance_block

    def spy(a, *args):
        out = original(a, *args)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(F, "_distance_block", spy)
    monkeypatch.setattr(F, "_BLOCK_ELEMENTS", 5_000)
    assert F.prdc(real, fake, k=5) == expected
    assert max(r * c for r, c in shapes) <= 5_000
    assert sum(r for r, c in shapes if c == 250) == 300 + 250  # every real row vs fakes, every fake row


@pytest.mark.slow
def test_prdc_large_runs():
    """20,000 x 20,000 x 64 (about 10 s on 2 idle cores; an N x M float64 matrix would be 3.2 GB)."""
    rng = np.random.default_rng(0)
    real = rng.normal(size=(20_000, 64)).astype(np.float32)
    fake = (rng.normal(size=(20_000, 64)) * 1.1).astype(np.float32)
    out = F.prdc(real, fake, k=5)
    assert 0.3 < out["precision"] < 1 and 0.3 < out["recall"] < 1
    assert 0.3 < out["coverage"] < 1 and 0.1 < out["density"] < 1


# ---------------------------------------------------------------- KID / input checks


def test_kid_class_equals_function():
    real, fake = _sets(50, 60, 5)
    m = F.KID(subsets=4, subset_size=30, seed=3)
    m.update(real, True)
    m.update(fake[:10], False)
    m.update(fake[10:], False)
    assert m.compute() == F.kid(real, fake, subsets=4, subset_size=30, seed=3)
    m.reset()
    with pytest.raises(InputError):
        m.compute()


@pytest.mark.parametrize(
    ("real", "fake", "match"),
    [
        (np.ones((10, 3)), np.ones((10, 4)), "Feature sizes differ"),
        (np.ones(10), np.ones((10, 1)), "1-D"),
        (np.full((10, 3), np.nan), np.ones((10, 3)), "NaN"),
        (np.ones((1, 3)), np.ones((10, 3)), "at least 2"),
        (np.ones((0, 3)), np.ones((10, 3)), "empty"),
    ],
)
def test_bad_inputs_raise_input_error(real, fake, match):
    with pytest.raises(InputError, match=match):
        F.fid(real, fake)


def test_prdc_needs_more_than_k_samples():
    with pytest.raises(InputError, match="k=5"):
        F.prdc(np.random.rand(5, 3), np.random.rand(10, 3), k=5)
