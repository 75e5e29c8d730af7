"""Multi-label classification metrics against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from evaluators.errors import InputError
from evaluators.metrics import classification as C


def _data(n: int = 200, c: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, c)) < rng.uniform(0.1, 0.6, c)).astype(float)
    scores = np.clip(0.35 * y + rng.random((n, c)) * 0.7, 0, 1)
    scores = np.round(scores, 2)  # ties between positives and negatives
    return y, scores


def test_auc_matches_sklearn_per_class_and_macro():
    y, s = _data()
    out = C.multilabel_auc(y, s, names=list("abcdef"))
    ref = [roc_auc_score(y[:, j], s[:, j]) for j in range(6)]
    assert list(out["per_class"]) == list("abcdef")
    np.testing.assert_allclose(list(out["per_class"].values()), ref, rtol=1e-12)
    assert out["macro"] == pytest.approx(np.mean(ref), rel=1e-12)
    assert out["macro"] == pytest.approx(roc_auc_score(y, s, average="macro"), rel=1e-12)


def test_auc_masks_nan_labels_and_skips_single_class_columns():
    y, s = _data(seed=1)
    y[::3, 0] = np.nan
    y[:, 2] = 0.0  # one class only -> undefined
    out = C.multilabel_auc(y, s)
    keep = ~np.isnan(y[:, 0])
    assert out["per_class"]["0"] == pytest.approx(roc_auc_score(y[keep, 0], s[keep, 0]), rel=1e-12)
    assert out["per_class"]["2"] is None
    defined = [roc_auc_score(y[:, j], s[:, j]) for j in (1, 3, 4, 5)] + [out["per_class"]["0"]]
    assert out["macro"] == pytest.approx(np.mean(defined), rel=1e-12)
    assert C.multilabel_auc(np.zeros((5, 2)), np.random.rand(5, 2))["macro"] is None


def test_auc_perfect_and_inverted():
    y = np.array([[0], [0], [1], [1]], dtype=float)
    assert C.multilabel_auc(y, [[0.1], [0.2], [0.8], [0.9]])["macro"] == 1.0
    assert C.multilabel_auc(y, [[0.9], [0.8], [0.2], [0.1]])["macro"] == 0.0
    assert C.multilabel_auc(y, [[0.5], [0.5], [0.5], [0.5]])["macro"] == 0.5


def test_f1_precision_recall_accuracy_match_sklearn():
    y, s = _data(seed=2)
    pred = (s >= 0.5).astype(int)
    pred[:, 5] = 0  # a class never predicted: zero_division=0
    out = C.precision_recall_f1(y, pred)
    for avg in ("micro", "macro"):
        assert out[f"f1_{avg}"] == pytest.approx(f1_score(y, pred, average=avg, zero_division=0), rel=1e-12)
        assert out[f"precision_{avg}"] == pytest.approx(
            precision_score(y, pred, average=avg, zero_division=0), rel=1e-12)
        assert out[f"recall_{avg}"] == pytest.approx(
            recall_score(y, pred, average=avg, zero_division=0), rel=1e-12)
    assert C.f1_micro_macro(y, pred) == {"f1_micro": out["f1_micro"], "f1_macro": out["f1_macro"]}
    assert C.accuracy(y, pred) == pytest.approx(accuracy_score(y.ravel(), pred.ravel()), rel=1e-12)


def test_masked_entries_are_left_out_of_f1_and_accuracy():
    y = np.array([[1, 0], [0, np.nan], [1, 1]], dtype=float)
    pred = np.array([[1, 0], [1, 1], [0, 1]])
    # unmasked entries: (1,1) (0,0) (0,1) (1,0) (1,1) -> 3 of 5 correct
    assert C.accuracy(y, pred) == pytest.approx(3 / 5)
    out = C.f1_micro_macro(y, pred)
    # class 0: tp 1 fp 1 fn 1 -> F1 0.5; class 1 (row 2 masked): tp 1 -> F1 1
    assert out["f1_macro"] == pytest.approx(0.75)
    assert out["f1_micro"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))


def test_classification_report_uses_threshold_inclusively():
    y, s = _data(seed=3)
    s[0, 0] = 0.5
    rep = C.classification_report(y, s, threshold=0.5, names=[f"L{i}" for i in range(6)])
    pred = (s >= 0.5).astype(int)
    assert rep["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", zero_division=0))
    assert rep["accuracy"] == pytest.approx(accuracy_score(y.ravel(), pred.ravel()))
    assert rep["auc_macro"] == pytest.approx(roc_auc_score(y, s))
    assert set(rep["auc_per_class"]) == {f"L{i}" for i in range(6)}
    assert rep["n"] == 200 and rep["threshold"] == 0.5


@pytest.mark.parametrize(
    ("y", "s", "match"),
    [
        (np.array([[1.0], [-1.0]]), np.array([[0.2], [0.3]]), "Map uncertain"),
        (np.ones((3, 2)), np.ones((3, 3)), "shape"),
        (np.array([[1.0], [0.0]]), np.array([[np.nan], [0.3]]), "NaN"),
    ],
)
def test_bad_inputs_raise_input_error(y, s, match):
    with pytest.raises(InputError, match=match):
        C.classification_report(y, s)


def test_non_binary_predictions_and_wrong_names_are_rejected():
    with pytest.raises(InputError, match="threshold"):
        C.f1_micro_macro(np.ones((2, 1)), np.array([[0.7], [0.2]]))
    with pytest.raises(InputError, match="names"):
        C.multilabel_auc(np.ones((2, 2)), np.ones((2, 2)), names=["a"])
    with pytest.raises(InputError, match="masked"):
        C.accuracy(np.full((2, 2), np.nan), np.ones((2, 2)))


def test_bootstrap_auc_replicates_match_sklearn_and_resample_patients():
    """Each replicate is the macro AUC under resampling weights (scikit-learn's weighted roc_auc_score per class);
    unit weights give the plain macro AUC; a patient's images are drawn together; the same seed pairs settings."""
    from sklearn.metrics import roc_auc_score

    from evaluators.metrics.classification import bootstrap_weights, macro_auc_replicates, multilabel_auc

    rng = np.random.default_rng(0)
    y = (rng.random((240, 3)) < 0.25).astype(float)
    y[:40, 1] = np.nan  # masked entries
    s = np.round(rng.random((240, 3)) + 0.4 * np.nan_to_num(y), 2)  # ties too
    assert macro_auc_replicates(y, s, np.ones((1, 240)))[0] == pytest.approx(multilabel_auc(y, s)["macro"], abs=1e-12)
    groups = np.repeat(np.arange(80), 3)  # 80 patients, 3 images each
    w = bootstrap_weights(240, groups, 20, seed=5)
    assert np.array_equal(w, bootstrap_weights(240, groups, 20, seed=5))  # paired across settings
    assert (w.reshape(20, 80, 3) == w.reshape(20, 80, 3)[:, :, :1]).all()  # a patient's images weigh alike
    assert (w.sum(axis=1) == 240).all()  # 80 patients drawn, 3 images each
    reps = macro_auc_replicates(y, s, w)
    for b in range(3):
        want = np.mean([roc_auc_score(y[~np.isnan(y[:, j]), j], s[~np.isnan(y[:, j]), j],
                                      sample_weight=w[b, ~np.isnan(y[:, j])]) for j in range(3)])
        assert reps[b] == pytest.approx(want, abs=1e-9)
