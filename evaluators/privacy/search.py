"""The memorisation search: is a synthetic image a (near) copy of any training image?

One object, :class:`MemorisationSearch`, holds everything the check needs for one reference index: the
encoder that proposes candidates, the :class:`AlignedMatcher` that verifies them, and the threshold
calibrated on held-out patients (computed once, then cached as JSON next to the index). The CLI
(``privacy``, ``privacy-protocol``) and the app's Generate and Batch tabs all ask it, so a verdict in
the browser is the verdict in ``privacy.json``.

Held-out patients come from, in order: ``heldout=`` when given; the training set's sibling splits
(valid/test rows of the same folder or CSV, e.g. ``DIR@train`` -> ``DIR``'s valid and test rows),
minus any image of a training patient; else a patient-disjoint hold-out of the training set itself
(10% of its patients, at least 1 image each side), searched against the remaining patients only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import jobs
from ..errors import InputError
from .memorisation import DEFAULT_PERCENTILE, calibration, nearest_train

HOLDOUT_FRACTION = 0.1
"""Share of training patients held out for calibration when no sibling split exists."""
CALIBRATION_VERSION = 1
"""Bump when the matcher or the calibration recipe changes: cached thresholds are then recomputed."""


def image_array(item) -> np.ndarray:
    """An image given as an array or a path, as an array (a path is read and checked by ``read_image``)."""
    if isinstance(item, np.ndarray):
        return item
    from ..imageio import read_image

    return read_image(item)


def load_set(spec, what: str):
    """An ImageSet as given, or loaded from a spec; ``what`` names the role in the error for a missing one."""
    from ..imagesets import ImageSet, load_image_set

    if isinstance(spec, ImageSet):
        return spec
    if spec is None:
        raise InputError(f"No {what} set given; pass a folder, a CSV, PATH@SPLIT or 'demo'.")
    return load_image_set(spec)


def patient_ids(table) -> list[str] | None:
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

        return resize_to(as_gray01(image_array(img)), self.SIDE)

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


def copy_scores(items: Sequence, sims: np.ndarray, rows: np.ndarray, match: str, matcher) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """Each query's memorisation score and matched training row, from its encoder candidates."""
    if match == "cosine":
        return sims[:, 0].astype(np.float64), rows[:, 0].astype(np.int64)
    out = []
    for done, (it, r) in enumerate(zip(items, rows)):
        jobs.tick(done, len(items), "memorisation search: pixel re-check")
        out.append(matcher.best(it, r.tolist()))
    return np.array([o[0] for o in out], dtype=np.float64), np.array([o[1] for o in out], dtype=np.int64)


def find_heldout(index, train_set=None, spec: str | None = None, heldout=None):
    """(held-out ImageSet or None, where it came from): ``heldout``, else the training source's sibling splits."""
    if heldout is not None:
        return load_set(heldout, "held-out"), "given held-out set"
    train_paths = set(index.meta["path"].astype(str))
    held = _sibling_heldout(spec, train_set, train_paths)
    if held is None and train_set is None:
        root = index.info.get("reference", {}).get("root") or ""
        if root:
            from ..imagesets import ImageSet

            stub = ImageSet(index.meta.iloc[:0].copy(), root=Path(root))
            held = _sibling_heldout(None, stub, train_paths)
    return held, "sibling splits of the training set"


def calibrate(index, held, source: str, enc, percentile: float, match: str, matcher, n_cand: int) -> dict:
    """The memorisation threshold from held-out patients (see the module docstring)."""
    from ..features import extract_features

    train_pids = patient_ids(index.meta)
    notes: list[str] = []
    base = {"percentile": percentile, "match": match}
    if held is not None and len(held) > 0:
        feats = extract_features(list(held.paths), enc, show_progress=False)
        held_pids = patient_ids(held.table.iloc[feats.index])
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
        scores, _ = copy_scores(paths, sims, rows, match, matcher)
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
    scores, _ = copy_scores(paths, sims, others[idx], match, matcher)
    cal = calibration(scores, percentile)
    return {**base, "threshold": cal.threshold, "n": cal.n_used,
            "source": f"patient-disjoint hold-out of the training set ({n_hold} of {len(uniq)} patients, "
                      "searched against the other patients)",
            "heldout_set": None, "n_dropped_same_patient": 0, "notes": notes + cal.notes}


