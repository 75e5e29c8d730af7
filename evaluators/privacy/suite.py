"""The privacy suite: memorisation search, re-identification and CheXGenBench's per-prompt protocol.

:func:`run_privacy` asks of a synthetic set "does any image copy a training image?": every synthetic
image is searched against the *whole* training set (a reference index, built once and cached under
``CHEXGEN_HOME/indexes``), flagged above a threshold calibrated on held-out *patients*, and scored
by the re-ID network against its nearest training image.

Held-out patients come from, in order: ``heldout=`` when given; the training set's sibling splits
(valid/test rows of the same folder or CSV, e.g. ``DIR@train`` -> ``DIR``'s valid and test rows),
minus any image of a training patient; else a patient-disjoint hold-out of the training set itself
(10% of its patients, at least 1 image each side), searched against the remaining patients only.

:func:`run_privacy_protocol` is CheXGenBench's protocol: M training prompts, S seeds each, re-ID
score and pixel / latent distances of every generated image against the prompt's real image, plus
the memorisation search over the whole training set.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import InputError, UnavailableError
from . import REID_THRESHOLD
from .memorisation import DEFAULT_PERCENTILE, calibration, nearest_train, privacy_summary

Progress = Callable[[int, int, str], None]

HOLDOUT_FRACTION = 0.1
"""Share of training patients held out for calibration when no sibling split exists."""
DEFAULT_SEEDS = (0, 1, 2)
CHUNK = 256  # images read and embedded at a time by the re-ID model


# --------------------------------------------------------------------------------------------------
# Inputs


def _encoder(encoder, index=None):
    """An Encoder object from a name, an object, or (None) the index's encoder or the best available."""
    from ..encoders import default_encoder, load_encoder

    if encoder is None:
        encoder = index.encoder if index is not None else default_encoder()
    if isinstance(encoder, str):
        return load_encoder(encoder)
    return encoder


def _load_set(spec, what: str):
    from ..imagesets import ImageSet, load_image_set

    if isinstance(spec, ImageSet):
        return spec
    if spec is None:
        raise InputError(f"No {what} set given; pass a folder, a CSV, PATH@SPLIT or 'demo'.")
    return load_image_set(spec)


def _is_index_dir(spec) -> bool:
    from ..imagesets import parse_set_spec

    if not isinstance(spec, str | os.PathLike):
        return False
    path, _ = parse_set_spec(spec)
    return Path(path).is_dir() and (Path(path) / "index.json").is_file()


def _index_key(image_set, encoder) -> str:
    """A cache key: encoder + every training path with its size and modification time."""
    h = hashlib.sha256(encoder.cache_key().encode())
    for p in image_set.paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return f"privacy-{encoder.name}-{h.hexdigest()[:16]}"


def reference_index(image_set, encoder, *, progress: Progress | None = None):
    """The reference index of ``image_set`` under ``CHEXGEN_HOME/indexes/<key>`` (built on first use)."""
    from ..index import ReferenceIndex, build_index
    from ..settings import subdir

    folder = subdir("indexes") / _index_key(image_set, encoder)
    if (folder / "index.json").is_file():
        index = ReferenceIndex(folder)
        if len(index) == len(image_set):
            return index
    return build_index(image_set, encoder, folder, umap=False, show_progress=False, progress=progress)


def _train_source(train, encoder, progress):
    """(index, train ImageSet or None, spec string or None, encoder object)."""
    from ..imagesets import ImageSet
    from ..index import ReferenceIndex

    spec = str(train) if isinstance(train, str | os.PathLike) else None
    if isinstance(train, ReferenceIndex) or _is_index_dir(train):
        index = train if isinstance(train, ReferenceIndex) else ReferenceIndex(str(train))
        enc = _encoder(encoder, index)
        if enc.cache_key() != index.encoder_key:
            raise InputError(
                f"The reference index at {index.dir} was built with encoder {index.encoder!r}, not {enc.name!r}; "
                f"leave out the encoder or rebuild the index with {enc.name!r}."
            )
        return index, None, spec, enc
    image_set = train if isinstance(train, ImageSet) else _load_set(train, "training")
    if len(image_set) == 0:
        raise InputError(f"The training set {image_set.name!r} has no images.")
    enc = _encoder(encoder)
    return reference_index(image_set, enc, progress=progress), image_set, spec, enc


