"""Which re-ID model scores a training set, and how good it is on that set's own patients.

A re-ID score is only shown with the model that produced it and that model's verification AUC on held-out patients
of the user's training set (:class:`ReidChoice`). The default (``"auto"``) depends on the training set's domain
(:mod:`evaluators.domain`, a marker, never a guess from pixels):

- a demo-world set: the shipped demo model (trained on demo-world phantoms), else a model trained on this set;
- any other set: CheXGenBench's checkpoint when it is on the machine, else a model trained on this set
  (``python -m evaluators train-reid --train SET`` writes it where this looks, :func:`.reid.trained_path_for`),
  else re-ID is unavailable, with the reason and how to provide a model.

The demo model is never used on a set that is not the demo world, even when asked for by name: its scores there
mean nothing. The AUC: for a model trained on this very set, the held-out-patient AUC its training measured (the
JSON sidecar); otherwise measured now on pairs of this set's patients (:func:`.reid.verification_auc`: patients the
model never saw, unless it was trained on them elsewhere) and cached under ``CHEXGEN_HOME/reid``. Without patient
ids the AUC is ``None``, shown as "unknown".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, UnavailableError

AUTO = "auto"
AUC_PAIRS = 512
AUC_VERSION = 1  # bump when verification_auc's recipe changes (cached AUCs are recomputed)


@dataclass
class ReidChoice:
    """A re-ID model resolved for one training set (or the reason there is none)."""

    model: object | None  # ReIDModel
    name: str | None  # 'demo', 'chexgenbench', 'trained on this set', a file, or '<architecture> (a loaded model)'
    weights: str | None = None
    chosen_by: str = ""  # why this model: 'requested', 'default for demo-world sets', ...
    auc: float | None = None
    auc_source: str = ""  # how the AUC was obtained, or why it is unknown
    reason: str | None = None  # why no model (with how to provide one)
    demo_world: bool = False
    details: dict = field(default_factory=dict)  # architecture, image size, train set...

    @property
    def available(self) -> bool:
        return self.model is not None

    @property
    def auc_text(self) -> str:
        return "unknown" if self.auc is None else f"{self.auc:.3f}"

    def label(self) -> str:
        """'<model> (AUC 0.938 on held-out patients of this training set)' or the unavailability."""
        if not self.available:
            return f"re-ID unavailable: {self.reason}"
        return f"{self.name} (verification AUC {self.auc_text} on held-out patients of this training set)"

    def info(self) -> dict:
        """The JSON ``reid`` section."""
        out = {"available": self.available, "model": self.name, "weights": self.weights, "chosen_by": self.chosen_by,
               "auc": self.auc, "auc_text": self.auc_text, "auc_source": self.auc_source,
               "training_set_is_demo_world": self.demo_world}
        if not self.available:
            out["note"] = out["reason"] = self.reason
        return {**out, **self.details}


def _training_set(train):
    """An ImageSet for a training set given as an ImageSet, a ReferenceIndex or None."""
    from ..imagesets import ImageSet

    if train is None or isinstance(train, ImageSet):
        return train
    meta = getattr(train, "meta", None)
    if meta is not None:
        root = ((getattr(train, "info", None) or {}).get("reference") or {}).get("root") or None
        return ImageSet(meta.copy(), name=str(getattr(train, "dir", "index")), root=Path(root) if root else None)
    return None


def _is_demo_weights(path: Path) -> bool:
    from ..settings import assets_dir, chexgen_home
    from .reid import DEMO_CHECKPOINT

    with contextlib.suppress(OSError):
        p = path.resolve()
        return any(p == c.resolve() for c in (assets_dir() / DEMO_CHECKPOINT, chexgen_home() / "weights" /
                                              DEMO_CHECKPOINT) if c.exists())
    return False


def _sidecar(path: Path) -> dict:
    from .reid import sidecar_path

    side = sidecar_path(path)
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(side.read_text())
        if isinstance(meta, dict):
            return meta
    return {}


def _auc_cache(weights: str, key: str) -> Path:
    from ..settings import subdir

    try:
        st = os.stat(weights)
        stamp = f"{os.path.abspath(weights)}\0{st.st_size}\0{st.st_mtime_ns}"
    except OSError:
        stamp = weights
    h = hashlib.sha256(json.dumps([AUC_VERSION, AUC_PAIRS, stamp, key]).encode()).hexdigest()[:16]
    return subdir("reid") / f"auc-{h}.json"


def held_out_auc(model, train_set, *, weights: str | None = None, sidecar: dict | None = None) -> tuple[float | None,
                                                                                                       str]:
    """(AUC or None, how it was obtained / why unknown) of ``model`` on ``train_set``'s held-out patients."""
    from .reid import set_key, verification_auc

    if train_set is None:
        return None, "unknown: the training set's patients are not available here"
    key = set_key(train_set)
    sidecar = sidecar or {}
    if sidecar.get("train_key") == key and sidecar.get("val_auc") is not None:
        return (float(sidecar["val_auc"]),
                f"measured when it was trained on this set: {sidecar.get('val_patients', '?')} held-out patients, "
                f"{sidecar.get('val_pairs', '?')} pairs")
    cache = _auc_cache(weights, key) if weights else None
    if cache is not None and cache.is_file():
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            got = json.loads(cache.read_text())
            return got["auc"], got["source"]
    try:
        m = verification_auc(model, train_set, n_pairs=AUC_PAIRS)
    except InputError as exc:
        auc, source = None, f"unknown: {exc}"
    else:
        auc = float(m["auc"])
        source = (f"measured on this training set: {m['n_pairs']} balanced pairs of {m['n_patients']} patients "
                  "(none seen in the model's training, unless it was trained on them elsewhere)")
    if cache is not None:
        with contextlib.suppress(OSError):
            cache.write_text(json.dumps({"auc": auc, "source": source}))
    return auc, source


