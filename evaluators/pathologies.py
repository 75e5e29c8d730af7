"""The 14 CheXpert labels, label policies and the NIH ChestX-ray14 -> CheXpert table.

Label values follow CheXpert: 1 positive, 0 negative, -1 uncertain, NaN blank (not mentioned).
Spelling and order are CheXGenBench's (alphabetical), so result sheets line up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from .errors import InputError

PATHOLOGIES: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
N_LABELS = len(PATHOLOGIES)
INDEX = {name: i for i, name in enumerate(PATHOLOGIES)}

POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0

# Policies for turning 4-valued labels (1, 0, -1, NaN) into binary targets.
#   zeros  : uncertain -> 0 (U-Zeros; CheXGenBench's utility setting), blank -> 0
#   ones   : uncertain -> 1 (U-Ones), blank -> 0
#   ignore : uncertain -> NaN (masked out of losses and AUCs), blank -> 0
UNCERTAIN_POLICIES = ("zeros", "ones", "ignore")
DEFAULT_UNCERTAIN_POLICY = "zeros"

# Lower-case aliases accepted wherever a pathology name is typed (CLI, app, CSV headers).
_ALIASES = {
    "effusion": "Pleural Effusion",
    "pleural_effusion": "Pleural Effusion",
    "pleural thickening": "Pleural Other",
    "pleural_thickening": "Pleural Other",
    "nodule": "Lung Lesion",
    "mass": "Lung Lesion",
    "lesion": "Lung Lesion",
    "opacity": "Lung Opacity",
    "enlarged cardiom.": "Enlarged Cardiomediastinum",
    "ecm": "Enlarged Cardiomediastinum",
    "normal": "No Finding",
    "no_finding": "No Finding",
    "devices": "Support Devices",
}

# NIH ChestX-ray14 finding -> CheXpert label. Documented in the README.
#   Effusion -> Pleural Effusion, Pleural_Thickening -> Pleural Other, Mass/Nodule -> Lung Lesion,
#   Infiltration -> Lung Opacity; same-named labels map to themselves.
#   Emphysema, Fibrosis and Hernia have no CheXpert counterpart: dropped (kept in `extra_findings`).
NIH_TO_CHEXPERT: dict[str, str | None] = {
    "Atelectasis": "Atelectasis",
    "Cardiomegaly": "Cardiomegaly",
    "Consolidation": "Consolidation",
    "Edema": "Edema",
    "Effusion": "Pleural Effusion",
    "Emphysema": None,
    "Fibrosis": None,
    "Hernia": None,
    "Infiltration": "Lung Opacity",
    "Mass": "Lung Lesion",
    "Nodule": "Lung Lesion",
    "Pleural_Thickening": "Pleural Other",
    "Pneumonia": "Pneumonia",
    "Pneumothorax": "Pneumothorax",
    "No Finding": "No Finding",
}
# CheXpert labels that NIH ChestX-ray14 never annotates: their values are unknown (NaN) for NIH data,
# and they are excluded from NIH evaluations rather than counted as negatives.
NIH_UNMAPPED = tuple(p for p in PATHOLOGIES if p not in set(NIH_TO_CHEXPERT.values()))


def resolve_pathology(name: str) -> str:
    """Canonical spelling of a pathology name, or an InputError listing the valid ones."""
    if not isinstance(name, str):
        raise InputError(f"Pathology must be a string, got {name!r}.")
    key = name.strip()
    if key in INDEX:
        return key
    low = key.lower().replace("-", " ")
    for p in PATHOLOGIES:
        if p.lower() == low or p.lower().replace(" ", "_") == low:
            return p
    if low in _ALIASES:
        return _ALIASES[low]
    raise InputError(
        f"Unknown pathology {name!r}. Use one of the 14 CheXpert labels: {', '.join(PATHOLOGIES)}."
    )


def empty_labels() -> np.ndarray:
    """A blank label vector (all NaN)."""
    return np.full(N_LABELS, np.nan, dtype=np.float32)


def labels_from_mapping(mapping: Mapping[str, object], *, source: str = "labels") -> np.ndarray:
    """Label vector from {pathology: value}; values 1/0/-1/blank (None, '', NaN). Unknown keys raise."""
    out = empty_labels()
    for key, value in mapping.items():
        name = resolve_pathology(str(key)) if str(key) not in INDEX else str(key)
        out[INDEX[name]] = parse_label_value(value, source=f"{source}[{key!r}]")
    return out


def parse_label_value(value: object, *, source: str = "label") -> float:
    """One CheXpert label value: 1, 0, -1 or NaN for blank. Anything else is an InputError."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("", "nan", "none", "null"):
            return math.nan
        try:
            value = float(v)
        except ValueError:
            if v in ("true", "yes", "positive"):
                return POSITIVE
            if v in ("false", "no", "negative"):
                return NEGATIVE
            if v in ("uncertain", "u"):
                return UNCERTAIN
            raise InputError(f"{source}: label value {value!r} is not 1, 0, -1 or blank.") from None
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(f"{source}: label value {value!r} is not 1, 0, -1 or blank.") from None
    if math.isnan(f):
        return math.nan
    if f not in (1.0, 0.0, -1.0):
        raise InputError(f"{source}: label value {value!r} is not 1, 0, -1 or blank.")
    return f


def labels_from_nih(finding_labels: str) -> np.ndarray:
    """CheXpert vector from an NIH `finding_labels` string such as 'Cardiomegaly|Effusion'.

    Mapped findings are 1, the other mapped CheXpert labels 0, and labels NIH never annotates NaN.
    """
    out = np.zeros(N_LABELS, dtype=np.float32)
    for p in NIH_UNMAPPED:
        out[INDEX[p]] = np.nan
    for raw in str(finding_labels).split("|"):
        finding = raw.strip()
        if not finding:
            continue
        if finding not in NIH_TO_CHEXPERT:
            raise InputError(
                f"Unknown NIH finding {finding!r} in {finding_labels!r}; "
                f"known: {', '.join(NIH_TO_CHEXPERT)}."
            )
        target = NIH_TO_CHEXPERT[finding]
        if target is not None:
            out[INDEX[target]] = POSITIVE
    if np.nansum(out[[INDEX[p] for p in PATHOLOGIES if p != "No Finding"]] == POSITIVE) > 0:
        out[INDEX["No Finding"]] = NEGATIVE
    return out


def binarize(labels: np.ndarray, policy: str = DEFAULT_UNCERTAIN_POLICY) -> np.ndarray:
    """Binary targets from 4-valued labels ([..., 14]); see UNCERTAIN_POLICIES. Blank -> 0."""
    if policy not in UNCERTAIN_POLICIES:
        raise InputError(f"Unknown uncertain-label policy {policy!r}; use one of {UNCERTAIN_POLICIES}.")
    arr = np.asarray(labels, dtype=np.float32)
    out = np.where(np.isnan(arr), 0.0, arr).astype(np.float32)
    unc = arr == UNCERTAIN
    if policy == "zeros":
        out[unc] = 0.0
    elif policy == "ones":
        out[unc] = 1.0
    else:
        out[unc] = np.nan
    return out


def positives(labels: np.ndarray) -> list[str]:
    """Names of the labels that are positive in one label vector."""
    return [p for p, v in zip(PATHOLOGIES, np.asarray(labels).tolist(), strict=True) if v == POSITIVE]


def label_columns_present(columns: Iterable[str]) -> list[str]:
    """Which of the 14 label columns a table has (exact CheXpert spelling)."""
    cols = set(columns)
    return [p for p in PATHOLOGIES if p in cols]