def _patient_ids(table) -> list[str] | None:
    """Patient ids of a table as strings, or None when any is missing."""
    if "patient_id" not in table.columns:
        return None
    col = table["patient_id"]
    if col.isna().any() or (col.astype(str).str.strip() == "").any():
        return None
    return col.astype(str).tolist()


def _sibling_heldout(spec: str | None, train_set, train_paths: set[str]):
    """Rows of the training source's other splits (valid/test), or None when there are none."""
    from ..imagesets import load_image_set, parse_set_spec

    full = None
    if spec:
        path, split = parse_set_spec(spec)
        if split:
            try:
                full = load_image_set(path)
            except InputError:
                full = None
    if full is None and train_set is not None and getattr(train_set, "root", None):
        root = Path(train_set.root)
        for folder in (root, root.parent):
            if any((folder / m).is_file() for m in ("metadata.csv", "labels.csv")):
                try:
                    cand = load_image_set(folder)
                except InputError:
                    continue
                if train_paths <= set(cand.paths):
                    full = cand
                    break
    if full is None:
        return None
    keep = ~full.table["path"].isin(train_paths).to_numpy()
    if not keep.any():
        return None
    return full.subset(keep, name=f"{full.name} (held-out splits)")


# --------------------------------------------------------------------------------------------------
# Memorisation search