def _how_to(train_set, spec: str | None) -> str:
    from .reid import CHEXGENBENCH_CHECKPOINT, CHEXGENBENCH_REPO, trained_path_for

    target = f"`python -m evaluators train-reid --train {spec or 'TRAIN_SET'}`"
    if train_set is not None:
        target += f" (writes {trained_path_for(train_set, spec)}, found here by default)"
    from ..index import patient_ids
    from ..settings import chexgen_home

    train = (f"train one on this training set's patients with {target} or the app's Setup tab"
             if train_set is None or patient_ids(train_set.table) is not None else
             f"train one on this training set's patients with {target} or the app's Setup tab once the set has "
             "patient ids (a patient_id column; re-ID training and its AUC need them)")
    return (f"provide CheXGenBench's checkpoint {CHEXGENBENCH_CHECKPOINT} (https://huggingface.co/{CHEXGENBENCH_REPO}, "
            f"copied to {chexgen_home() / 'weights' / CHEXGENBENCH_CHECKPOINT} or in the Hugging Face cache), {train}, "
            "or pass --reid FILE")


def choose_reid(requested=AUTO, train=None, *, spec: str | None = None, device: str | None = None) -> ReidChoice:
    """Resolve ``requested`` (``'auto'``, ``'demo'``, ``'chexgenbench'``, a weights file, a ReIDModel, a ReidChoice or
    None) for the training set ``train`` (ImageSet or ReferenceIndex; ``spec`` how it was named)."""
    from ..domain import is_demo_world
    from .reid import ReIDModel, load_reid, resolve_reid_path, trained_path_for

    if isinstance(requested, ReidChoice):
        return requested
    train_set = _training_set(train)
    demo = is_demo_world(train) if train is not None else is_demo_world(spec)
    if requested is None or (isinstance(requested, str) and requested.lower() == "none"):
        return ReidChoice(None, None, reason="re-ID not requested", demo_world=demo)
    if isinstance(requested, ReIDModel):
        name = f"{requested.config()['architecture']} (a loaded model)"
        auc, source = held_out_auc(requested.eval(), train_set)
        return ReidChoice(requested.eval(), name, chosen_by="given as a model object", auc=auc, auc_source=source,
                          demo_world=demo, details=requested.config())

    def load(name_or_path, chosen_by: str, label: str | None = None) -> ReidChoice:
        path = resolve_reid_path(name_or_path)
        if not demo and _is_demo_weights(path):
            return ReidChoice(None, "demo", weights=str(path), chosen_by=chosen_by, demo_world=demo, reason=(
                "the demo re-ID model was trained on demo-world phantoms and is not used on this training set, which "
                "is not the demo world (its scores would mean nothing); " + _how_to(train_set, spec)))
        model = load_reid(path, device=device)
        side = _sidecar(path)
        auc, source = held_out_auc(model, train_set, weights=str(path), sidecar=side)
        details = {**model.config(), **{k: side[k] for k in ("train_set", "val_auc", "test_auc") if k in side}}
        return ReidChoice(model, label or str(name_or_path), weights=str(path), chosen_by=chosen_by, auc=auc,
                          auc_source=source, demo_world=demo, details=details)

    if isinstance(requested, str | os.PathLike) and str(requested).lower() != AUTO:
        try:
            return load(requested, "requested")
        except UnavailableError as exc:
            return ReidChoice(None, str(requested), chosen_by="requested", demo_world=demo,
                              reason=f"{exc} Or: " + _how_to(train_set, spec))
    # auto
    own = trained_path_for(train_set, spec) if train_set is not None else None
    order = (["demo"] if demo else ["chexgenbench"]) + ([str(own)] if own is not None else [])
    reasons = []
    for cand in order:
        if cand == str(own) and not Path(cand).is_file():
            reasons.append(f"no model trained on this set at {own}")
            continue
        try:
            label = "trained on this set" if cand == str(own) else cand
            why = ("default for demo-world sets" if cand == "demo" else
                   "default for sets that are not the demo world: CheXGenBench's checkpoint" if cand == "chexgenbench"
                   else "default: a model trained on this training set")
            return load(cand, why, label)
        except UnavailableError as exc:
            reasons.append(str(exc).split(". ")[0])
    return ReidChoice(None, None, chosen_by="auto", demo_world=demo,
                      reason=("no re-ID model for this training set" + (" (not the demo world)" if not demo else "")
                              + ": " + "; ".join(reasons) + ". To get one, " + _how_to(train_set, spec)))


