"""The demo world: a seeded population of synthetic patients with chest-radiograph-like studies.

It stands in for MIMIC-CXR where no real data may be shipped: every patient has persistent anatomy
(:class:`Patient`), 1-4 studies (long-tailed) that differ in pose, inspiration, exposure and noise,
AP or PA views, the 14 CheXpert labels with a MIMIC-like long tail and correlations
(:data:`PREVALENCE`), and a report-style prompt per study. The renderer lives in
:mod:`evaluators.demo_anatomy`; this module samples labels and writes worlds to disk.

Label conventions (documented choices):

- Labels are 1 / 0 / -1; :func:`sample_labels` never leaves a label blank (NaN).
- "No Finding" is 1 exactly when none of the 12 pathologies is positive or uncertain; Support
  Devices may coexist with No Finding = 1 (CheXpert labeler rule).
- Uncertain (-1) labels come at the small per-label rates in :data:`UNCERTAIN_RATE`; the finding is
  drawn faintly (about half strength; Cardiomegaly as a borderline CTR of ~0.5-0.53).
- Chronic findings persist across a patient's studies (:data:`PERSISTENCE`), as do their side and
  position; acute ones are redrawn.

``python -m evaluators demo-data --out DIR --patients N --seed S`` writes ``DIR/images/*.png`` and
``DIR/metadata.csv``; the same seed gives byte-identical files whatever ``--workers``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from statistics import NormalDist

import numpy as np

from .demo_anatomy import (
    Geometry,
    Patient,
    render_layers,
    sample_patient,
    sample_study_params,
    study_geometry,
)
from .errors import InputError
from .pathologies import INDEX, N_LABELS, PATHOLOGIES

__all__ = [
    "MARKER",
    "PERSISTENCE",
    "PREVALENCE",
    "SPLIT_FRACTIONS",
    "UNCERTAIN_RATE",
    "WORLD_NAME",
    "WORLD_VERSION",
    "Geometry",
    "Patient",
    "ensure_demo_world",
    "generate_demo_world",
    "read_marker",
    "render_for_labels",
    "render_study",
    "sample_labels",
    "sample_patient",
    "study_geometry",
    "write_marker",
]

# Share of studies with the label positive (1), roughly MIMIC-CXR's CheXpert labels. No Finding is not
# sampled but follows from the others; its value here is the target the correlations were tuned to.
PREVALENCE: dict[str, float] = {
    "Atelectasis": 0.20,
    "Cardiomegaly": 0.19,
    "Consolidation": 0.05,
    "Edema": 0.12,
    "Enlarged Cardiomediastinum": 0.03,
    "Fracture": 0.02,
    "Lung Lesion": 0.03,
    "Lung Opacity": 0.22,
    "No Finding": 0.33,
    "Pleural Effusion": 0.24,
    "Pleural Other": 0.01,
    "Pneumonia": 0.07,
    "Pneumothorax": 0.04,
    "Support Devices": 0.29,
}
# Extra share of studies with the label uncertain (-1): the finding is drawn faintly.
UNCERTAIN_RATE: dict[str, float] = {
    "Atelectasis": 0.03,
    "Cardiomegaly": 0.02,
    "Consolidation": 0.02,
    "Edema": 0.03,
    "Enlarged Cardiomediastinum": 0.02,
    "Fracture": 0.005,
    "Lung Lesion": 0.005,
    "Lung Opacity": 0.02,
    "Pleural Effusion": 0.02,
    "Pleural Other": 0.003,
    "Pneumonia": 0.04,
    "Pneumothorax": 0.005,
}
# Chance that a later study of a patient keeps the previous study's value of a label.
PERSISTENCE: dict[str, float] = {
    "Atelectasis": 0.4,
    "Cardiomegaly": 0.85,
    "Consolidation": 0.3,
    "Edema": 0.4,
    "Enlarged Cardiomediastinum": 0.7,
    "Fracture": 0.9,
    "Lung Lesion": 0.9,
    "Lung Opacity": 0.3,
    "Pleural Effusion": 0.5,
    "Pleural Other": 0.9,
    "Pneumonia": 0.3,
    "Pneumothorax": 0.3,
    "Support Devices": 0.6,
}
SPLIT_FRACTIONS = {"train": 0.7, "valid": 0.1, "test": 0.2}  # by patient

# Gaussian-copula factor loadings: a global "how ill" factor, a cardiac-congestion factor (heart, edema,
# effusion, mediastinum) and an infection factor (pneumonia, consolidation, opacity, atelectasis).
_LOADINGS: dict[str, tuple[float, float, float]] = {
    "Atelectasis": (0.38, 0.0, 0.35),
    "Cardiomegaly": (0.34, 0.55, 0.0),
    "Consolidation": (0.34, 0.0, 0.7),
    "Edema": (0.38, 0.6, 0.0),
    "Enlarged Cardiomediastinum": (0.30, 0.35, 0.0),
    "Fracture": (0.21, 0.0, 0.0),
    "Lung Lesion": (0.21, 0.0, 0.0),
    "Lung Opacity": (0.38, 0.0, 0.55),
    "Pleural Effusion": (0.38, 0.45, 0.1),
    "Pleural Other": (0.21, 0.0, 0.0),
    "Pneumonia": (0.34, 0.0, 0.75),
    "Pneumothorax": (0.30, 0.0, 0.0),
    "Support Devices": (0.51, 0.0, 0.0),
}
_SAMPLED = tuple(p for p in PATHOLOGIES if p != "No Finding")
_PATHOLOGY_IDX = np.array([INDEX[p] for p in PATHOLOGIES if p not in ("No Finding", "Support Devices")])
_NF = INDEX["No Finding"]


def _copula_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    nd = NormalDist()
    load = np.array([_LOADINGS[p] for p in _SAMPLED], dtype=np.float64)
    resid = np.sqrt(1.0 - (load**2).sum(axis=1))
    t_pos = np.array([nd.inv_cdf(1 - PREVALENCE[p]) for p in _SAMPLED])
    t_unc = np.array([nd.inv_cdf(1 - PREVALENCE[p] - UNCERTAIN_RATE.get(p, 0.0)) for p in _SAMPLED])
    idx = np.array([INDEX[p] for p in _SAMPLED])
    return load, resid, t_pos, t_unc, idx


_LOAD, _RESID, _T_POS, _T_UNC, _SAMPLED_IDX = _copula_tables()


def _finish_no_finding(labels: np.ndarray) -> np.ndarray:
    sick = np.any((labels[_PATHOLOGY_IDX] == 1) | (labels[_PATHOLOGY_IDX] == -1))
    labels[_NF] = 0.0 if sick else 1.0
    return labels


def sample_labels(rng: np.random.Generator) -> np.ndarray:
    """One study's 14 labels (float32, 1 / 0 / -1, never blank) with MIMIC-like prevalence and correlations."""
    factors = rng.standard_normal(3)
    z = _LOAD @ factors + _RESID * rng.standard_normal(len(_SAMPLED))
    out = np.zeros(N_LABELS, dtype=np.float32)
    vals = np.where(z > _T_POS, 1.0, np.where(z > _T_UNC, -1.0, 0.0))
    out[_SAMPLED_IDX] = vals
    return _finish_no_finding(out)