class AlignedMatcher:
    """Copy score of a query image against training images: the best normalised cross-correlation.

    A memorised image comes back shifted, cropped, re-exposed or re-compressed (see :mod:`.perturb`);
    encoder features are not reliably invariant to that (the ``pixels`` encoder is not at all). So the
    encoder proposes candidates and this verifies them: both images at 64 x 64 gray, high-passed
    (minus a Gaussian blur of sigma 2 px, which removes the chest outline that every patient shares
    and keeps the ribs, vessels and devices that tell patients apart), the query's centre 52 x 52 slid
    over the training image at scales 1, 1.045 and 1.09 (the best 3 candidates also at every pair of
    unequal vertical / horizontal scales) and shifts up to 4 px each way; the score is
    the highest zero-mean correlation (1.0 for an exact copy). Each training image is prepared once.
    On the demo world this widened the gap between light copies and new patients about fourfold
    compared with raw pixels.
    """

    SIDE, CROP, SHIFT, SCALES, SIGMA, REFINE = 64, 52, 4, (1.0, 1.045, 1.09), 2.0, 3

    def __init__(self, train_paths: Sequence[str]):
        from numpy.lib.stride_tricks import sliding_window_view

        self._view = sliding_window_view
        self.paths = list(train_paths)
        self._refs: dict[tuple[int, float, float], tuple[np.ndarray, np.ndarray]] = {}
        self._bases: dict[int, np.ndarray] = {}

    def _gray(self, img) -> np.ndarray:
        from .distances import as_gray01, resize_to

        return resize_to(as_gray01(_read(img)), self.SIDE)

    def _highpass(self, g: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        g = g.astype(np.float64)
        return g - gaussian_filter(g, self.SIGMA)

    def query(self, img) -> np.ndarray:
        """The zero-mean, unit-norm centre crop of a query image."""
        o = (self.SIDE - self.CROP) // 2
        q = self._highpass(self._gray(img))[o : o + self.CROP, o : o + self.CROP]
        q = q - q.mean()
        return q / max(float(np.linalg.norm(q)), 1e-8)

    def _ref(self, row: int, sy: float, sx: float) -> tuple[np.ndarray, np.ndarray]:
        """The training image scaled by (sy, sx), high-passed, cut to the shift range, with window norms."""
        key = (int(row), sy, sx)
        if key not in self._refs:
            from .distances import resize_to

            g, c_ = self._base(int(row)), self.CROP
            h, w = round(self.SIDE * sy), round(self.SIDE * sx)
            r = self._highpass(g if (h, w) == (self.SIDE, self.SIDE) else resize_to(g, (h, w)))
            cy, cx = (h - c_) // 2, (w - c_) // 2
            y0, y1 = max(0, cy - self.SHIFT), min(h - c_, cy + self.SHIFT)
            x0, x1 = max(0, cx - self.SHIFT), min(w - c_, cx + self.SHIFT)
            region = r[y0 : y1 + c_, x0 : x1 + c_]
            n = c_ * c_
            sums = self._view(region, (c_, c_)).sum(axis=(2, 3))
            sq = self._view(region * region, (c_, c_)).sum(axis=(2, 3))
            self._refs[key] = (region, np.sqrt(np.maximum(sq - sums**2 / n, 1e-12)))
        return self._refs[key]

    def _base(self, row: int) -> np.ndarray:
        if row not in self._bases:
            self._bases[row] = self._gray(self.paths[row])
        return self._bases[row]

    def score(self, q: np.ndarray, row: int, *, anisotropic: bool = False) -> float:
        """Best correlation over shifts and scales (all (sy, sx) pairs when ``anisotropic``)."""
        pairs = [(a, b) for a in self.SCALES for b in self.SCALES] if anisotropic else [(s, s) for s in self.SCALES]
        best = -1.0
        for sy, sx in pairs:
            region, norm = self._ref(row, sy, sx)
            corr = np.einsum("ij,abij->ab", q, self._view(region, (self.CROP, self.CROP))) / norm
            best = max(best, float(corr.max()))
        return best

    def best(self, img, rows: Sequence[int]) -> tuple[float, int]:
        """(best score, its training row) among candidate rows.

        Every candidate is scored at the three isotropic scales; the best ``REFINE`` are then also tried
        with different vertical and horizontal scales (a crop of unequal height and width).
        """
        q = self.query(img)
        rows = [int(r) for r in rows if r >= 0]
        if not rows:
            return -1.0, -1
        scores = np.array([self.score(q, r) for r in rows])
        for j in np.argsort(-scores)[: self.REFINE]:
            scores[j] = max(scores[j], self.score(q, rows[j], anisotropic=True))
        j = int(np.argmax(scores))
        return float(scores[j]), rows[j]


MATCH_MODES = ("aligned", "cosine")
DEFAULT_CANDIDATES = 50


def _copy_scores(items: Sequence, sims: np.ndarray, rows: np.ndarray, match: str, matcher) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """Each query's memorisation score and matched training row, from its encoder candidates."""
    if match == "cosine":
        return sims[:, 0].astype(np.float64), rows[:, 0].astype(np.int64)
    out = [matcher.best(it, r.tolist()) for it, r in zip(items, rows)]
    return np.array([o[0] for o in out], dtype=np.float64), np.array([o[1] for o in out], dtype=np.int64)


def _calibrate(index, train_set, spec, heldout, enc, percentile: float, match: str, matcher, n_cand: int) -> dict:
    """The memorisation threshold from held-out patients (see the module docstring)."""
    from ..features import extract_features

    train_pids = _patient_ids(index.meta)
    train_paths = set(index.meta["path"].astype(str))
    held = None
    if heldout is not None:
        held, source = _load_set(heldout, "held-out"), "given held-out set"
    else:
        held = _sibling_heldout(spec, train_set, train_paths)
        source = "sibling splits of the training set"
        if held is None and train_set is None:
            root = index.info.get("reference", {}).get("root") or ""
            if root:
                from ..imagesets import ImageSet

                stub = ImageSet(index.meta.iloc[:0].copy(), root=Path(root))
                held = _sibling_heldout(None, stub, train_paths)
    notes: list[str] = []
    base = {"percentile": percentile, "match": match}
    if held is not None and len(held) > 0:
        feats = extract_features(list(held.paths), enc, show_progress=False)
        held_pids = _patient_ids(held.table.iloc[feats.index])
        keep = np.ones(len(feats.index), dtype=bool)
        if held_pids is not None and train_pids is not None:  # skip work on images calibration drops
            tp = set(train_pids)
            keep = np.array([p not in tp for p in held_pids])
            if not keep.any():
                raise InputError(
                    f"Every image of the held-out set {held.name!r} belongs to a training patient; calibration "
                    "needs held-out patients (a patient-disjoint split), e.g. --heldout OTHER_SET."
                )
        sims, rows = index.search(feats.features[keep], n_cand)
        paths = [held.paths[int(i)] for i in feats.index[keep]]
        scores, _ = _copy_scores(paths, sims, rows, match, matcher)
        if held_pids is None or train_pids is None:
            notes.append("Patient ids are missing: the held-out images are assumed to be of other patients.")
        dropped = int((~keep).sum())
        if dropped:
            notes.append(f"{dropped} held-out image(s) belong to training patients and were left out of calibration.")
        cal = calibration(scores, percentile)
        return {**base, "threshold": cal.threshold, "n": cal.n_used, "source": source, "heldout_set": held.name,
                "n_dropped_same_patient": dropped, "notes": notes + cal.notes}
    # No held-out images: hold out a share of the training patients, search the others.
    x = np.asarray(index.features, dtype=np.float32)
    if len(x) < 2:
        raise InputError("Calibration needs at least 2 training images (or a held-out set: --heldout).")
    rng = np.random.default_rng(0)
    if train_pids is None:
        notes.append("The training set has no patient ids: images were held out one by one, so a held-out image "
                     "may share a patient with the searched images and raise the threshold.")
        groups = np.arange(len(x)).astype(str)
    else:
        groups = np.asarray(train_pids)
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise InputError("Calibration needs at least 2 training patients (or a held-out set: --heldout).")
    n_hold = min(len(uniq) - 1, max(1, round(HOLDOUT_FRACTION * len(uniq))))
    hold = set(rng.choice(uniq, size=n_hold, replace=False).tolist())
    is_hold = np.array([g in hold for g in groups])
    others = np.flatnonzero(~is_hold)
    sims, idx = nearest_train(x[is_hold], x[others], k=n_cand)
    paths = index.meta["path"].astype(str).to_numpy()[is_hold].tolist()
    scores, _ = _copy_scores(paths, sims, others[idx], match, matcher)
    cal = calibration(scores, percentile)
    return {**base, "threshold": cal.threshold, "n": cal.n_used,
            "source": f"patient-disjoint hold-out of the training set ({n_hold} of {len(uniq)} patients, "
                      "searched against the other patients)",
            "heldout_set": None, "n_dropped_same_patient": 0, "notes": notes + cal.notes}


def _memorisation(index, items: Sequence, syn_features: np.ndarray, k: int, cal: dict, matcher, n_cand: int):
    """Top-k neighbours of each synthetic image in the whole training set, its copy score, match and flag."""
    sims, rows = index.search(syn_features, max(k, n_cand))
    neighbours = index.neighbours(syn_features, k)
    scores, best = _copy_scores(items, sims, rows, cal["match"], matcher)
    return neighbours, scores, best, scores > cal["threshold"]


# --------------------------------------------------------------------------------------------------
# Re-identification


def _load_reid(reid):
    """(model or None, note): an unavailable model is reported, never replaced."""
    if reid is None:
        return None, "re-ID not requested"
    from .reid import ReIDModel, load_reid

    if isinstance(reid, ReIDModel):
        return reid.eval(), None
    try:
        return load_reid(reid, device="cpu"), None
    except UnavailableError as exc:
        return None, f"re-ID model unavailable: {exc}"


def _reid_info(model, reid) -> dict:
    if model is None:
        return {"available": False}
    from .reid import resolve_reid_path, sidecar_path

    info = {"available": True, **model.config()}
    if isinstance(reid, str | os.PathLike):
        path = resolve_reid_path(reid)
        info["weights"] = str(path)
        side = sidecar_path(path)
        if side.is_file():
            import json

            meta = json.loads(side.read_text())
            info.update({k: meta[k] for k in ("val_auc", "test_auc", "train_set") if k in meta})
    return info


def _embed_items(model, items: Sequence, reader: Callable[[object], np.ndarray]) -> np.ndarray:
    from .reid import embed

    out = [embed(model, [reader(it) for it in items[s : s + CHUNK]]) for s in range(0, len(items), CHUNK)]
    return np.concatenate(out) if out else np.zeros((0, model.n_features), np.float32)


def _read(item) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    from ..imageio import read_image

    return read_image(item)


# --------------------------------------------------------------------------------------------------
# Summaries


def _records(df) -> list[dict] | None:
    if df is None:
        return None
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
            for r in df.to_dict(orient="records")]


