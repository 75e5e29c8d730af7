"""Memorisation search over the whole training set, patient-disjoint calibration, and the privacy summary."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators.errors import InputError
from evaluators.pathologies import INDEX, PATHOLOGIES
from evaluators.privacy.distances import pixel_distance, resize_to
from evaluators.privacy.memorisation import (
    Calibration,
    calibrate_threshold,
    calibration,
    flag,
    memorisation_summary,
    nearest_train,
    privacy_summary,
)
from evaluators.privacy.perturb import KINDS, perturb, perturb_chain

# --------------------------------------------------------------------------------------------------
# Tiny synthetic patients: a smooth "anatomy" per patient; a study adds a finding and noise.


def _field(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    f = np.zeros((size, size), np.float32)
    for _ in range(n):
        cy, cx = rng.uniform(0.15, 0.85, 2)
        s, a = rng.uniform(0.1, 0.25), rng.uniform(-1, 1)
        f += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return f


def _study(rng: np.random.Generator, anatomy: np.ndarray) -> np.ndarray:
    a = anatomy + 0.5 * _field(rng, anatomy.shape[0], 3)
    return np.clip(0.5 + 0.2 * a + rng.normal(0, 0.02, a.shape), 0, 1).astype(np.float32)


def _encode(imgs) -> np.ndarray:
    """A stand-in encoder: 8 x 8 thumbnail, mean removed (cosine then compares the layout)."""
    f = np.stack([resize_to(im, 8).ravel() for im in imgs]).astype(np.float64)
    return f - f.mean(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    anatomy = [_field(rng, 64, 6) for _ in range(100)]
    train = [_study(rng, anatomy[p]) for p in range(60) for _ in range(2)]
    train_pid = [f"p{p}" for p in range(60) for _ in range(2)]
    # Held-out real images: patients 20-59 also have training studies, 60-99 are new patients.
    held = [_study(rng, anatomy[p]) for p in range(20, 100) for _ in range(2)]
    held_pid = [f"p{p}" for p in range(20, 100) for _ in range(2)]
    return {"rng": rng, "train": train, "train_pid": train_pid, "T": _encode(train), "held": held,
            "held_pid": held_pid}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Search


def test_nearest_train_matches_brute_force():
    rng = np.random.default_rng(1)
    train, query = rng.normal(size=(300, 16)), rng.normal(size=(37, 16))
    sims, idx = nearest_train(query, train, k=3, chunk=10)
    t = train / np.linalg.norm(train, axis=1, keepdims=True)
    q = query / np.linalg.norm(query, axis=1, keepdims=True)
    full = q @ t.T
    np.testing.assert_array_equal(idx, np.argsort(-full, axis=1)[:, :3])
    np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :3], atol=1e-5)
    s1, i1 = nearest_train(train[:5] * 3.0, train)  # a scaled copy is its own nearest, similarity 1
    np.testing.assert_array_equal(i1[:, 0], np.arange(5))
    np.testing.assert_allclose(s1[:, 0], 1.0, atol=1e-5)
    s_all, _ = nearest_train(query[:2], train[:4], k=10)  # k larger than the training set
    assert s_all.shape == (2, 4) and np.all(np.diff(s_all, axis=1) <= 1e-7)
    with pytest.raises(InputError, match="Feature sizes differ"):
        nearest_train(query[:, :8], train)
    with pytest.raises(InputError, match="all-zero"):
        nearest_train(np.zeros((1, 16)), train)


# --------------------------------------------------------------------------------------------------
# Calibration


def test_threshold_is_the_percentile():
    sims = np.linspace(0, 1, 1001)
    assert calibrate_threshold(sims) == pytest.approx(0.99)
    assert calibrate_threshold(sims, percentile=95) == pytest.approx(0.95)
    assert calibrate_threshold(sims[:, None]) == pytest.approx(0.99)  # a [N, k] top-k result: column 0
    assert flag(sims, 0.99).sum() == 10  # strictly above
    for bad in ([], [np.nan, 1.0]):
        with pytest.raises(InputError):
            calibrate_threshold(bad)
    with pytest.raises(InputError, match="Percentile"):
        calibrate_threshold(sims, percentile=0)


def test_calibration_drops_training_patients():
    sims = np.array([0.99, 0.98, 0.5, 0.6, 0.7])
    cal = calibration(
        sims, 100, heldout_patient_ids=["a", "b", "x", "y", "z"], train_patient_ids=["a", "b", "c"]
    )
    assert cal.threshold == pytest.approx(0.7) and cal.n_used == 3 and cal.n_dropped_same_patient == 2
    assert any("training patients" in n for n in cal.notes)
    with pytest.raises(InputError, match="held-out"):
        calibration(sims[:2], heldout_patient_ids=["a", "b"], train_patient_ids=["a", "b"])
    with pytest.raises(InputError, match="entries"):
        calibration(sims, heldout_patient_ids=["a"], train_patient_ids=["a"])
    with pytest.raises(InputError, match="train_patient_ids"):
        calibration(sims, heldout_patient_ids=list("abcde"))


def test_same_patient_studies_would_inflate_the_threshold(world):
    """Held-out studies of training patients look like their training images: calibrating on them
    hides copies. Patient-disjoint calibration keeps the threshold where fresh images sit."""
    sims, _ = nearest_train(_encode(world["held"]), world["T"])
    leaky = calibrate_threshold(sims)
    disjoint = calibration(sims, heldout_patient_ids=world["held_pid"], train_patient_ids=world["train_pid"])
    assert disjoint.n_dropped_same_patient == 80 and disjoint.n_used == 80
    assert leaky > disjoint.threshold + 0.02
    rng = np.random.default_rng(5)
    shifted = [perturb(world["train"][i], "shift", rng) for i in range(0, 120, 2)]
    s_copy, _ = nearest_train(_encode(shifted), world["T"])
    assert flag(s_copy, disjoint.threshold).mean() > flag(s_copy, leaky).mean() + 0.3


@pytest.mark.parametrize("kind", KINDS)
def test_light_changes_of_training_images_are_flagged(world, kind):
    sims, _ = nearest_train(_encode(world["held"]), world["T"])
    thr = calibrate_threshold(
        sims, heldout_patient_ids=world["held_pid"], train_patient_ids=world["train_pid"]
    )
    rng = np.random.default_rng(7)
    src = np.arange(0, 120, 2)
    copies = [perturb(world["train"][i], kind, rng) for i in src]
    s_copy, nn = nearest_train(_encode(copies), world["T"])
    assert flag(s_copy, thr).mean() >= 0.8
    assert (nn[:, 0] == src).mean() >= 0.9  # and the search finds the image that was copied
    # Images of new patients are flagged at about the calibrated rate (1%), not more than 5%.
    fresh = [_study(rng, _field(rng, 64, 6)) for _ in range(200)]
    s_fresh, _ = nearest_train(_encode(fresh), world["T"])
    assert flag(s_fresh, thr).mean() <= 0.05


# --------------------------------------------------------------------------------------------------
# Summaries


def test_memorisation_summary():
    sims = np.array([0.2, 0.95, 0.5, 0.99, 0.97])
    nn = np.array([0, 3, 1, 3, 4])
    pids = ["a", "b", "c", "b", "d"]
    cal = Calibration(threshold=0.9, percentile=99.0, n_used=500)
    out = memorisation_summary(sims, cal, nn_index=nn, train_patient_ids=pids, top=2)
    assert out["n"] == 5 and out["n_flagged"] == 3 and out["fraction_flagged"] == pytest.approx(0.6)
    assert out["distinct_train_images_flagged"] == 2  # rows 3 and 4
    assert out["distinct_train_patients_flagged"] == 2  # b and d
    assert out["excess_over_expected"] == pytest.approx(60.0)
    assert [r["synthetic"] for r in out["top"]] == [3, 4]
    assert out["top"][0] == {
        "synthetic": 3,
        "similarity": 0.99,
        "flagged": True,
        "train_index": 3,
        "train_patient": "b",
    }
    plain = memorisation_summary(sims, 0.96)
    assert plain["n_flagged"] == 2 and "excess_over_expected" not in plain
    with pytest.raises(InputError, match="rows"):
        memorisation_summary(sims, 0.9, nn_index=nn[:3])


def test_privacy_summary_overall_and_per_pathology():
    scores = np.array([0.9, 0.2, 0.6, 0.4])
    flagged = np.array([True, False, False, False])
    labels = np.full((4, len(PATHOLOGIES)), np.nan)
    labels[:, INDEX["Cardiomegaly"]] = [1, 1, 0, -1]
    labels[:, INDEX["Edema"]] = [0, 0, 1, 1]
    out = privacy_summary(scores, flagged, labels)
    o = out["overall"]
    assert o["n"] == 4 and o["mean_reid"] == pytest.approx(0.525) and o["max_reid"] == 0.9
    assert o["fraction_reidentified"] == 0.5 and o["fraction_flagged"] == 0.25
    table = out["per_pathology"].set_index("pathology")
    assert list(table.index) == list(PATHOLOGIES)
    assert table.loc["Cardiomegaly", "n"] == 2  # uncertain (-1) is not positive
    assert table.loc["Cardiomegaly", "mean_reid"] == pytest.approx(0.55)
    assert table.loc["Cardiomegaly", "fraction_flagged"] == 0.5
    assert table.loc["Edema", "max_reid"] == 0.6 and table.loc["Edema", "fraction_reidentified"] == 0.5
    assert table.loc["Fracture", "n"] == 0 and np.isnan(table.loc["Fracture", "mean_reid"])


def test_privacy_summary_with_a_missing_model_and_a_table():
    import pandas as pd

    df = pd.DataFrame(
        {"Cardiomegaly": [1.0, 0.0, 1.0], "Edema": [np.nan, 1.0, 1.0], "prompt": ["x", "y", "z"]}
    )
    out = privacy_summary(None, [True, False, True], df)
    assert np.isnan(out["overall"]["mean_reid"]) and out["overall"]["fraction_flagged"] == pytest.approx(
        2 / 3
    )
    table = out["per_pathology"].set_index("pathology")
    assert list(table.index) == ["Cardiomegaly", "Edema"] and table.loc["Edema", "fraction_flagged"] == 0.5
    assert out["overall"]["n"] == 3 and privacy_summary([0.7], None)["per_pathology"] is None
    with pytest.raises(InputError, match="one per image"):
        privacy_summary([0.1, 0.2], [True])
    with pytest.raises(InputError, match="needs"):
        privacy_summary(None, None)
    with pytest.raises(InputError, match="rows"):
        privacy_summary([0.1, 0.2], None, np.zeros((3, len(PATHOLOGIES))))


# --------------------------------------------------------------------------------------------------
# Perturbations


@pytest.mark.parametrize("kind", [*KINDS, "random"])
def test_perturbations_are_light_and_reproducible(kind):
    rng = np.random.default_rng(0)
    img = _study(rng, _field(rng, 64, 6))
    out = perturb(img, kind, np.random.default_rng(3))
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_array_equal(out, perturb(img, kind, np.random.default_rng(3)))
    d = pixel_distance(img, out)
    assert d < 0.1
    if kind != "identity":
        assert d > 0.0
    uint8 = perturb((img * 255).astype(np.uint8), kind, 3)
    assert uint8.dtype == np.float32 and uint8.max() <= 1.0
    with pytest.raises(InputError, match="Unknown perturbation"):
        perturb(img, "flip", rng)


def test_perturb_chain():
    rng = np.random.default_rng(0)
    img = _study(rng, _field(rng, 32, 4))
    out = perturb_chain(img, ("shift", "jpeg"), 1)
    assert out.shape == img.shape and 0 < pixel_distance(img, out) < 0.15


# --------------------------------------------------------------------------------------------------
# Conformal calibration


def test_conformal_threshold_p_values_and_refused_levels():
    from evaluators.privacy.memorisation import (
        conformal_threshold,
        p_values,
        realised_rate_bound,
        smallest_level,
    )

    cal = np.arange(1, 100) / 100.0  # 99 scores 0.01 .. 0.99
    assert conformal_threshold(cal, 0.01) == pytest.approx(0.99)  # rank ceil(100 * 0.99) = 99
    assert conformal_threshold(cal, 0.05) == pytest.approx(0.95)
    test = np.array([0.995, 0.99, 0.5, 0.0])
    np.testing.assert_allclose(p_values(cal, test), [1 / 100, 2 / 100, 51 / 100, 1.0])
    # the flag (score above the threshold) is exactly p <= level
    rng = np.random.default_rng(0)
    s = rng.random(500)
    for level in (0.01, 0.05, 0.2):
        np.testing.assert_array_equal(s > conformal_threshold(cal, level), p_values(cal, s) <= level)
    assert smallest_level(99) == pytest.approx(0.01)
    with pytest.raises(InputError, match=r"support levels down to 0\.02"):
        conformal_threshold(cal[:49], 0.01)
    # exchangeable new scores are flagged at about the level (the split-conformal guarantee, on average)
    rates = [np.mean(rng.random(2000) > conformal_threshold(rng.random(199), 0.05)) for _ in range(200)]
    assert abs(np.mean(rates) - 0.05) < 0.006
    assert 0.05 < realised_rate_bound(199, 0.05) < 0.08  # its run-to-run spread
