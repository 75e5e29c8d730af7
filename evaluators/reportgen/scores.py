"""Scores of generated reports against reference reports, each by the library that defines it.

- **Clinical-finding F1** (how report generation is judged clinically, "CheXbert F1" in the literature): both
  reports are labelled with the 14 CheXpert labels, positive (1) counts as positive, everything else (negative,
  uncertain under the default 'zeros' policy, not mentioned) as negative; F1 micro over all labels and macro
  over the labels that are positive in at least one reference report (the others are listed as excluded).
  Computed with scikit-learn. Labelled by the project's rule labeler (:mod:`evaluators.labeler`) and, when its
  weights are present, by CheXbert itself (:mod:`evaluators.reportgen.chexbert`).
- **BLEU-1 / BLEU-4**: ``nltk.translate.bleu_score.corpus_bleu`` (one reference per image, uniform weights).
- **ROUGE-L**: Google's ``rouge-score`` package (F-measure, mean over reports).
- **METEOR**: METEOR 1.5 (Denkowski & Lavie), the Java implementation with its English paraphrase table as
  shipped in the ``pycocoevalcap`` package (the implementation report-generation papers cite); needs ``java``.
  NLTK's METEOR would need the WordNet corpus, which no package registry ships in a form NLTK reads.
- **BERTScore**: not computed: it needs a BERT-family model's weights, which cannot be downloaded here.
- **Copies**: the share of generated reports that are, after :func:`text.normalise`, identical to one of the
  training reports (memorised text rather than a report composed for the image).

Every score takes plain lists of strings; text is compared in its normalised form (lower case, words and
punctuation separated), the same for every setting.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..pathologies import PATHOLOGIES, binarize
from .text import normalise, tokenize

LABELERS = ("rules", "chexbert")


def _check(generated: Sequence[str], references: Sequence[str]) -> None:
    if len(generated) != len(references):
        raise InputError(f"{len(generated)} generated reports for {len(references)} references; they must pair up.")
    if not len(references):
        raise InputError("No reports to score.")


def clinical_f1(gen_labels: np.ndarray, ref_labels: np.ndarray, *, policy: str = "zeros",
                weights: np.ndarray | None = None) -> dict[str, Any]:
    """F1 micro / macro of generated vs reference labels ([N, 14] of 1/0/-1/NaN), per label too. With resampling
    ``weights`` [B, N] (:func:`evaluators.metrics.classification.bootstrap_weights`) F1 micro also gets its 95%
    interval, and its replicates under ``_f1_micro_replicates`` (not saved) for paired comparisons."""
    from sklearn.metrics import f1_score, precision_score, recall_score

    g = np.nan_to_num(binarize(gen_labels, policy), nan=0.0).astype(int)
    r = binarize(ref_labels, policy)
    keep = ~np.isnan(r)  # the 'ignore' policy leaves uncertain references out, entry by entry
    r = np.nan_to_num(r, nan=0.0).astype(int)
    cols = [j for j in range(len(PATHOLOGIES)) if (r[keep[:, j], j] == 1).any()]
    excluded = {PATHOLOGIES[j]: "no positive reference report in the test set"
                for j in range(len(PATHOLOGIES)) if j not in cols}
    if not cols:
        raise InputError("No reference report is positive for any of the 14 labels; clinical F1 is undefined.")
    per = {PATHOLOGIES[j]: float(f1_score(r[keep[:, j], j], g[keep[:, j], j], zero_division=0)) for j in cols}
    flat_r = np.concatenate([r[keep[:, j], j] for j in range(len(PATHOLOGIES))])
    flat_g = np.concatenate([g[keep[:, j], j] for j in range(len(PATHOLOGIES))])
    return {
        "f1_micro": float(f1_score(flat_r, flat_g, zero_division=0)),
        "f1_macro": float(np.mean(list(per.values()))),
        "precision_micro": float(precision_score(flat_r, flat_g, zero_division=0)),
        "recall_micro": float(recall_score(flat_r, flat_g, zero_division=0)),
        "per_label_f1": per,
        "positives": {PATHOLOGIES[j]: int(r[:, j].sum()) for j in cols},
        "excluded": excluded,
        "policy": policy,
        **_f1_interval(r, g, keep, weights),
    }


def _f1_interval(r: np.ndarray, g: np.ndarray, keep: np.ndarray, weights: np.ndarray | None) -> dict[str, Any]:
    if weights is None:
        return {}
    from ..metrics.classification import f1_micro_replicates, percentile_ci

    reps = f1_micro_replicates(r, g, keep, weights)
    return {"f1_micro_ci95": percentile_ci(reps), "_f1_micro_replicates": reps}


def bleu(generated: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1 and BLEU-4 (nltk), on normalised tokens."""
    from nltk.translate.bleu_score import corpus_bleu

    _check(generated, references)
    hyp = [tokenize(g) for g in generated]
    refs = [[tokenize(r)] for r in references]
    return {"bleu1": float(corpus_bleu(refs, hyp, weights=(1.0,))),
            "bleu4": float(corpus_bleu(refs, hyp, weights=(0.25, 0.25, 0.25, 0.25)))}