def _next_labels(rng: np.random.Generator, previous: np.ndarray) -> np.ndarray:
    """A later study: each label keeps its previous value with its PERSISTENCE, else is redrawn."""
    fresh = sample_labels(rng)
    keep = rng.random(N_LABELS) < np.array([PERSISTENCE.get(p, 0.0) for p in PATHOLOGIES])
    return _finish_no_finding(np.where(keep, previous, fresh).astype(np.float32))


def _n_studies(rng: np.random.Generator, studies_max: int) -> int:
    """1..studies_max studies, long-tailed: P(k) proportional to 1/sqrt(k)."""
    k = np.arange(1, studies_max + 1)
    w = 1.0 / np.sqrt(k)
    return int(rng.choice(k, p=w / w.sum()))


def _view(rng: np.random.Generator, labels: np.ndarray) -> str:
    """AP (portable, often ICU) is likelier with support devices."""
    p_ap = 0.3 + 0.5 * float(labels[INDEX["Support Devices"]] == 1)
    return "AP" if rng.random() < p_ap else "PA"


def _check_view(view: str) -> str:
    v = str(view).strip().upper()
    if v not in ("AP", "PA"):
        raise InputError(f"view {view!r} is not supported by the demo world; use 'AP' or 'PA'.")
    return v


def _check_size(size: int) -> int:
    if not isinstance(size, int | np.integer) or not 32 <= int(size) <= 1024:
        raise InputError(f"size {size!r} must be an integer between 32 and 1024 pixels.")
    return int(size)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels, dtype=np.float32)
    if arr.shape != (N_LABELS,):
        raise InputError(f"labels must be a vector of the {N_LABELS} CheXpert labels, got shape {arr.shape}.")
    ok = np.isnan(arr) | np.isin(arr, (1.0, 0.0, -1.0))
    if not ok.all():
        raise InputError(f"labels may only hold 1, 0, -1 or NaN; got {sorted(set(arr[~ok].tolist()))}.")
    return arr