def _summary(scores, flags, labels, cal: dict, reid_note: str | None) -> dict:
    s = privacy_summary(scores, flags, labels)
    out = dict(s["overall"])
    out["reid_available"] = scores is not None
    if reid_note:
        out["reid_note"] = reid_note
    out["memorisation_threshold"] = cal["threshold"]
    out["expected_fraction_flagged"] = 1 - cal["percentile"] / 100
    out["per_pathology"] = _records(s["per_pathology"])
    return out


def _encoder_meta(enc) -> dict:
    try:
        return dict(enc.metadata())
    except Exception:  # metadata is informative only
        return {"name": getattr(enc, "name", str(enc))}


# --------------------------------------------------------------------------------------------------
# The suite


def run_privacy(
    train,
    synthetic,
    *,
    encoder=None,
    reid="demo",
    k: int = 5,
    percentile: float = DEFAULT_PERCENTILE,
    heldout=None,
    match: str = "aligned",
    candidates: int = DEFAULT_CANDIDATES,
    progress: Progress | None = None,
) -> dict:
    """Memorisation search + re-ID of a synthetic set against a training set (ImageSet, spec or index).

    Returns ``{"summary", "samples", "calibration", "settings", "encoder", "reid"}``; ``samples[i]``
    holds synthetic image i's path, its k nearest training images, its re-ID score against the
    nearest one (None without a re-ID model) and its memorisation flag.

    ``match="aligned"`` (default): the ``candidates`` nearest training images by encoder cosine are
    verified by :class:`AlignedMatcher`, whose best score is the copy score; ``"cosine"``: the copy
    score is the top-1 encoder cosine. Either way the threshold is calibrated on the same score.
    """
    _check(k, percentile, match, candidates)
    from ..features import extract_features

    t0 = time.perf_counter()
    model, reid_note = _load_reid(reid)  # a bad path fails before any work
    syn = _load_set(synthetic, "synthetic")
    if len(syn) == 0:
        raise InputError(f"The synthetic set {syn.name!r} has no images.")
    index, train_set, spec, enc = _train_source(train, encoder, progress)
    train_paths = index.meta["path"].astype(str).to_numpy()
    matcher = AlignedMatcher(train_paths)
    n_cand = min(len(index), max(int(k), int(candidates)))
    cal = _calibrate(index, train_set, spec, heldout, enc, float(percentile), match, matcher, n_cand)
    feats = extract_features(list(syn.paths), enc, show_progress=False, progress=progress)
    syn_paths = [syn.paths[j] for j in feats.index]
    neighbours, copy, rows, flags = _memorisation(index, syn_paths, feats.features, int(k), cal, matcher, n_cand)

    scores = None
    if model is not None:
        uniq = np.unique(rows)
        f_train = _embed_items(model, list(train_paths[uniq]), _read)  # each real image embedded once
        f_syn = _embed_items(model, syn_paths, _read)
        from .reid import score_pairs

        pos = {int(r): i for i, r in enumerate(uniq)}
        scores = score_pairs(model, f_syn, f_train[[pos[int(r)] for r in rows]])

    labels = syn.labels[feats.index] if syn.has_labels else None
    summary = _summary(scores, flags, labels, cal, reid_note)
    top1 = np.array([nb[0].similarity if nb else np.nan for nb in neighbours])
    summary["top1_cosine_mean"] = float(np.nanmean(top1))
    summary["copy_score_mean"] = float(copy.mean())
    summary["copy_score_max"] = float(copy.max())
    summary["distinct_train_images_flagged"] = int(np.unique(rows[flags]).size)
    pids = _patient_ids(index.meta)
    if pids is not None:
        summary["distinct_train_patients_flagged"] = int(np.unique(np.asarray(pids)[rows[flags]]).size)
    samples = [
        {
            "synthetic": path,
            "neighbours": [{"path": n.path, "similarity": n.similarity, "patient_id": n.patient_id} for n in nb],
            "match": {"path": str(train_paths[rows[i]]), "copy_score": float(copy[i])} if rows[i] >= 0 else None,
            "reid_score": None if scores is None else float(scores[i]),
            "flagged": bool(flags[i]),
        }
        for i, (path, nb) in enumerate(zip(syn_paths, neighbours))
    ]
    return {
        "kind": "privacy",
        "summary": summary,
        "samples": samples,
        "calibration": cal,
        "settings": {"k": int(k), "percentile": float(percentile), "match": match, "candidates": n_cand,
                     "reid": None if reid is None else str(reid),
                     "reid_threshold": REID_THRESHOLD, "train": _describe(train, index),
                     "synthetic": syn.name, "n_train": len(index), "n_synthetic": len(syn),
                     "index": str(index.dir), "seconds": round(time.perf_counter() - t0, 2)},
        "encoder": _encoder_meta(enc),
        "reid": _reid_info(model, reid) if model is not None else {"available": False, "note": reid_note},
    }