def rouge_l(generated: Sequence[str], references: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score), on normalised text."""
    from rouge_score import rouge_scorer

    _check(generated, references)
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(np.mean([scorer.score(normalise(r), normalise(g))["rougeL"].fmeasure
                          for g, r in zip(generated, references, strict=True)]))


def meteor_availability() -> tuple[bool, str]:
    """(available, reason) for METEOR 1.5 (pycocoevalcap's jar + java)."""
    try:
        import pycocoevalcap.meteor.meteor  # noqa: F401
    except ImportError:
        return False, "pycocoevalcap is not installed (pip install -r requirements.txt)"
    if shutil.which("java") is None:
        return False, "METEOR 1.5 runs on Java and no `java` is on PATH (apt-get install default-jre-headless)"
    return True, "METEOR 1.5 (pycocoevalcap, Java)"


class MeteorScorer:
    """Corpus METEOR 1.5 through pycocoevalcap's ``Meteor``: one Java process (about 10 s to start and load the
    paraphrase table) reused for every call until :meth:`close`."""

    def __init__(self) -> None:
        self._scorer: Any = None

    def __call__(self, generated: Sequence[str], references: Sequence[str]) -> float:
        _check(generated, references)
        if self._scorer is None:
            ok, why = meteor_availability()
            if not ok:
                raise InputError(f"METEOR unavailable: {why}.")
            from pycocoevalcap.meteor.meteor import Meteor

            self._scorer = Meteor()
        gts = {i: [normalise(r) or "."] for i, r in enumerate(references)}
        res = {i: [normalise(g) or "."] for i, g in enumerate(generated)}
        score, _ = self._scorer.compute_score(gts, res)
        return float(score)

    def close(self) -> None:
        m, self._scorer = self._scorer, None
        if m is None:
            return
        if hasattr(m, "close"):
            m.close()
            return
        with m.lock:  # pycocoevalcap 1.2 has no close(); end the Java process it started
            m.meteor_p.stdin.close()
            m.meteor_p.kill()
            m.meteor_p.wait()


def meteor(generated: Sequence[str], references: Sequence[str]) -> float:
    """Corpus METEOR 1.5 of one set of reports (starts and ends its own Java process)."""
    scorer = MeteorScorer()
    try:
        return scorer(generated, references)
    finally:
        scorer.close()


def copy_rate(generated: Sequence[str], training_reports: Iterable[str]) -> dict[str, Any]:
    """Share of generated reports identical (normalised) to a training report, and how many distinct ones."""
    train = {normalise(t) for t in training_reports}
    norm = [normalise(g) for g in generated]
    copies = [g in train for g in norm]
    return {"copy_rate": float(np.mean(copies)) if norm else float("nan"),
            "n_copies": int(sum(copies)), "distinct_reports": len(set(norm))}


def label_texts(texts: Sequence[str], labeler: str = "rules", chexbert: Any = None) -> np.ndarray:
    """[N, 14] labels of reports by the rule labeler or a loaded CheXbert."""
    if labeler == "rules":
        from ..labeler import label_reports

        return np.asarray(label_reports(list(texts)), dtype=np.float32)
    if labeler == "chexbert":
        if chexbert is None:
            raise InputError("labeler 'chexbert' needs a loaded CheXbert (evaluators.reportgen.chexbert.load_chexbert).")
        return chexbert.label(list(texts))
    raise InputError(f"Unknown labeler {labeler!r}; use one of {', '.join(LABELERS)}.")


def score_reports(
    generated: Sequence[str],
    references: Sequence[str],
    *,
    training_reports: Iterable[str] = (),
    policy: str = "zeros",
    with_meteor: bool = True,
    chexbert: Any = None,
    chexbert_reason: str = "",
    ref_labels: np.ndarray | None = None,
    meteor_fn: Callable[[Sequence[str], Sequence[str]], float] | None = None,
    weights: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every score of one setting's generated reports (see the module docstring); ``weights``: the test set's
    bootstrap resamples, for clinical F1 micro's interval (see :func:`clinical_f1`)."""
    _check(generated, references)
    gen_rules = label_texts(generated)
    ref_rules = label_texts(references) if ref_labels is None else ref_labels
    out: dict[str, Any] = {"n": len(generated),
                           "clinical": clinical_f1(gen_rules, ref_rules, policy=policy, weights=weights)}
    if chexbert is not None:
        out["clinical_chexbert"] = clinical_f1(chexbert.label(list(generated)), chexbert.label(list(references)),
                                               policy=policy)
    else:
        out["clinical_chexbert"] = {"unavailable": chexbert_reason or "CheXbert not loaded"}
    out.update(bleu(generated, references))
    out["rougeL"] = rouge_l(generated, references)
    ok, why = meteor_availability()
    if with_meteor and ok:
        out["meteor"] = (meteor_fn or meteor)(generated, references)
    else:
        out["meteor"] = None
        out["meteor_unavailable"] = why if not ok else "not computed (--no-meteor)"
    out["bertscore"] = None
    out["bertscore_unavailable"] = ("BERTScore needs a BERT-family model's weights (e.g. roberta-large or a "
                                    "clinical BERT), which cannot be downloaded here")
    out.update(copy_rate(generated, training_reports))
    return out