def render_study(patient: Patient, labels: np.ndarray, *, size: int = 128, view: str = "PA",
                 rng: np.random.Generator) -> np.ndarray:
    """One study of ``patient`` showing ``labels`` (1 drawn, -1 drawn faintly, 0/NaN absent): uint8 [size, size]."""
    return render_layers(patient, _check_labels(labels), size=_check_size(size), view=_check_view(view),
                         rng=rng)[0]


def render_for_labels(labels: np.ndarray, *, seed: int, size: int = 128, view: str = "PA") -> np.ndarray:
    """A fresh random patient (from ``seed``) showing ``labels``: the reference oracle's 'generator'."""
    rng = np.random.default_rng([int(seed), 0x0AC1E])
    patient = sample_patient(rng, f"oracle-{int(seed)}")
    return render_study(patient, labels, size=size, view=view, rng=rng)


# ----------------------------------------------------------------------------- writing a world
def _fallback_report(labels: np.ndarray, rng: np.random.Generator, view: str | None = None) -> str:
    """Used only when evaluators.reports is missing: a plain prompt listing the labels."""
    pos = [p.lower() for p in PATHOLOGIES if labels[INDEX[p]] == 1 and p != "No Finding"]
    unc = [p.lower() for p in PATHOLOGIES if labels[INDEX[p]] == -1]
    parts = [f"{view} view of the chest." if view else "Frontal view of the chest."]
    if pos:
        parts.append("Findings: " + ", ".join(pos) + ".")
    if unc:
        parts.append("Possible " + ", ".join(unc) + ".")
    if labels[_NF] == 1:
        parts.append("No acute cardiopulmonary process.")
    if labels[INDEX["Pneumothorax"]] == 0:
        parts.append("No pneumothorax.")
    return " ".join(parts)


def _report_writer() -> Callable[..., str]:
    try:
        from .reports import write_report
    except ImportError:
        return _fallback_report
    return write_report


def _splits(patients: int, seed: int) -> list[str]:
    """train/valid/test per patient index: a seeded permutation cut 70/10/20."""
    order = np.random.default_rng([int(seed), 0x5B1]).permutation(patients)
    n_train = round(patients * SPLIT_FRACTIONS["train"])
    n_valid = round(patients * SPLIT_FRACTIONS["valid"])
    out = ["test"] * patients
    for rank, i in enumerate(order.tolist()):
        out[i] = "train" if rank < n_train else ("valid" if rank < n_train + n_valid else "test")
    return out


def _png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, format="PNG", compress_level=6)  # no tIME / text chunks
    return buf.getvalue()


def _patient_id(i: int) -> str:
    return f"p{10000000 + i}"


def _make_patient(args: tuple[int, int, int, int, str]) -> list[dict]:
    """All studies of patient ``i``: renders and writes its PNGs, returns its metadata rows."""
    i, seed, size, studies_max, out_dir = args
    rng = np.random.default_rng([int(seed), i])
    pid = _patient_id(i)
    patient = sample_patient(rng, pid)
    write_report = _report_writer()
    rows = []
    labels = sample_labels(rng)
    for j in range(_n_studies(rng, studies_max)):
        if j:
            labels = _next_labels(rng, labels)
        view = _view(rng, labels)
        params = sample_study_params(rng, view)
        img, _ = render_layers(patient, labels, size=size, view=view, params=params)
        study_id = f"s{50000000 + i * 10 + j}"
        rel = f"images/{pid}_{study_id}.png"
        (Path(out_dir) / rel).write_bytes(_png_bytes(img))
        prompt = write_report(labels.copy(), np.random.default_rng([int(seed), i, j, 7]), view=view)
        rows.append({"path": rel, "prompt": prompt, "patient_id": pid, "study_id": study_id, "view": view,
                     "labels": labels.copy()})
    return rows


WORLD_VERSION = 1
"""Version of :func:`generate_demo_world`'s output. Bump it whenever the same arguments would write other images or
metadata: cached worlds (:func:`ensure_demo_world`) are keyed by it, and ``tests/test_demo_world.py`` pins the
output of each version, so a change that forgets the bump fails there."""

