"""Reader-study statistics: hand-computed cases and scipy / scikit-learn references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import cohen_kappa_score, roc_auc_score, roc_curve

from evaluators.readerstudy.results import (
    accuracy_summary,
    cohen_kappa,
    compute_results,
    fleiss_kappa,
    roc_auc,
    roc_points,
    sens_spec,
    synthetic_score,
    wilson_interval,
)


@pytest.mark.parametrize(("k", "n"), [(0, 5), (3, 5), (5, 5), (6, 8), (37, 60), (500, 1000)])
def test_wilson_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_accuracy_p_value_is_scipy_binomtest():
    rng = np.random.default_rng(0)
    t = rng.random(41) < 0.5
    c = np.where(rng.random(41) < 0.7, t, ~t)
    d = accuracy_summary(t, c)
    assert d["correct"] == int((t == c).sum())
    assert d["p_value_vs_50"] == pytest.approx(binomtest(d["correct"], 41, 0.5).pvalue)


def test_auc_and_kappa_match_sklearn_with_ties():
    rng = np.random.default_rng(1)
    t = rng.random(60) < 0.5
    s = synthetic_score(rng.random(60) < 0.5, rng.integers(1, 6, 60))
    assert roc_auc(t, s) == pytest.approx(roc_auc_score(t, s), abs=1e-12)
    a, b = rng.integers(0, 3, 50), rng.integers(0, 3, 50)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b), abs=1e-12)
    calls_a = np.where(rng.random(30) < 0.5, "real", "synthetic")
    calls_b = np.where(rng.random(30) < 0.8, calls_a, "real")
    assert cohen_kappa(calls_a, calls_b) == pytest.approx(cohen_kappa_score(calls_a, calls_b), abs=1e-12)


def test_synthetic_score_scale():
    assert synthetic_score([False] * 5 + [True] * 5, [5, 4, 3, 2, 1, 1, 2, 3, 4, 5]).tolist() == list(range(1, 11))


def test_fleiss_kappa_wikipedia_example_and_perfect_agreement():
    # Fleiss (1971) as tabulated on Wikipedia: 10 subjects, 14 raters, 5 categories -> kappa 0.210.
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert round(fleiss_kappa(table), 3) == 0.210
    assert fleiss_kappa(np.array([[3, 0], [0, 3], [3, 0]])) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fleiss_kappa(np.array([[2, 0], [1, 0]]))


def test_sens_spec_by_hand():
    d = sens_spec([1, 1, 1, 0, 0], [1, 0, 1, 1, 0])
    assert (d["sensitivity"], d["specificity"]) == (pytest.approx(2 / 3), 0.5)


def _row(reader, item, truth, call, conf, findings, labels, quality):
    return {"reader": reader, "item": item, "truth": truth, "source": "real set" if truth == "real" else "model A",
            "call": call, "confidence": conf, "findings": findings, "labels": labels, "quality": quality}


LAB = {"A": {"Cardiomegaly": 1}, "B": {"No Finding": 1}, "C": {"Cardiomegaly": 1},
       "D": {"Cardiomegaly": 0, "Edema": -1}}
TRUTH = {"A": "real", "B": "real", "C": "synthetic", "D": "synthetic"}
ANSWERS = [  # reader, item, call, confidence, findings, quality
    ("r1", "A", "real", 5, ["Cardiomegaly"], 4), ("r1", "B", "synthetic", 2, ["Cardiomegaly"], 3),
    ("r1", "C", "synthetic", 4, [], 2), ("r1", "D", "synthetic", 1, ["Edema"], 5),
    ("r2", "A", "real", 3, [], 5), ("r2", "B", "real", 4, [], 4),
    ("r2", "C", "synthetic", 5, ["Cardiomegaly"], 3), ("r2", "D", "synthetic", 3, [], None),
]


def test_two_reader_study_against_hand_computed_values():
    res = compute_results([_row(r, i, TRUTH[i], c, k, f, LAB[i], q) for r, i, c, k, f, q in ANSWERS])
    r1, r2, pooled = res["per_reader"]["r1"], res["per_reader"]["r2"], res["pooled"]
    assert (r1["correct"], r1["n"], r2["correct"], pooled["correct"], pooled["n"]) == (3, 4, 4, 7, 8)
    # Wilson 7/8: centre (0.875 + z^2/16) / (1 + z^2/8) = 0.75335, half-width 0.22424
    assert (pooled["ci_low"], pooled["ci_high"]) == (pytest.approx(0.52911, abs=1e-5), pytest.approx(0.97758, abs=1e-5))
    assert pooled["p_value_vs_50"] == pytest.approx(18 / 256)  # 2 * P(X >= 7 | n=8, p=1/2)
    # scores: r1 A1 B7 C9 D6, r2 A3 B2 C10 D8 -> synthetic {9,6,10,8} beat real {1,7,3,2} in 15 of 16 pairs
    assert pooled["auc"] == pytest.approx(15 / 16)
    assert r1["auc"] == pytest.approx(3 / 4) and r2["auc"] == pytest.approx(1.0)
    # calls r1 R S S S, r2 R R S S: po 3/4, pe .25*.5 + .75*.5 = .5 -> kappa .5
    assert res["cohen_kappa"]["r1 vs r2"]["kappa"] == pytest.approx(0.5)
    # Fleiss, 2 raters: P_i 1,0,1,1 -> 0.75; p_j 3/8, 5/8 -> Pe 34/64; kappa (0.75 - 34/64) / (30/64) = 7/15
    assert res["fleiss_kappa"]["kappa"] == pytest.approx(7 / 15)
    real_c, syn_c = res["findings"]["real"]["Cardiomegaly"], res["findings"]["synthetic"]["Cardiomegaly"]
    assert (real_c["sensitivity"], real_c["specificity"]) == (0.5, 0.5)
    assert (syn_c["sensitivity"], syn_c["specificity"]) == (0.5, 1.0)
    edema = res["findings"]["synthetic"]["Edema"]  # D uncertain -> left out; C blank -> negative, never called
    assert edema["negatives"] == 2 and edema["specificity"] == 1.0 and math.isnan(edema["sensitivity"])
    q = res["quality"]["pooled"]
    assert q["real"]["mean"] == pytest.approx(4.0) and q["synthetic"]["mean"] == pytest.approx(10 / 3)
    assert q["synthetic"]["n"] == 3
    assert res["per_source"]["model A"]["n"] == 8
    assert res["summary"]["Reader accuracy"] == pytest.approx(7 / 8)


def _trapezoid(points: list[dict]) -> float:
    return sum((b["fpr"] - a["fpr"]) * (a["tpr"] + b["tpr"]) / 2 for a, b in itertools.pairwise(points))


def test_roc_points_by_hand_and_against_sklearn():
    res = compute_results([_row(r, i, TRUTH[i], c, k, f, LAB[i], q) for r, i, c, k, f, q in ANSWERS])
    # pooled scores: synthetic {9, 6, 10, 8}, real {1, 7, 3, 2}; threshold "score >= s" from 10 down to 1
    want = [(None, 0, 0), (10, 0, 0.25), (9, 0, 0.5), (8, 0, 0.75), (7, 0.25, 0.75), (6, 0.25, 1), (3, 0.5, 1),
            (2, 0.75, 1), (1, 1, 1)]
    assert [(p["threshold"], p["fpr"], p["tpr"]) for p in res["roc"]] == want
    assert res["pooled"]["roc"] == res["roc"] and res["pooled"]["n_roc"] == 8
    truth = [TRUTH[i] == "synthetic" for _, i, *_ in ANSWERS]
    score = synthetic_score([c == "synthetic" for _, _, c, *_ in ANSWERS], [k for _, _, _, k, *_ in ANSWERS])
    fpr, tpr, _ = roc_curve(truth, score, drop_intermediate=False)
    assert [(p["fpr"], p["tpr"]) for p in res["roc"]] == pytest.approx(list(zip(fpr, tpr)))
    for curve in (res["pooled"], res["per_reader"]["r1"], res["per_reader"]["r2"], res["per_source"]["model A"]):
        assert _trapezoid(curve["roc"]) == pytest.approx(curve["auc"])
    # per reader against sklearn: r1 scores A1 B7 C9 D6 -> 3/4; r2 A3 B2 C10 D8 -> 1
    for who, want_auc in (("r1", 0.75), ("r2", 1.0)):
        rows = [a for a in ANSWERS if a[0] == who]
        t = [TRUTH[i] == "synthetic" for _, i, *_ in rows]
        sc = synthetic_score([c == "synthetic" for _, _, c, *_ in rows], [k for _, _, _, k, *_ in rows])
        assert res["per_reader"][who]["auc"] == pytest.approx(roc_auc_score(t, sc)) == pytest.approx(want_auc)


def test_roc_of_a_random_answer_set_matches_sklearn():
    rng = np.random.default_rng(7)
    truth = rng.random(300) < 0.5
    call = np.where(rng.random(300) < 0.7, truth, ~truth)  # readers right 70% of the time
    conf = rng.integers(1, 6, 300)
    rows = [_row(f"r{j % 3}", f"i{j}", "synthetic" if t else "real", "synthetic" if c else "real", int(k), None,
                 {}, None) for j, (t, c, k) in enumerate(zip(truth, call, conf))]
    res = compute_results(rows)
    score = synthetic_score(call, conf)
    assert res["pooled"]["auc"] == pytest.approx(roc_auc_score(truth, score), abs=1e-12)
    fpr, tpr, thr = roc_curve(truth, score, drop_intermediate=False)
    assert [(p["fpr"], p["tpr"]) for p in res["roc"]] == pytest.approx(list(zip(fpr, tpr)))
    assert [p["threshold"] for p in res["roc"][1:]] == list(thr[1:])
    assert _trapezoid(res["roc"]) == pytest.approx(res["pooled"]["auc"], abs=1e-12)
    assert roc_points([True, True], [1, 2]) == [] and math.isnan(roc_auc([True], [1]))
