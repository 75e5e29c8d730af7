"""Reader-study results: pure functions of the answers (no database, no images).

- Accuracy at telling real from synthetic, per reader and pooled, with a **Wilson score** 95% interval
  (same numbers as ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``) and an exact two-sided
  binomial test against 50% (``scipy.stats.binomtest``). Pooled accuracy counts every (reader, image) answer
  as one trial; answers of one image by several readers are not independent, so the pooled interval is
  narrower than a reader-level analysis would give (said in the result's ``notes``).
- ROC of the 10-point "synthetic-ness" score built from call + confidence (real 5 -> 1 ... real 1 -> 5,
  synthetic 1 -> 6 ... synthetic 5 -> 10); positive class = synthetic. Points (FPR, TPR) at each threshold and
  the AUC (Mann-Whitney, ties 1/2; equals ``sklearn.metrics.roc_auc_score``), per reader, per synthetic set
  and pooled. AUC 0.5 = readers cannot tell.
- Finding sensitivity / specificity per pathology, separately on real and on synthetic images. Truth is the
  set's labels: for real images their (report-derived) labels, for synthetic images the labels the image was
  generated for (its prompt's labels), so on synthetic images this measures whether the finding asked for is
  visible. Label 1 = present; 0 or blank = absent; -1 (uncertain) is left out.
- Inter-reader agreement on the real/synthetic call: Cohen's kappa for each pair of readers (equals
  ``sklearn.metrics.cohen_kappa_score``), Fleiss' kappa over readers on the images every reader answered.
- Quality 1-5: mean, SD and count per reader and source.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ..pathologies import PATHOLOGIES

Z95 = 1.959963984540054
CI_METHOD = "Wilson score, 95%"


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for ``k`` successes in ``n`` trials ((nan, nan) when n == 0)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def accuracy_summary(truth_synthetic: Sequence[bool], call_synthetic: Sequence[bool]) -> dict:
    """Accuracy of calls against truth, its Wilson 95% interval and the two-sided binomial p against 0.5."""
    from scipy.stats import binomtest

    t = np.asarray(truth_synthetic, dtype=bool)
    c = np.asarray(call_synthetic, dtype=bool)
    n = int(t.size)
    k = int((t == c).sum())
    lo, hi = wilson_interval(k, n)
    return {
        "n": n,
        "correct": k,
        "accuracy": k / n if n else math.nan,
        "ci_low": lo,
        "ci_high": hi,
        "ci_method": CI_METHOD,
        "p_value_vs_50": float(binomtest(k, n, 0.5).pvalue) if n else math.nan,
        "real_called_real": int((~t & ~c).sum()),
        "synthetic_called_synthetic": int((t & c).sum()),
    }


def synthetic_score(call_synthetic: Sequence[bool], confidence: Sequence[int]) -> np.ndarray:
    """The 10-point score: real c -> 6 - c (1..5), synthetic c -> 5 + c (6..10)."""
    call = np.asarray(call_synthetic, dtype=bool)
    conf = np.asarray(confidence, dtype=float)
    return np.where(call, 5 + conf, 6 - conf)


def roc_auc(truth_synthetic: Sequence[bool], score: Sequence[float]) -> float:
    """Mann-Whitney AUC (ties count 1/2); nan when one class is absent."""
    from scipy.stats import rankdata

    t = np.asarray(truth_synthetic, dtype=bool)
    s = np.asarray(score, dtype=float)
    n1, n0 = int(t.sum()), int((~t).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[t].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def roc_points(truth_synthetic: Sequence[bool], score: Sequence[float]) -> list[dict]:
    """(FPR, TPR) at every threshold "score >= s", from the strictest to the loosest, starting at (0, 0) (the
    points of ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``; the trapezoid area under them is
    :func:`roc_auc`). Empty when one class is absent."""
    t = np.asarray(truth_synthetic, dtype=bool)
    s = np.asarray(score, dtype=float)
    n1, n0 = int(t.sum()), int((~t).sum())
    if n1 == 0 or n0 == 0:
        return []
    pts = [{"threshold": None, "fpr": 0.0, "tpr": 0.0}]
    for thr in sorted(set(s.tolist()), reverse=True):
        sel = s >= thr
        pts.append({"threshold": thr, "fpr": float((sel & ~t).sum() / n0), "tpr": float((sel & t).sum() / n1)})
    return pts


def cohen_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two raters' labels on the same items (nan when expected agreement is 1)."""
    a, b = np.asarray(a), np.asarray(b)
    cats = sorted(set(a.tolist()) | set(b.tolist()))
    n = a.size
    if n == 0:
        return math.nan
    po = float((a == b).mean())
    pe = sum(float((a == c).mean()) * float((b == c).mean()) for c in cats)
    return math.nan if pe >= 1 else (po - pe) / (1 - pe)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from an ``[items, categories]`` table of how many raters chose each category (equal raters
    per item)."""
    m = np.asarray(counts, dtype=float)
    if m.ndim != 2 or m.shape[0] == 0:
        return math.nan
    r = m.sum(axis=1)
    if not np.all(r == r[0]) or r[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of raters on every item.")
    n_items, raters = m.shape[0], r[0]
    p_j = m.sum(axis=0) / (n_items * raters)
    p_i = ((m * m).sum(axis=1) - raters) / (raters * (raters - 1))
    p_bar, pe = p_i.mean(), float((p_j ** 2).sum())
    return math.nan if pe >= 1 else float((p_bar - pe) / (1 - pe))


def sens_spec(truth: Sequence[bool], said: Sequence[bool]) -> dict:
    t = np.asarray(truth, dtype=bool)
    s = np.asarray(said, dtype=bool)
    tp, fn = int((t & s).sum()), int((t & ~s).sum())
    tn, fp = int((~t & ~s).sum()), int((~t & s).sum())
    return {
        "positives": tp + fn,
        "negatives": tn + fp,
        "sensitivity": tp / (tp + fn) if tp + fn else math.nan,
        "specificity": tn / (tn + fp) if tn + fp else math.nan,
    }


def _quality(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], float)
    return {"n": int(v.size), "mean": float(v.mean()) if v.size else math.nan,
            "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan}


def compute_results(answers: list[dict]) -> dict:
    """All results from answer rows.

    Each row: ``reader``, ``item``, ``truth`` ("real"/"synthetic"), ``source`` (set name), ``call``
    ("real"/"synthetic" or None), ``confidence`` (1-5 or None), ``findings`` (list of names or None when not
    asked/answered), ``labels`` ({pathology: 1/0/-1/None}), ``quality`` (1-5 or None).
    """
    rows = [a for a in answers if a.get("call") in ("real", "synthetic")]
    readers = sorted({a["reader"] for a in answers})
    out: dict = {"readers": readers, "n_answers": len(answers), "n_calls": len(rows), "ci_method": CI_METHOD,
                 "notes": ["Pooled accuracy treats every (reader, image) answer as one trial; answers of one image "
                           "by several readers are correlated, so read the pooled interval as optimistic.",
                           "Finding truth on synthetic images is the label the image was generated for."]}

    def acc(rs: list[dict]) -> dict:
        truth = [r["truth"] == "synthetic" for r in rs]
        d = accuracy_summary(truth, [r["call"] == "synthetic" for r in rs])
        have = [r for r in rs if r.get("confidence") is not None]
        t_have = [r["truth"] == "synthetic" for r in have]
        score = synthetic_score([r["call"] == "synthetic" for r in have], [r["confidence"] for r in have])
        d["auc"] = roc_auc(t_have, score) if have else math.nan
        d["roc"] = roc_points(t_have, score) if have else []  # the curve of this AUC (points "score >= threshold")
        d["n_roc"] = len(have)  # calls with a confidence (the ROC's answers)
        return d

    out["per_reader"] = {rd: acc([r for r in rows if r["reader"] == rd]) for rd in readers}
    out["pooled"] = acc(rows)
    out["roc"] = out["pooled"]["roc"]  # pooled curve (kept at the top level; per reader/set: their "roc")
    out["per_source"] = {}
    for src in sorted({r["source"] for r in rows if r["truth"] == "synthetic"}):
        rs = [r for r in rows if r["truth"] == "real" or r["source"] == src]
        out["per_source"][src] = acc(rs)

    # findings
    frows = [a for a in answers if a.get("findings") is not None]
    findings: dict = {}
    for kind in ("real", "synthetic"):
        kr = [a for a in frows if a["truth"] == kind]
        per = {}
        for p in PATHOLOGIES:
            use = [a for a in kr if (a.get("labels") or {}).get(p) != -1]
            truth = [(a.get("labels") or {}).get(p) == 1 for a in use]
            per[p] = sens_spec(truth, [p in a["findings"] for a in use])
        findings[kind] = per
    out["findings"] = findings

    # agreement on the call
    calls = {(r["reader"], r["item"]): r["call"] for r in rows}
    pairs = {}
    for a, b in itertools.combinations(readers, 2):
        common = sorted({i for (rd, i) in calls if rd == a} & {i for (rd, i) in calls if rd == b})
        pairs[f"{a} vs {b}"] = {"n": len(common), "kappa": cohen_kappa([calls[(a, i)] for i in common],
                                                                         [calls[(b, i)] for i in common])
                                if common else math.nan}
    out["cohen_kappa"] = pairs
    if len(readers) >= 2:
        items = sorted({i for (_, i) in calls})
        full = [i for i in items if all((rd, i) in calls for rd in readers)]
        table = np.array([[sum(calls[(rd, i)] == c for rd in readers) for c in ("real", "synthetic")] for i in full])
        out["fleiss_kappa"] = {"n": len(full), "raters": len(readers),
                               "kappa": fleiss_kappa(table) if full else math.nan}
    else:
        out["fleiss_kappa"] = {"n": 0, "raters": len(readers), "kappa": math.nan}

    # quality
    out["quality"] = {
        "pooled": {k: _quality([a.get("quality") for a in answers if a["truth"] == k]) for k in ("real", "synthetic")},
        "per_reader": {rd: {k: _quality([a.get("quality") for a in answers if a["truth"] == k and a["reader"] == rd])
                            for k in ("real", "synthetic")} for rd in readers},
    }
    p = out["pooled"]
    out["summary"] = {
        "Reader accuracy": p["accuracy"],
        "Reader accuracy CI low": p["ci_low"],
        "Reader accuracy CI high": p["ci_high"],
        "Reader p vs 50%": p["p_value_vs_50"],
        "Reader AUC": p["auc"],
        "Reader quality (synthetic)": out["quality"]["pooled"]["synthetic"]["mean"],
        "Reader quality (real)": out["quality"]["pooled"]["real"]["mean"],
    }
    return out