def _check(k, percentile, match, candidates) -> None:
    if int(k) < 1:
        raise InputError(f"k must be at least 1 (got {k}).")
    if not 0 < float(percentile) <= 100:
        raise InputError(f"Percentile must be in (0, 100], got {percentile}.")
    if match not in MATCH_MODES:
        raise InputError(f"Unknown match {match!r}; use one of {', '.join(MATCH_MODES)}.")
    if int(candidates) < 1:
        raise InputError(f"candidates must be at least 1 (got {candidates}).")


def _describe(train, index) -> str:
    if isinstance(train, str | os.PathLike):
        return str(train)
    return str(getattr(train, "name", index.dir))


# --------------------------------------------------------------------------------------------------
# CheXGenBench's protocol


def _pick_prompts(train_set, m: int, seed: int) -> np.ndarray:
    """Rows of ``m`` distinct non-empty training prompts, drawn with ``seed``."""
    prompts = train_set.table["prompt"].fillna("").astype(str).str.strip()
    ok = np.flatnonzero((prompts != "").to_numpy())
    if ok.size == 0:
        raise InputError(f"The training set {train_set.name!r} has no prompts; the protocol generates from them.")
    rng = np.random.default_rng(seed)
    seen, rows = set(), []
    for r in rng.permutation(ok):
        p = prompts.iat[int(r)]
        if p not in seen:
            seen.add(p)
            rows.append(int(r))
        if len(rows) == m:
            break
    return np.asarray(rows, dtype=np.int64)