# --------------------------------------------------------------------------------------------------
# The re-ID score of people who are not in the training set

REID_NULL_MAX_IMAGES = 400
REID_NULL_VERSION = 1


def calibrate_reid(search, choice: ReidChoice, *, max_images: int = REID_NULL_MAX_IMAGES, seed: int = 0) -> dict:
    """The re-ID threshold a "same patient" verdict needs, from held-out patients (people not in the training set).

    Each held-out image (the same held-out set the copy threshold uses, without training patients; at most
    ``max_images``, drawn with ``seed``) goes through the same search as a synthetic image, and is scored by the
    re-ID model against its matched training image: the scores of new patients. The verdict threshold is the larger
    of CheXGenBench's 0.5 and the finite-sample ``search.percentile`` quantile of those scores. Returns
    ``{"available", "threshold", "n", "fraction_above_0.5", ...}`` or ``{"available": False, "reason"}``; cached next
    to the index (per model file, held-out files and search settings).
    """
    import math

    import numpy as np

    from . import REID_THRESHOLD
    from .search import find_heldout, patient_ids

    if not choice.available:
        return {"available": False, "reason": "no re-ID model"}
    held, source = find_heldout(search.index, search.train_set, search.spec, search.heldout)
    if held is None or len(held) == 0:
        return {"available": False, "reason": "no held-out images to calibrate on (valid/test splits of the training "
                                              "set, or --heldout)"}
    cache = _reid_null_cache(search, choice, held, max_images, seed)
    if cache is not None and cache.is_file():
        with contextlib.suppress(OSError, ValueError):
            return json.loads(cache.read_text())
    train_pids, held_pids = patient_ids(search.index.meta), patient_ids(held.table)
    keep = np.ones(len(held), dtype=bool)
    if train_pids is not None and held_pids is not None:
        tp = set(train_pids)
        keep = np.array([p not in tp for p in held_pids])
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return {"available": False, "reason": "every held-out image belongs to a training patient"}
    if idx.size > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=max_images, replace=False))
    from ..features import extract_features
    from .reid import reid_vs_rows

    paths = [held.paths[int(i)] for i in idx]
    feats = extract_features(paths, search.encoder, show_progress=False)
    paths = [paths[j] for j in feats.index]
    found = search.check(paths, feats.features)
    scores = reid_vs_rows(choice.model, search.train_paths, paths, found.match_row)
    scores = np.sort(scores[np.isfinite(scores)])
    n = int(scores.size)
    if n == 0:
        return {"available": False, "reason": "no held-out image could be scored"}
    q = search.percentile / 100
    k = math.ceil((n + 1) * q)  # the finite-sample (conformal) rank
    out = {"available": True, "n": n, "percentile": search.percentile, "source": source,
           "quantile": float(scores[min(k, n) - 1]), "rank_supported": k <= n,
           "fraction_above_0.5": float((scores > REID_THRESHOLD).mean())}
    out["threshold"] = max(REID_THRESHOLD, out["quantile"])
    if k > n:
        out["note"] = (f"{n} held-out images cannot support the {search.percentile:g}th percentile (needs "
                       f"{math.ceil(1 / (1 - q)) - 1 if q < 1 else 'infinitely many'}); their maximum is used")
    if cache is not None:
        with contextlib.suppress(OSError):
            cache.write_text(json.dumps(out, indent=2))
    return out


def _reid_null_cache(search, choice: ReidChoice, held, max_images: int, seed: int) -> Path | None:
    if not choice.weights:
        return None
    try:
        st = os.stat(choice.weights)
    except OSError:
        return None
    from . import search as search_module  # a new matcher (calibration version) matches other training images

    key = json.dumps([REID_NULL_VERSION, getattr(search_module, "CALIBRATION_VERSION", None),
                      os.path.abspath(choice.weights), st.st_size, st.st_mtime_ns,
                      search.percentile, search.match, search.n_cand, search.encoder.cache_key(), len(search.index),
                      search_module.files_key(held.paths), max_images, seed])
    return Path(search.index.dir) / f"reid-calibration-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