def _files_key(paths: Sequence[str]) -> str:
    h = hashlib.sha256()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


@dataclass
class SearchResult:
    """Per synthetic image: its k nearest training images by encoder similarity, and the copy check."""

    neighbours: list  # list of lists of evaluators.index.Neighbour
    copy_score: np.ndarray  # [N] aligned-match (or cosine) score against the best candidate
    match_row: np.ndarray  # [N] training row of that best candidate (-1: none)
    flagged: np.ndarray  # [N] copy_score > threshold
    threshold: float

    @property
    def top1(self) -> np.ndarray:
        from ..index import top1_similarity

        return top1_similarity(self.neighbours)


class MemorisationSearch:
    """The memorisation check against one reference index (see the module docstring).

    ``match="aligned"`` (default): the ``candidates`` nearest training images by encoder cosine are
    verified by :class:`AlignedMatcher`, whose best score is the copy score; ``"cosine"``: the copy
    score is the top-1 encoder cosine. Either way the threshold is calibrated on the same score, from
    held-out patients, once per (index, held-out images, settings), and cached in the index folder.
    """

    def __init__(self, index, encoder, *, train_set=None, spec: str | None = None, heldout=None,
                 percentile: float = DEFAULT_PERCENTILE, match: str = "aligned",
                 candidates: int = DEFAULT_CANDIDATES, k: int = 5, cache: bool = True):
        if match not in MATCH_MODES:
            raise InputError(f"match must be one of {', '.join(MATCH_MODES)} (got {match!r}).")
        self.index, self.encoder = index, encoder
        self.train_set, self.spec, self.heldout = train_set, spec, heldout
        self.percentile, self.match, self.k, self.cache = float(percentile), match, int(k), cache
        self.n_cand = min(len(index), max(int(k), int(candidates)))
        self.train_paths = index.meta["path"].astype(str).to_numpy()
        self.matcher = AlignedMatcher(self.train_paths)
        self._calibration: dict | None = None

    @property
    def calibration(self) -> dict:
        """The calibrated threshold and what it was computed from (``threshold``, ``n``, ``source``...)."""
        if self._calibration is None:
            held, source = find_heldout(self.index, self.train_set, self.spec, self.heldout)
            path = self._cache_path(held)
            if path is not None and path.is_file():
                try:
                    self._calibration = json.loads(path.read_text())
                    return self._calibration
                except (OSError, ValueError):  # a damaged cache file is recomputed
                    pass
            cal = calibrate(self.index, held, source, self.encoder, self.percentile, self.match, self.matcher,
                            self.n_cand)
            cal["candidates"] = self.n_cand
            self._calibration = cal
            if path is not None:
                with contextlib.suppress(OSError):  # a read-only index folder: recompute next time
                    path.write_text(json.dumps(cal, indent=2))
        return self._calibration

    def _cache_path(self, held) -> Path | None:
        if not self.cache:
            return None
        key = json.dumps([CALIBRATION_VERSION, self.percentile, self.match, self.n_cand, self.encoder.cache_key(),
                          len(self.index), _files_key(list(held.paths)) if held is not None else None])
        return Path(self.index.dir) / f"calibration-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"

    @property
    def threshold(self) -> float:
        return float(self.calibration["threshold"])

    def check(self, items: Sequence, features: np.ndarray, k: int | None = None) -> SearchResult:
        """Neighbours, copy scores, matched rows and flags of images ``items`` with encoder ``features``."""
        k = self.k if k is None else int(k)
        thr = self.threshold
        sims, rows = self.index.search(features, max(k, self.n_cand))
        neighbours = self.index.neighbours_from(sims[:, :k], rows[:, :k])
        scores, best = copy_scores(items, sims, rows, self.match, self.matcher)
        return SearchResult(neighbours, scores, best, scores > thr, thr)
