"""Label vector -> report-style prompt, worded like MIMIC-CXR impressions and LLaVA-Rad annotated prompts.

Example: "PA view of the chest. Moderate right pleural effusion with adjacent atelectasis. Heart size is
enlarged. No pneumothorax." Positive labels get a severity, side and location; uncertain ones are hedged
("possible", "cannot exclude"); a few negatives become pertinent negatives ("No X."); a study with no
positive or uncertain finding reads "No acute cardiopulmonary process." or similar.

The wording is chosen so that :func:`evaluators.labeler.label_report` reads the labels back:
``label_report(text) == expressed`` for ``text, expressed = compose_report(labels, rng)`` (tested on
thousands of random vectors). Everything is deterministic given the ``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from .errors import InputError
from .pathologies import (
    INDEX,
    N_LABELS,
    NEGATIVE,
    PATHOLOGIES,
    POSITIVE,
    UNCERTAIN,
    empty_labels,
    labels_from_mapping,
    resolve_pathology,
)

Rng = np.random.Generator


def _pick(rng: Rng, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _cap(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def _side(rng: Rng, bilateral: bool = True) -> str:
    return _pick(rng, ("left", "right", "bilateral") if bilateral else ("left", "right"))


# ------------------------------------------------------------------------------ noun phrases per label
# Each returns a noun phrase without article for a present finding; hedges and plain sentences wrap it.
def _effusion(rng: Rng) -> str:
    side = _side(rng)
    sev = _pick(rng, ("small", "small", "moderate", "large", "trace"))
    if side == "bilateral":
        return f"{sev} bilateral pleural effusions"
    return _pick(
        rng, (f"{sev} {side} pleural effusion", f"{sev} {side} effusion", f"{side} pleural effusion")
    )


def _atelectasis(rng: Rng) -> str:
    side = _side(rng, bilateral=False)
    return _pick(
        rng,
        (
            "bibasilar atelectasis",
            f"mild {side} basilar atelectasis",
            f"plate-like atelectasis in the {side} lower lobe",
            f"subsegmental atelectasis at the {side} base",
            "right middle lobe collapse",
            f"{side} lower lobe atelectasis",
        ),
    )


def _consolidation(rng: Rng) -> str:
    side = _side(rng, bilateral=False)
    lobe = _pick(rng, ("lower", "lower", "upper"))
    return _pick(
        rng,
        (
            f"{side} {lobe} lobe consolidation",
            f"patchy consolidation in the {side} {lobe} lobe",
            f"focal consolidation at the {side} base",
            "right middle lobe consolidation",
            "dense retrocardiac consolidation",
        ),
    )


def _edema(rng: Rng) -> str:
    sev = _pick(rng, ("mild", "mild", "moderate", "severe"))
    return _pick(
        rng,
        (
            f"{sev} pulmonary edema",
            f"{sev} interstitial edema",
            "pulmonary vascular congestion",
            f"{sev} pulmonary vascular congestion",
        ),
    )


def _opacity(rng: Rng) -> str:
    side = _side(rng, bilateral=False)
    return _pick(
        rng,
        (
            f"patchy opacity in the {side} lower lobe",
            f"{side} basilar opacity",
            "bibasilar opacities",
            f"hazy opacity in the {side} mid lung",
            "retrocardiac opacity",
            f"airspace disease in the {side} lower lobe",
            f"ill-defined opacity in the {side} upper lobe",
        ),
    )


def _lesion(rng: Rng) -> str:
    side = _side(rng, bilateral=False)
    size = f"{int(rng.integers(6, 30)) / 10:.1f}"
    return _pick(
        rng,
        (
            f"{size} cm nodule in the {side} upper lobe",
            f"{side} upper lobe mass",
            f"spiculated nodule in the {side} lower lobe",
            f"{side} hilar mass",
            "multiple pulmonary nodules",
        ),
    )


def _pleural_other(rng: Rng) -> str:
    side = _side(rng)
    return _pick(
        rng,
        (
            f"{side} apical pleural thickening",
            "calcified pleural plaques",
            f"{side} pleural thickening",
        ),
    )


def _pneumonia(rng: Rng) -> str:
    side = _side(rng, bilateral=False)
    return _pick(
        rng,
        (
            f"{side} lower lobe pneumonia",
            "multifocal pneumonia",
            f"pneumonia in the {side} lower lobe",
            "aspiration pneumonia",
        ),
    )


def _pneumothorax(rng: Rng) -> str:
    side = _side(rng, bilateral=False)
    sev = _pick(rng, ("small", "small", "tiny", "moderate", "large"))
    return _pick(rng, (f"{sev} {side} pneumothorax", f"{sev} {side} apical pneumothorax"))


def _fracture(rng: Rng) -> str:
    side = _side(rng, bilateral=False)
    rib = _pick(rng, ("4th", "5th", "6th", "7th", "8th"))
    return _pick(
        rng,
        (
            f"acute fracture of the {side} {rib} rib",
            f"healed {side} rib fractures",
            f"{side} clavicle fracture",
            f"displaced {side} posterior rib fractures",
        ),
    )


_NOUN_PHRASE: dict[str, Callable[[Rng], str]] = {
    "Atelectasis": _atelectasis,
    "Consolidation": _consolidation,
    "Edema": _edema,
    "Fracture": _fracture,
    "Lung Lesion": _lesion,
    "Lung Opacity": _opacity,
    "Pleural Effusion": _effusion,
    "Pleural Other": _pleural_other,
    "Pneumonia": _pneumonia,
    "Pneumothorax": _pneumothorax,
}

_HEDGES = (
    "possible {np}.",
    "possible {np}.",
    "cannot exclude {np}.",
    "{np} cannot be excluded.",
    "findings may represent {np}.",
    "questionable {np}.",
    "probable {np}.",
    "likely {np}.",
    "findings suggestive of {np}.",
    "findings concerning for {np}.",
    "{np} is not excluded.",
)


_PLURAL = frozenset(("effusions", "fractures", "nodules", "plaques", "opacities"))
_COUNTABLE = frozenset(("effusion", "pneumothorax", "nodule", "mass", "opacity", "fracture"))


def _positive_sentence(label: str, rng: Rng) -> str:
    if label == "Cardiomegaly":
        sev = _pick(rng, ("mild", "moderate", "severe"))
        return _pick(
            rng,
            (
                "heart size is enlarged.",
                f"the heart is {sev}ly enlarged.",
                f"{sev} cardiomegaly.",
                "the cardiac silhouette is enlarged.",
                f"{sev} enlargement of the cardiac silhouette.",
            ),
        )
    if label == "Enlarged Cardiomediastinum":
        return _pick(
            rng,
            (
                "the mediastinum is widened.",
                "widened mediastinum.",
                "mediastinal widening.",
                "enlarged cardiomediastinal silhouette.",
                "the cardiomediastinal silhouette is enlarged.",
            ),
        )
    if label == "Support Devices":
        side = _side(rng, bilateral=False)
        return _pick(
            rng,
            (
                f"endotracheal tube terminates {int(rng.integers(2, 7))} cm above the carina.",
                "enteric tube courses below the diaphragm with the tip in the stomach.",
                f"{side} internal jugular central venous catheter terminates in the mid SVC.",
                "left-sided pacemaker with leads in the right atrium and right ventricle.",
                "median sternotomy wires are intact.",
                f"{side} PICC line terminates in the low SVC.",
                "surgical clips in the right upper quadrant.",
                f"{side} chest tube in place.",
                "tracheostomy tube in standard position.",
            ),
        )
    np_ = _NOUN_PHRASE[label](rng)
    words = np_.split()
    if _PLURAL.intersection(words):
        verb, there = "are", "there are"
    else:
        verb = "is"
        there = "there is a" if _COUNTABLE.intersection(words) else "there is"
    return _pick(rng, ("{np}.", "{np}.", "{np} {v} present.", "{t} {np}.", "{np} {v} again noted.")).format(
        np=np_, v=verb, t=there
    )


def _uncertain_sentence(label: str, rng: Rng) -> str:
    if label == "Cardiomegaly":
        return _pick(
            rng,
            (
                "borderline cardiomegaly.",
                "heart size is borderline enlarged.",
                "the heart is possibly mildly enlarged.",
                "possible mild cardiomegaly.",
                "cardiomegaly cannot be excluded.",
            ),
        )
    if label == "Enlarged Cardiomediastinum":
        return _pick(
            rng,
            (
                "possible mediastinal widening.",
                "the mediastinum may be widened.",
                "questionable widening of the mediastinum.",
                "mediastinal widening cannot be excluded.",
            ),
        )
    if label == "Support Devices":
        return _pick(rng, ("possible retained pacing wires.", "questionable catheter fragment in the SVC."))
    return _pick(rng, _HEDGES).format(np=_NOUN_PHRASE[label](rng))


# Pertinent negatives: noun phrases that follow "No" (and join into "No A, B, or C.").
_NEGATIVE_NP: dict[str, tuple[str, ...]] = {
    "Atelectasis": ("atelectasis", "lobar collapse"),
    "Cardiomegaly": ("cardiomegaly",),
    "Consolidation": ("focal consolidation", "consolidation"),
    "Edema": ("pulmonary edema", "pulmonary vascular congestion"),
    "Enlarged Cardiomediastinum": ("mediastinal widening",),
    "Fracture": ("acute fracture", "displaced rib fracture", "acute displaced fracture"),
    "Lung Lesion": ("pulmonary nodule", "suspicious pulmonary nodule", "pulmonary nodules or masses"),
    "Lung Opacity": ("focal opacity", "focal airspace opacity"),
    "Pleural Effusion": ("pleural effusion", "effusion", "pleural effusions"),
    "Pleural Other": ("pleural thickening",),
    "Pneumonia": ("pneumonia", "evidence of pneumonia"),
    "Pneumothorax": ("pneumothorax",),
    "Support Devices": ("lines or tubes", "support devices"),
}
# Negatives that read better as their own sentence.
_NEGATIVE_SENTENCE: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": (
        "heart size is normal.",
        "the cardiac silhouette is within normal limits.",
        "normal heart size.",
    ),
    "Enlarged Cardiomediastinum": (
        "the mediastinal contours are normal.",
        "normal cardiomediastinal silhouette.",
        "the mediastinum is not widened.",
    ),
    "Support Devices": ("interval removal of the endotracheal tube.",),
}
_BOTH_NORMAL = (
    "heart size and mediastinal contours are normal.",
    "the heart size and cardiomediastinal contours are within normal limits.",
)
_NORMAL_STUDY = (
    "no acute cardiopulmonary process.",
    "no acute cardiopulmonary process.",
    "no acute cardiopulmonary abnormality.",
    "no acute intrathoracic process.",
    "normal chest radiograph.",
    "the lungs are clear. no acute cardiopulmonary process.",
)
_VIEWS = {
    "PA": ("PA view of the chest.", "PA and lateral views of the chest."),
    "AP": (
        "AP view of the chest.",
        "portable AP view of the chest.",
        "portable semi-upright AP view of the chest.",
    ),
    "LATERAL": ("lateral view of the chest.",),
    "LL": ("lateral view of the chest.",),
}
_ANY_VIEW = (
    "PA view of the chest.",
    "AP view of the chest.",
    "frontal view of the chest.",
    "PA and lateral views of the chest.",
)


def _as_labels(labels: np.ndarray | Mapping[str, object]) -> np.ndarray:
    if isinstance(labels, Mapping):
        return labels_from_mapping(labels, source="labels")
    arr = np.asarray(labels, dtype=np.float32).reshape(-1)
    if arr.shape != (N_LABELS,):
        raise InputError(
            f"A label vector has {N_LABELS} entries (in the order {', '.join(PATHOLOGIES)}); got shape "
            f"{np.shape(labels)}."
        )
    bad = [
        f"{p}={v}" for p, v in zip(PATHOLOGIES, arr.tolist()) if not (math.isnan(v) or v in (1.0, 0.0, -1.0))
    ]
    if bad:
        raise InputError(f"Label values must be 1, 0, -1 or NaN; got {', '.join(bad)}.")
    return arr


def _view_sentence(view: str | None, rng: Rng) -> str | None:
    if view is None:
        return _pick(rng, _ANY_VIEW) if rng.random() < 0.7 else None
    key = str(view).strip()
    if not key:
        return None
    options = _VIEWS.get(key.upper().replace(" ", ""))
    return _pick(rng, options) if options else f"{key} view of the chest."


def _negatives(chosen: list[str], rng: Rng) -> list[str]:
    """Sentences for the chosen negatives: heart/mediastinum on their own, the rest grouped after "No"."""
    out: list[str] = []
    rest = list(chosen)
    if "Cardiomegaly" in rest and "Enlarged Cardiomediastinum" in rest and rng.random() < 0.6:
        out.append(_pick(rng, _BOTH_NORMAL))
        rest = [p for p in rest if p not in ("Cardiomegaly", "Enlarged Cardiomediastinum")]
    listed: list[str] = []
    for p in rest:
        if p in _NEGATIVE_SENTENCE and rng.random() < 0.6:
            out.append(_pick(rng, _NEGATIVE_SENTENCE[p]))
        else:
            listed.append(_pick(rng, _NEGATIVE_NP[p]))
    while listed:
        k = min(len(listed), int(rng.integers(1, 4)))
        group, listed = listed[:k], listed[k:]
        if k == 1:
            body = group[0]
        elif k == 2:
            body = f"{group[0]} or {group[1]}"
        else:
            body = ", ".join(group[:-1]) + f", or {group[-1]}"
        out.append(_pick(rng, ("no {b}.", "no {b}.", "there is no {b}.")).format(b=body))
    return out


def compose_report(
    labels: np.ndarray | Mapping[str, object],
    rng: Rng,
    view: str | None = None,
    *,
    max_negatives: int = 3,
) -> tuple[str, np.ndarray]:
    """A report-style prompt for ``labels`` and the label vector that the text states.

    The stated vector equals the input on every positive (1) and uncertain (-1) entry; a random subset
    (at most ``max_negatives``) of the negatives is mentioned ("No X.") and stays 0, the other negatives
    and blanks are NaN (not mentioned). No Finding is derived as CheXpert does: 1 when no finding other
    than Support Devices is positive or uncertain, else 0; the input's No Finding value is not used.
    ``view`` ("PA", "AP", "LATERAL", any other string, or None for a random or no view sentence) opens it.
    """
    arr = _as_labels(labels)
    names = [p for p in PATHOLOGIES if p != "No Finding"]
    pos = [p for p in names if arr[INDEX[p]] == POSITIVE]
    unc = [p for p in names if arr[INDEX[p]] == UNCERTAIN]
    neg = [p for p in names if arr[INDEX[p]] == NEGATIVE]
    stated = empty_labels()

    findings: list[str] = []
    done: set[str] = set()

    def take(*ps: str) -> None:
        done.update(ps)
        for p in ps:
            stated[INDEX[p]] = arr[INDEX[p]]

    # Findings that radiologists write together.
    if {"Pleural Effusion", "Atelectasis"} <= set(pos) and rng.random() < 0.5:
        findings.append(f"{_effusion(rng)} with adjacent atelectasis.")
        take("Pleural Effusion", "Atelectasis")
    if "Lung Opacity" in pos and "Pneumonia" in pos + unc and rng.random() < 0.6:
        tail = (
            ("consistent with pneumonia", "compatible with pneumonia")
            if "Pneumonia" in pos
            else ("concerning for pneumonia", "which may represent pneumonia", "possibly pneumonia")
        )
        findings.append(f"{_opacity(rng)}, {_pick(rng, tail)}.")
        take("Lung Opacity", "Pneumonia")
    if "Lung Opacity" in pos and "Lung Opacity" not in done and "Atelectasis" in unc and rng.random() < 0.6:
        findings.append(f"{_opacity(rng)}, {_pick(rng, ('likely atelectasis', 'possibly atelectasis'))}.")
        take("Lung Opacity", "Atelectasis")
    if {"Atelectasis", "Pneumonia"} <= set(unc) - done and rng.random() < 0.6:
        findings.append(f"atelectasis versus pneumonia at the {_side(rng, bilateral=False)} base.")
        take("Atelectasis", "Pneumonia")
    if {"Cardiomegaly", "Edema"} <= set(pos) - done and rng.random() < 0.5:
        findings.append(f"{_pick(rng, ('mild', 'moderate'))} cardiomegaly with {_edema(rng)}.")
        take("Cardiomegaly", "Edema")

    for p in pos + unc:
        if p in done or p == "Support Devices":
            continue
        findings.append(_positive_sentence(p, rng) if p in pos else _uncertain_sentence(p, rng))
        take(p)
    order = rng.permutation(len(findings))
    findings = [findings[i] for i in order]

    devices: list[str] = []
    if "Support Devices" in pos + unc:
        devices.append(
            _positive_sentence("Support Devices", rng)
            if "Support Devices" in pos
            else _uncertain_sentence("Support Devices", rng)
        )
        take("Support Devices")

    n_neg = min(len(neg), max(0, int(max_negatives)))
    chosen = (
        [neg[i] for i in sorted(rng.choice(len(neg), size=int(rng.integers(0, n_neg + 1)), replace=False))]
        if neg
        else []
    )
    take(*chosen)
    negatives = _negatives(chosen, rng)

    abnormal = any(stated[INDEX[p]] in (POSITIVE, UNCERTAIN) for p in names if p != "Support Devices")
    sentences: list[str] = []
    view_text = _view_sentence(view, rng)
    if view_text:
        sentences.append(view_text)
    sentences += devices
    if abnormal:
        sentences += findings + negatives
    else:
        normal = [_pick(rng, _NORMAL_STUDY)]
        sentences += normal + negatives if rng.random() < 0.6 else negatives + normal
    stated[INDEX["No Finding"]] = NEGATIVE if abnormal else POSITIVE
    return " ".join(_cap(s) for s in sentences), stated


def write_report(labels: np.ndarray | Mapping[str, object], rng: Rng, view: str | None = None) -> str:
    """A report-style prompt for a label vector (see :func:`compose_report` for what it states)."""
    return compose_report(labels, rng, view)[0]


def example_prompt(pathology: str, rng: Rng) -> str:
    """A prompt for one pathology (positive, nothing else abnormal); "No Finding" gives a normal study."""
    name = resolve_pathology(pathology)
    labels = empty_labels()
    negatives = [p for p in PATHOLOGIES if p not in (name, "No Finding", "Support Devices")]
    for p in negatives:
        labels[INDEX[p]] = NEGATIVE
    if name != "No Finding":
        labels[INDEX[name]] = POSITIVE
    return compose_report(labels, rng, max_negatives=2)[0]
