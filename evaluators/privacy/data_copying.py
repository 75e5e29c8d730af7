"""Data-copying tests of the privacy job: every privacy metric of the registry (C_T, AuthPct) from cached features.

Inputs, all in the reference index's encoder space and unit-normalised (the memorisation search's cosine space):
``train`` = the reference index's features, ``heldout`` = the held-out real images (``--heldout``, else the training
source's other splits: :func:`.search.find_heldout`; features cached like any encoder's), ``synthetic`` = the
synthetic set's features. A metric whose inputs are missing (C_T without held-out images) is reported unavailable
with the reason, never computed on something else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..metrics import registry


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


def heldout_features(search, progress=None, synthetic_paths=None) -> tuple[np.ndarray | None, str]:
    """(held-out features or None, where they came from / why there are none). Held-out images whose bytes are
    among ``synthetic_paths``' (a synthetic folder made of the reference's own test images) are left out: C_T would
    otherwise compare those images with themselves."""
    from ..features import extract_features
    from .search import find_heldout

    held, source = find_heldout(search.index, search.train_set, search.spec, search.heldout)
    if held is None or len(held) == 0:
        return None, ("no held-out real images: pass --heldout SET (other patients of the same source), or keep the "
                      "training set's valid/test splits next to it")
    held, note = other_patients(held, search.index.meta)
    if held is not None and synthetic_paths:
        kept, more = not_synthetic(held, synthetic_paths)
        if kept is None:
            return None, more
        held, note = kept, note + more
    if held is None:
        return None, note
    feats = extract_features(list(held.paths), search.encoder, show_progress=False, progress=progress)
    return feats.features, f"{len(feats)} images of {held.name} ({source}{note})"


def not_synthetic(held, synthetic_paths) -> tuple[object | None, str]:
    """(the held-out images whose bytes are not one of the synthetic images', or None, and a note)."""
    from ..filehashes import file_hashes

    syn = set(file_hashes([str(p) for p in synthetic_paths]))
    keep = np.array([h not in syn for h in file_hashes(list(held.paths))])
    dropped = int((~keep).sum())
    if not dropped:
        return held, ""
    if not keep.any():
        return None, ("every held-out image is also in the synthetic set: C_T needs other real images; pass "
                      "--heldout SET")
    return held.subset(keep, name=held.name), f"; {dropped} image(s) that are also in the synthetic set left out"


def other_patients(held, train_meta) -> tuple[object | None, str]:
    """(the held-out images of patients absent from training, or None, and a note). C_T compares synthetic and
    held-out images by their distance to training: a held-out image of a training patient sits as close as a copy
    (splits of sets such as the NIH sample share patients), so it is left out, as the calibration leaves it out."""
    from ..index import patient_ids

    train_pids = patient_ids(train_meta)
    held_pids = [None if p is None else str(p) for p in held.patient_ids]
    if train_pids is None or any(p is None for p in held_pids):
        return held, "; patient ids missing: assumed to be of other patients"
    tp = set(train_pids)
    keep = np.array([p not in tp for p in held_pids])
    if not keep.any():
        return None, (f"every held-out image ({len(held)}) belongs to a training patient: C_T needs other patients; "
                      "pass --heldout SET (a patient-disjoint set)")
    dropped = int((~keep).sum())
    if not dropped:
        return held, "; patient-disjoint from training"
    return held.subset(keep, name=held.name), f"; {dropped} image(s) of training patients left out"


def cached_train_radii(search, train: np.ndarray) -> np.ndarray:
    """AuthPct's training radii (each training image's distance to its nearest other one), computed once per index
    and kept in its folder (the N x N part of AuthPct: ~500 s at 50,000 images)."""
    import contextlib
    import hashlib

    from ..metrics.copying import train_radii

    key = hashlib.sha256(f"{search.encoder.cache_key()}|{len(train)}|unit|v1".encode()).hexdigest()[:16]
    path = Path(search.index.dir) / f"authpct-radii-{key}.npy"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            r = np.load(path)
            if r.shape == (len(train),):
                return r
    r = train_radii(train)
    with contextlib.suppress(OSError):  # a read-only index folder: recompute next time
        np.save(path, r)
    return r


def train_features(index) -> np.ndarray:
    """The training side of every data-copying test: the index's features, unit-normalised."""
    return _unit(np.asarray(index.features))


def data_copying(search, synthetic_features: np.ndarray, *, seed: int = 0, progress=None,
                 only: tuple[str, ...] | None = None, synthetic_paths=None) -> dict[str, Any]:
    """{metric name: its result or {"available": False, "reason"}} for every privacy metric (or those named in
    ``only``, e.g. ``("C_T",)`` for the embedding map's cells), plus ``inputs``."""
    data = {"train": train_features(search.index), "synthetic": _unit(synthetic_features)}
    settings: dict[str, Any] = {"seed": seed}
    metrics = [m for m in registry.metrics("privacy") if only is None or m.name in only]
    if any(m.name == "AuthPct" for m in metrics):
        settings["train_radius"] = cached_train_radii(search, data["train"])
    held, held_source = heldout_features(search, progress, synthetic_paths)
    if held is not None:
        data["heldout"] = _unit(held)
    out: dict[str, Any] = {"space": f"{search.encoder.name} features, unit-normalised (cosine, as the search)",
                           "heldout": held_source}
    for metric in metrics:
        missing = [i for i in metric.inputs if i not in data]
        if missing:
            out[metric.name] = {"available": False,
                                "reason": held_source if "heldout" in missing else f"no {', '.join(missing)} input"}
            continue
        try:
            out[metric.name] = {"available": True, **metric.compute(data, settings)}
        except InputError as exc:
            out[metric.name] = {"available": False, "reason": str(exc)}
    return out


def summary_numbers(section: dict) -> dict[str, float | None]:
    """The shown outputs of the privacy metrics, for the privacy summary (and so the leaderboard)."""
    nums: dict[str, float | None] = {}
    for metric in registry.metrics("privacy"):
        res = section.get(metric.name) or {}
        for o in metric.outputs:
            if o.shown:
                nums[o.key] = res.get(o.key) if res.get("available") else None
    return nums


def format_line(section: dict | None) -> str:
    """'data copying: C_T -8.15 (< 0: ...), AuthPct 0.0%' or what is unavailable and why."""
    if not section:
        return ""
    parts = []
    for metric in registry.metrics("privacy"):
        res = section.get(metric.name) or {}
        o = metric.outputs[0]
        value = res.get(o.key) if res.get("available") else None
        if value is None:
            parts.append(f"{metric.name} n/a ({res.get('reason', 'not computed')})")
        else:
            parts.append(f"{o.label} {value:.2f}")
    return "data copying: " + "; ".join(parts)