def run_privacy_protocol(
    model,
    train,
    *,
    m_prompts: int = 20,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    encoder=None,
    reid="demo",
    size: int | None = None,
    k: int = 5,
    percentile: float = DEFAULT_PERCENTILE,
    heldout=None,
    match: str = "aligned",
    candidates: int = DEFAULT_CANDIDATES,
    prompt_seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    batch_size: int = 4,
    progress: Progress | None = None,
) -> dict:
    """CheXGenBench's privacy protocol for a generator (name or Generator) on a training set.

    M distinct training prompts (drawn with ``prompt_seed``), S ``seeds`` each. Per prompt: mean and
    max re-ID score of its S images against the prompt's real image, mean / min pixel distance
    (float in [0, 1], equal size) and latent distance (encoder features, RMSE). Summary: means over
    prompts, per pathology (prompt labels), and the fraction flagged by the whole-set memorisation search.
    """
    from ..features import extract_features
    from .distances import as_gray01, per_prompt_distances

    _check(k, percentile, match, candidates)
    if int(m_prompts) < 1:
        raise InputError(f"The protocol needs at least 1 prompt (got {m_prompts}).")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise InputError("The protocol needs at least 1 seed.")
    t0 = time.perf_counter()
    reid_model, reid_note = _load_reid(reid)
    train_set = _load_set(train, "training")
    if len(train_set) == 0:
        raise InputError(f"The training set {train_set.name!r} has no images.")
    rows = _pick_prompts(train_set, int(m_prompts), prompt_seed)
    prompts = [str(train_set.table["prompt"].iat[int(r)]) for r in rows]
    gen = model
    if isinstance(model, str):
        from ..generators import load_generator

        gen = load_generator(model)
    gen_name = getattr(gen, "name", str(model))
    S = len(seeds)
    all_prompts = [p for p in prompts for _ in seeds]
    all_seeds = seeds * len(prompts)
    images = gen.generate(all_prompts, all_seeds, steps=steps, guidance=guidance, height=size, width=size,
                          batch_size=batch_size,
                          progress=(lambda d, t: progress(d, t, "generating")) if progress else None)
    images = [as_gray01(im, name=f"generated image {i}") for i, im in enumerate(images)]
    generated = [images[i * S : (i + 1) * S] for i in range(len(prompts))]
    real = [train_set.image(int(r)) for r in rows]

    index, _, _, enc = _train_source(train_set, encoder, progress)
    spec = str(train) if isinstance(train, str | os.PathLike) else None
    matcher = AlignedMatcher(index.meta["path"].astype(str).tolist())
    n_cand = min(len(index), max(int(k), int(candidates)))
    cal = _calibrate(index, train_set, spec, heldout, enc, float(percentile), match, matcher, n_cand)
    f_gen = extract_features(images, enc, show_progress=False).features
    f_real = extract_features(real, enc, show_progress=False).features
    table = per_prompt_distances(prompts, real, generated, real_features=f_real,
                                 generated_features=[f_gen[i * S : (i + 1) * S] for i in range(len(prompts))])
    _, copy, _, flags = _memorisation(index, images, f_gen, int(k), cal, matcher, n_cand)

    scores = None
    if reid_model is not None:
        from .reid import embed, score_pairs

        fr = embed(reid_model, real)
        fg = embed(reid_model, images)
        scores = score_pairs(reid_model, fg, np.repeat(fr, S, axis=0))
        per = scores.reshape(len(prompts), S)
        table["Mean_reid_score"] = per.mean(axis=1)
        table["Max_reid_score"] = per.max(axis=1)
        table["Reidentified_fraction"] = (per > REID_THRESHOLD).mean(axis=1)
    flag_per = flags.reshape(len(prompts), S)
    table["Flagged_fraction"] = flag_per.mean(axis=1)
    table["train_path"] = [train_set.paths[int(r)] for r in rows]
    table["train_patient_id"] = [train_set.patient_ids[int(r)] for r in rows]

    labels = np.repeat(train_set.labels[rows], S, axis=0) if train_set.has_labels else None
    summary = _summary(scores, flags, labels, cal, reid_note)
    summary.update(
        n_prompts=len(prompts), n_seeds=S, n_images=len(images),
        mean_pixel_distance=float(table["Mean_pixel_distance"].mean()),
        min_pixel_distance=float(table["Min_pixel_distance"].min()),
        mean_latent_distance=float(table["Mean_latent_distance"].mean()),
        min_latent_distance=float(table["Min_latent_distance"].min()),
        copy_score_mean=float(copy.mean()),
    )
    if scores is not None:
        summary["mean_of_prompt_max_reid"] = float(table["Max_reid_score"].mean())
    return {
        "kind": "privacy-protocol",
        "summary": summary,
        "per_prompt": _records(table),
        "calibration": cal,
        "settings": {"model": gen_name, "m_prompts": len(prompts), "seeds": seeds, "size": size,
                     "match": match, "candidates": n_cand, "prompt_seed": prompt_seed, "steps": steps, "guidance": guidance, "k": int(k),
                     "percentile": float(percentile), "reid": None if reid is None else str(reid),
                     "reid_threshold": REID_THRESHOLD, "train": _describe(train, index),
                     "pixel_distance": "RMSE of float [0,1] images at equal size",
                     "latent_distance": "RMSE of encoder features", "index": str(index.dir),
                     "seconds": round(time.perf_counter() - t0, 2)},
        "encoder": _encoder_meta(enc),
        "reid": _reid_info(reid_model, reid) if reid_model is not None else {"available": False, "note": reid_note},
    }


