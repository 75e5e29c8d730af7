"""Patient (and study) ids from the file paths of public chest X-ray datasets, for sets without a patient-id column.

The memorisation calibration leaves a query's own patient out when the training set has patient ids; without
them, other studies of the same patient look like copies and the threshold rises (README, Privacy). The public
datasets name the patient in the file path even when no id column comes with the images. Recognised layouts
(exactly these; a set is derived from only when at least :data:`MIN_FRACTION` of its paths match one of them):

- NIH ChestX-ray14: ``00000001_000.png`` = patient 1 (NIH's ``Patient ID``, leading zeros dropped), follow-up 000
  (study ``00000001_000``);
- MIMIC-CXR / MIMIC-CXR-JPG: ``files/p10/p10000032/s50414267/<dicom_id>.jpg`` (or ``.dcm``) = patient 10000032
  (MIMIC's ``subject_id``), study 50414267 (``study_id``); the group folder must be the id's first two digits;
- CheXpert: ``train/patient00001/study1/view1_frontal.jpg`` = patient ``patient00001``, study
  ``patient00001/study1`` (study numbers restart per patient).

Not derivable from paths: PadChest (images are named by ``ImageID``; ``PatientID`` and ``StudyID`` are columns of
its CSV, read as columns) and VinDr-CXR (images named by an anonymised image hash; no patient id is published).

A user's column always wins (:func:`evaluators.imagesets.load_image_set` derives only when the patient column is
absent or blank); ``CHEXGEN_DERIVE_PATIENT_IDS=0`` (or ``--no-derive-patient-ids``) turns derivation off for names
that only look like a layout.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePath

SETTING = "CHEXGEN_DERIVE_PATIENT_IDS"
MIN_FRACTION = 0.95
"""Share of a set's paths that must match one layout for its ids to be derived."""
UNMATCHED_PREFIX = "unmatched:"
"""Id given to each of the (at most 5%) paths of a derived set that do not follow the layout: its own patient."""


@dataclass(frozen=True)
class Layout:
    """One dataset's path layout: ``pattern`` is searched in the path (``/`` separators) and must reach its end."""

    name: str
    where: str  # "file names" or "folder names": what the ids come from
    pattern: re.Pattern
    ids: Callable[[re.Match], tuple[str, str]]  # match -> (patient id, study id)
    example: str

    @property
    def source(self) -> str:
        """How reports name the ids' origin, e.g. ``derived from file names (NIH ChestX-ray14 layout)``."""
        return f"derived from {self.where} ({self.name} layout)"


LAYOUTS: tuple[Layout, ...] = (
    Layout("NIH ChestX-ray14", "file names",
           re.compile(r"(?:^|/)(?P<patient>\d{8})_(?P<followup>\d{3})\.(?:png|jpe?g)$", re.IGNORECASE),
           lambda m: (str(int(m["patient"])), f"{m['patient']}_{m['followup']}"),
           "00000001_000.png = patient 1, follow-up 000"),
    Layout("MIMIC-CXR", "folder names",
           re.compile(r"(?:^|/)p(?P<group>\d{2})/p(?P<patient>(?P=group)\d{6})/s(?P<study>\d{8})/[^/]+\.(?:jpe?g|png|dcm)$",
                      re.IGNORECASE),
           lambda m: (m["patient"], m["study"]),
           "files/p10/p10000032/s50414267/<dicom_id>.jpg = patient 10000032, study 50414267"),
    Layout("CheXpert", "folder names",
           re.compile(r"(?:^|/)(?P<patient>patient\d{5})/(?P<study>study\d+)/view\d+_(?:frontal|lateral)\.(?:jpe?g|png)$",
                      re.IGNORECASE),
           lambda m: (m["patient"], f"{m['patient']}/{m['study']}"),
           "train/patient00001/study1/view1_frontal.jpg = patient patient00001, study patient00001/study1"),
)


@dataclass
class Derived:
    """Ids derived from a set's paths: one patient and study id per path (unmatched paths: their own patient)."""

    layout: Layout
    patient_ids: list[str]
    study_ids: list[str | None]
    n_matched: int

    @property
    def source(self) -> str:
        return self.layout.source

    def note(self) -> str:
        n = len(self.patient_ids)
        out = (f"patient ids {self.source}: {self.layout.example}; {self.n_matched} of {n} images, "
               f"{len(set(self.patient_ids))} patients")
        if self.n_matched < n:
            out += (f"; the {n - self.n_matched} image(s) not named this way count as one patient each "
                    f"(id '{UNMATCHED_PREFIX}<path>')")
        return out + (f". If the names only look like this layout, set {SETTING}=0 (or --no-derive-patient-ids); "
                      "a patient_id column always wins.")


def _posix(path: str) -> str:
    return PurePath(str(path)).as_posix()


def match_layout(paths: Sequence[str], *, min_fraction: float = MIN_FRACTION) -> Derived | None:
    """The layout that at least ``min_fraction`` of ``paths`` follow, with the ids it gives; None otherwise."""
    paths = [_posix(p) for p in paths]
    if not paths:
        return None
    for layout in LAYOUTS:
        matches = [layout.pattern.search(p) for p in paths]
        n = sum(m is not None for m in matches)
        if n == 0 or n < min_fraction * len(paths):
            continue
        pids: list[str] = []
        sids: list[str | None] = []
        for p, m in zip(paths, matches):
            if m is None:
                pids.append(UNMATCHED_PREFIX + p)
                sids.append(None)
            else:
                pid, sid = layout.ids(m)
                pids.append(pid)
                sids.append(sid)
        return Derived(layout, pids, sids, n)
    return None


_override: bool | None = None


def enabled(explicit: bool | None = None) -> bool:
    """Whether to derive: ``explicit`` when given, else a :func:`derivation` block's choice, else the setting."""
    if explicit is not None:
        return bool(explicit)
    if _override is not None:
        return _override
    from . import settings

    return bool(settings.get(SETTING))


@contextlib.contextmanager
def derivation(on: bool) -> Iterator[None]:
    """Turn derivation on or off for every set loaded inside the block (a CLI's ``--no-derive-patient-ids``)."""
    global _override
    before, _override = _override, bool(on)
    try:
        yield
    finally:
        _override = before
