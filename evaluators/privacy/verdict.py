"""One privacy verdict per synthetic image: memorised, same patient, or new (:func:`decide`, a pure function).

The rule, in order:

1. **memorised**: the memorisation search flagged the image (its copy score against the best-aligned training
   image is above the threshold calibrated on held-out patients). The copy check looks at the pixels of one
   training image; it wins over re-ID, whatever the re-ID score.
2. **same patient**: not a copy, but the re-ID model says the image shows the matched training image's patient,
   and that model is trusted on this data: its verification AUC on held-out patients of this training set is known
   and at least :data:`MIN_REID_AUC`, and the score is above the re-ID threshold calibrated on held-out patients
   (the larger of CheXGenBench's 0.5 and the 99th percentile of new patients' re-ID scores against their own
   matched training images, :func:`.reid_choice.calibrate_reid`): at 0.5 alone, a third of new demo-world patients
   would count as "re-identified" against the training image the search matched them to.
3. **new**: neither. When re-ID could not be used (no model, AUC unknown or too low) the verdict says so: "new"
   then rests on the copy check alone.

``unknown`` is returned only when the copy check itself did not run (no calibrated threshold), so that "new" is
never claimed without evidence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from . import REID_THRESHOLD

MEMORISED, SAME_PATIENT, NEW, UNKNOWN = "memorised", "same patient", "new", "unknown"
DECISIONS = (MEMORISED, SAME_PATIENT, NEW, UNKNOWN)
MIN_REID_AUC = 0.75
"""Re-ID counts towards a verdict only from a model at least this good on held-out patients of the training set."""


@dataclass(frozen=True)
class Verdict:
    decision: str  # one of DECISIONS
    reason: str  # one sentence: why this decision
    copy_score: float | None = None
    threshold: float | None = None
    copy_p_value: float | None = None
    reid_score: float | None = None
    reid_model: str | None = None
    reid_auc: float | None = None
    reid_threshold: float | None = None  # the re-ID score above which the verdict is "same patient"
    reid_used: bool = False  # whether re-ID could decide (model, AUC known and >= MIN_REID_AUC, calibrated threshold)

    def to_dict(self) -> dict:
        return asdict(self)


def _num(v) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def decide(*, copy_score=None, threshold=None, flagged=None, copy_p_value=None, reid_score=None,
           reid_model: str | None = None, reid_auc=None, reid_threshold: float | None = REID_THRESHOLD,
           min_reid_auc: float = MIN_REID_AUC) -> Verdict:
    """The verdict for one image (see the module docstring). ``flagged`` defaults to ``copy_score > threshold``;
    ``reid_threshold`` None: no calibrated re-ID threshold, so re-ID cannot decide."""
    cs, thr, p = _num(copy_score), _num(threshold), _num(copy_p_value)
    rs, auc, rthr = _num(reid_score), _num(reid_auc), _num(reid_threshold)
    if flagged is None and cs is not None and thr is not None:
        flagged = cs > thr
    reid_used = rs is not None and auc is not None and auc >= min_reid_auc and rthr is not None
    ev = {"copy_score": cs, "threshold": thr, "copy_p_value": p, "reid_score": rs, "reid_model": reid_model,
          "reid_auc": auc, "reid_threshold": rthr, "reid_used": reid_used}
    pv = f", p = {p:.3g}" if p is not None else ""
    if flagged:
        why = f"copy score {cs:.3f} above the threshold {thr:.3f}{pv}" if cs is not None and thr is not None \
            else "flagged by the memorisation search"
        return Verdict(MEMORISED, why + ": a near copy of a training image, or another radiograph of its patient "
                       "(the copy score also rises for a patient's other studies: compare the two images).", **ev)
    if reid_used and rs > rthr:
        return Verdict(SAME_PATIENT, f"not a copy (copy score {cs:.3f}{pv}), but re-ID {rs:.3f} > {rthr:.3f} "
                       f"by {reid_model} (AUC {auc:.3f} on held-out patients): the matched training patient."
                       if cs is not None else
                       f"re-ID {rs:.3f} > {rthr:.3f} by {reid_model} (AUC {auc:.3f} on held-out patients).", **ev)
    if flagged is None:
        return Verdict(UNKNOWN, "the copy check did not run (no calibrated threshold); no verdict.", **ev)
    if rs is None:
        caveat = "re-ID not available"
    elif auc is None:
        caveat = f"re-ID {rs:.3f} not used: {reid_model}'s AUC on this training set is unknown"
    elif auc < min_reid_auc:
        caveat = f"re-ID {rs:.3f} not used: {reid_model}'s AUC {auc:.3f} is below {min_reid_auc}"
    elif rthr is None:
        caveat = f"re-ID {rs:.3f} not used: no re-ID threshold calibrated on held-out patients"
    else:
        caveat = f"re-ID {rs:.3f} <= {rthr:.3f} by {reid_model} (AUC {auc:.3f})"
    copy = f"copy score {cs:.3f} at or below the threshold {thr:.3f}{pv}" if cs is not None and thr is not None \
        else "not flagged by the copy check"
    return Verdict(NEW, f"{copy}; {caveat}.", **ev)


def counts_text(counts: dict[str, int]) -> str:
    """'2 memorised, 0 same patient, 5 new' (unknown only when there are some), in :data:`DECISIONS` order."""
    return ", ".join(f"{counts.get(d, 0)} {d}" for d in DECISIONS if counts.get(d, 0) or d != UNKNOWN)


def count(verdicts) -> dict[str, int]:
    """How many images got each decision (every decision listed, zeros included)."""
    out = dict.fromkeys(DECISIONS, 0)
    for v in verdicts:
        out[v.decision if isinstance(v, Verdict) else v["decision"]] += 1
    return out