# --------------------------------------------------------------------------------------------------
# CLI


def format_summary(result: dict) -> str:
    """A few lines for the terminal."""
    s, cal = result["summary"], result["calibration"]

    def f(v) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.3f}"

    lines = [
        f"images: {s['n']}  flagged as memorised: {f(s['fraction_flagged'])} "
        f"(expected for new images: {f(s['expected_fraction_flagged'])})",
        f"threshold: {cal['match']} copy score {f(cal['threshold'])} = {cal['percentile']:g}th percentile of {cal['n']} held-out "
        f"images ({cal['source']})",
    ]
    if s["reid_available"]:
        lines.append(f"re-ID: mean {f(s['mean_reid'])}  max {f(s['max_reid'])}  "
                     f"re-identified (> {REID_THRESHOLD}) {f(s['fraction_reidentified'])}")
    else:
        lines.append(f"re-ID: not computed ({s.get('reid_note', 'no model')})")
    if "mean_pixel_distance" in s:
        lines.append(f"pixel distance: mean {f(s['mean_pixel_distance'])}  min {f(s['min_pixel_distance'])}; "
                     f"latent distance: mean {f(s['mean_latent_distance'])}  min {f(s['min_latent_distance'])}")
    return "\n".join(lines)


def _progress(done: int, total: int, desc: str) -> None:
    import sys

    if done == total:
        print(f"{desc}: {done}/{total}", file=sys.stderr, flush=True)


def _save(result: dict, out: str, *, model: str | None, synthetic: str | None, reference: str | None) -> int:
    from ..fidelity import write_json
    from ..store import ResultsStore

    write_json(result, out)
    return ResultsStore().save("privacy", result, model=model, synthetic=synthetic, reference=reference,
                               settings=result["settings"])


def _reid_arg(value: str | None):
    return None if value is None or value.lower() == "none" else value