MARKER = "chexgen_demo_world.json"
"""The file that :func:`generate_demo_world` leaves next to ``metadata.csv``: how re-ID and the demo encoder know a
demo-world set (:mod:`evaluators.domain`), never from pixels."""
WORLD_NAME = "chexgen-demo-world"


def write_marker(folder: str | os.PathLike, **fields) -> Path:
    """Write the demo-world marker next to ``folder/metadata.csv`` (deterministic bytes)."""
    folder = Path(folder)
    meta = folder / "metadata.csv"
    body = {"world": WORLD_NAME, **fields, "metadata_sha256": hashlib.sha256(meta.read_bytes()).hexdigest()}
    path = folder / MARKER
    path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_marker(folder: Path) -> dict | None:
    """The marker's content when ``folder`` is an intact demo world (marker + unchanged metadata.csv), else None."""
    marker, meta = folder / MARKER, folder / "metadata.csv"
    try:
        body = json.loads(marker.read_text(encoding="utf-8"))
        digest = hashlib.sha256(meta.read_bytes()).hexdigest()
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("world") != WORLD_NAME or body.get("metadata_sha256") != digest:
        return None
    return {**body, "folder": str(folder)}


def _label_text(v: float) -> str:
    return "" if math.isnan(v) else str(int(v))


def generate_demo_world(out_dir: str | os.PathLike, *, patients: int, seed: int = 0, size: int = 128,
                        studies_max: int = 4, workers: int = 1,
                        progress: Callable[[int, int], None] | None = None) -> Path:
    """Write ``patients`` patients' studies to ``out_dir/images`` and ``out_dir/metadata.csv`` (returned).

    Deterministic in ``seed``: PNG bytes and CSV are identical whatever ``workers`` is.
    ``progress(done_patients, total)`` is called as patients finish.
    """
    if not isinstance(patients, int | np.integer) or patients < 1:
        raise InputError(f"patients must be a positive integer, got {patients!r}.")
    if not isinstance(studies_max, int | np.integer) or not 1 <= studies_max <= 20:
        raise InputError(f"studies_max must be an integer from 1 to 20, got {studies_max!r}.")
    if not isinstance(workers, int | np.integer) or workers < 1:
        raise InputError(f"workers must be a positive integer, got {workers!r}.")
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed must be an integer, got {seed!r}.") from None
    size = _check_size(size)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder; choose a folder path.")
    (out / "images").mkdir(parents=True, exist_ok=True)
    splits = _splits(int(patients), seed)
    jobs = [(i, seed, size, int(studies_max), str(out)) for i in range(int(patients))]
    results: list[list[dict]] = []
    if workers == 1 or patients < 4:
        for done, job in enumerate(jobs, 1):
            results.append(_make_patient(job))
            if progress:
                progress(done, len(jobs))
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(int(workers)) as pool:
            for done, rows in enumerate(pool.imap(_make_patient, jobs, chunksize=4), 1):
                results.append(rows)
                if progress:
                    progress(done, len(jobs))
    meta = out / "metadata.csv"
    with open(meta, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["path", "prompt", "patient_id", "study_id", "view", "split", *PATHOLOGIES])
        for i, rows in enumerate(results):
            for r in rows:
                w.writerow([r["path"], r["prompt"], r["patient_id"], r["study_id"], r["view"], splits[i],
                            *(_label_text(float(x)) for x in r["labels"])])
    write_marker(out, version=WORLD_VERSION, patients=int(patients), seed=seed, size=size,
                 studies_max=int(studies_max))
    return meta


def ensure_demo_world(patients: int = 600, seed: int = 0, size: int = 128) -> Path:
    """The app's embedded demo world, built once under CHEXGEN_HOME/demo and reused (folder returned).

    The folder is named by :data:`WORLD_VERSION` too, so a world cached by older code is not reused."""
    from .settings import subdir

    root = subdir("demo")
    final = root / f"world-v{WORLD_VERSION}-p{int(patients)}-s{int(seed)}-{int(size)}px"
    if (final / "metadata.csv").is_file():
        if not (final / MARKER).is_file():  # a world cached before the marker existed
            write_marker(final, version=WORLD_VERSION, patients=int(patients), seed=int(seed), size=int(size),
                         studies_max=4)
        return final
    tmp = root / f".tmp-{final.name}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        generate_demo_world(tmp, patients=patients, seed=seed, size=size)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "metadata.csv").is_file():  # not a concurrent builder winning the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