def _cli_privacy(args) -> int:
    result = run_privacy(args.train, args.synthetic, encoder=args.encoder, reid=_reid_arg(args.reid), k=args.k,
                         percentile=args.percentile, heldout=args.heldout, match=args.match,
                         candidates=args.candidates, progress=_progress)
    run_id = _save(result, args.out, model=None, synthetic=args.synthetic, reference=args.train)
    print(format_summary(result))
    print(f"results: {args.out} (store run {run_id})")
    return 0


def _cli_protocol(args) -> int:
    result = run_privacy_protocol(args.model, args.train, m_prompts=args.prompts, seeds=range(args.seeds),
                                  encoder=args.encoder, reid=_reid_arg(args.reid), size=args.size, k=args.k,
                                  percentile=args.percentile, heldout=args.heldout, match=args.match,
                                  candidates=args.candidates, prompt_seed=args.prompt_seed,
                                  steps=args.steps, batch_size=args.batch_size, progress=_progress)
    run_id = _save(result, args.out, model=args.model, synthetic=None, reference=args.train)
    print(format_summary(result))
    print(f"results: {args.out} (store run {run_id})")
    return 0


def _positive(kind):
    import argparse

    def check(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return v

    return check


def _common(p) -> None:
    p.add_argument("--train", required=True,
                   help="training set (folder, CSV, PATH@SPLIT, 'demo@train') or a reference index folder")
    p.add_argument("--encoder", default=None, help="encoder for the memorisation search (default: best available)")
    p.add_argument("--reid", default="demo",
                   help="re-ID model: 'demo', 'chexgenbench', a weights file, or 'none' (default: demo)")
    p.add_argument("--k", type=_positive(int), default=5, help="training neighbours listed per image (default: 5)")
    p.add_argument("--percentile", type=_positive(float), default=DEFAULT_PERCENTILE,
                   help="calibration percentile of held-out patients' similarity (default: 99)")
    p.add_argument("--heldout", default=None,
                   help="held-out real set for calibration (default: the training set's valid/test splits, "
                        "else 10%% of its patients)")
    p.add_argument("--match", choices=MATCH_MODES, default="aligned",
                   help="copy score: 'aligned' verifies the encoder's candidates by shift/scale-tolerant pixel "
                        "correlation; 'cosine' uses the encoder similarity alone (default: aligned)")
    p.add_argument("--candidates", type=_positive(int), default=DEFAULT_CANDIDATES,
                   help=f"encoder candidates verified per image with --match aligned (default: {DEFAULT_CANDIDATES})")


def add_cli(subparsers) -> None:
    """``privacy`` (a synthetic set) and ``privacy-protocol`` (a generator, CheXGenBench's protocol)."""
    p = subparsers.add_parser(
        "privacy", help="memorisation search and patient re-identification of a synthetic set",
        description="Search every synthetic image against the whole training set, flag near-copies above a "
                    "threshold calibrated on held-out patients, and score re-identification against the "
                    "nearest training image. Writes JSON and saves the run to the results store.")
    p.add_argument("--synthetic", required=True, help="synthetic set (folder, CSV, PATH@SPLIT)")
    _common(p)
    p.add_argument("--out", required=True, help="JSON results file")
    p.set_defaults(func=_cli_privacy)

    q = subparsers.add_parser(
        "privacy-protocol", help="CheXGenBench's privacy protocol: M training prompts x S seeds of a generator",
        description="Generate S images for each of M training prompts; per prompt, re-ID scores and pixel / "
                    "latent distances against the prompt's real image; plus the whole-set memorisation search.")
    q.add_argument("--model", required=True, help="generator name (python -m evaluators models)")
    _common(q)
    q.add_argument("--prompts", type=_positive(int), default=20, help="M, training prompts (default: 20)")
    q.add_argument("--seeds", type=_positive(int), default=len(DEFAULT_SEEDS), help="S, seeds 0..S-1 (default: 3)")
    q.add_argument("--size", type=_positive(int), default=None, help="image side (default: the model's preset)")
    q.add_argument("--steps", type=_positive(int), default=None, help="sampling steps (default: preset)")
    q.add_argument("--batch-size", type=_positive(int), default=4)
    q.add_argument("--prompt-seed", type=int, default=0, help="seed that draws the prompts (default: 0)")
    q.add_argument("--out", required=True, help="JSON results file")
    q.set_defaults(func=_cli_protocol)
