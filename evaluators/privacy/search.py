"""The memorisation search: is a synthetic image a (near) copy of any training image?

One object, :class:`MemorisationSearch`, holds everything the check needs for one reference index: the
encoder that proposes candidates (with the registered matcher, also the ``pixel_candidates`` training
images nearest by the matcher's pixel key, :func:`.matcher.thumbnail`: an encoder not trained for copy
detection can miss a rotated, rescaled, re-contrasted copy among its nearest), the copy matcher that re-ranks them (:class:`.matcher.CopyMatcher`
by default: registered, contrast-invariant, multi-scale; the older shift/crop :class:`AlignedMatcher`
and the bare encoder cosine stay selectable), and the threshold calibrated on images of patients
the index does not hold (computed once, then cached as JSON next to the index). The CLI (``privacy``,
``privacy-protocol``) and the app's Generate and Batch tabs all ask it, so a verdict in the browser is
the verdict in ``privacy.json``.

Calibration (:func:`calibrate`): by default leave-one-out over the index itself: every training image
(up to ``max_queries`` of them, drawn at random) is a query against the *other* training images,
with the very search and matcher that judge synthetic images. A query's own patient is excluded from
its candidates when the training set has patient ids; without ids, its *near-duplicate studies* are
excluded instead. Without ids "near-duplicate study" can only mean "as close as a copy": a training
image whose copy score against the query reaches the near-duplicate level (the same radiograph
exported twice, or a follow-up of the same patient so alike that no matcher tells it from a copy).
That level is ``DUPLICATE_SCORE`` (0.75; new patients' images of the NIH sample reach 0.64-0.69) or,
when higher, the conformal quantile of every query's *second-best* score: a query's second-best
candidate is mostly another patient even when its best is its own patient's other study, so pairs of
strangers on data whose images all look alike (e.g. the demo phantoms) are not excluded, which would
pull the threshold below new patients' scores. Other studies of the same patient that score lower
stay in and make the threshold more conservative (fewer flags, lower recall); this is said in the calibration's
notes. ``heldout=`` gives a set of other patients to calibrate on instead.

The threshold is the finite-sample (conformal) quantile of the calibration scores at the level
``1 - percentile/100``, and every synthetic image gets its empirical p-value. A level the number of
calibration images cannot support is refused with the level it can.
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

from .. import jobs, settings
from ..errors import InputError
from ..filehashes import files_key, hash_files  # noqa: F401 - hash_files: re-exported for callers
from ..imageio import image_array
from ..index import patient_ids
from .memorisation import (
    DEFAULT_PERCENTILE,
    conformal_threshold,
    p_values,
    realised_rate_bound,
    smallest_level,
)

HOLDOUT_FRACTION = 0.1
"""Share of training patients held out for calibration when no sibling split exists (no longer the default)."""
CALIBRATION_VERSION = 5
"""Bump when the matcher or the calibration recipe changes: cached thresholds are then recomputed.
2: leave-one-out over the index, conformal quantile, p-values, the registered matcher.
3: pixel-key candidates join the encoder's (the nearest 2 always registered).
4: the matcher's cascade registers the quick score's best 8 (was 4).
5: the quick score also tries the query turned by 2 degrees and zoomed out by 5% (matcher.QUICK_VARIANTS)."""
DEFAULT_CALIBRATION_QUERIES = 1000
"""Leave-one-out queries at most (drawn at random when the index is larger); 0 or None: every image."""
DEFAULT_PIXEL_CANDIDATES = 10
"""Training images nearest by the matcher's pixel key added to the encoder's candidates (registered match only)."""
PIXEL_LEAD = 2
"""The pixel key's nearest this many are always fully registered by the copy matcher, as the encoder's nearest
``CopyMatcher.KEEP_ENCODER`` are (the cascade's quick score, a shift only, can rank a rotated and rescaled copy's
source below its best 8)."""
PIXEL_KEYS_VERSION = 1
DUPLICATE_SCORE = 0.75
"""Without patient ids, a training image scoring at least this against a calibration query is taken as a
near-duplicate study of it and left out of its candidates (see the module docstring)."""
NO_IDS_NOTE = ("The training set has no patient ids: leave-one-out calibration cannot leave out a query's other "
               "studies of the same patient; near-duplicate studies (copy score >= {dup:.3f}) were excluded, "
               "others stay in and make the threshold conservative (fewer flags, lower recall: near copies "
               "blurred by noise were missed 10-30% of the time on real X-rays). To calibrate exactly, add a "
               "patient_id column, or give --heldout a folder of other patients' images (no ids needed).")


def load_set(spec, what: str):
    """An ImageSet as given, or loaded from a spec; ``what`` names the role in the error for a missing one."""
    from ..imagesets import ImageSet, load_image_set

    if isinstance(spec, ImageSet):
        return spec
    if spec is None:
        raise InputError(f"No {what} set given; pass a folder, a CSV, PATH@SPLIT or 'demo'.")
    return load_image_set(spec)


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


MATCH_MODES = ("registered", "aligned", "cosine")
DEFAULT_MATCH = "registered"
DEFAULT_CANDIDATES = 50


def make_matcher(match: str, train_paths: Sequence, *, pixel_lead: int = 0):
    """The copy matcher of a match mode (None for ``cosine``, which needs none); ``pixel_lead``: rows after the
    encoder's first ``KEEP_ENCODER`` that the registered matcher always refines (see :func:`merge_candidates`)."""
    if match == "registered":
        from .matcher import CopyMatcher

        return CopyMatcher(train_paths, keep_encoder=CopyMatcher.KEEP_ENCODER + int(pixel_lead))
    if match == "aligned":
        return AlignedMatcher(train_paths)
    return None


def _map(fn, items: Sequence, workers: int, desc: str | None = None) -> list:
    """``[fn(x) for x in items]``, on ``workers`` threads when more than 1 (OpenCV and numpy release the GIL).

    With ``desc``, progress and the job's stop check (:func:`evaluators.jobs.tick`) run in the calling thread
    between items; a stop cancels the items not yet started."""
    n = len(items)
    if workers <= 1 or n < 2:
        out = []
        for done, x in enumerate(items):
            if desc:
                jobs.tick(done, n, desc)
            out.append(fn(x))
        return out
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        futures = [pool.submit(fn, x) for x in items]
        out = []
        for done, fut in enumerate(futures):
            if desc:
                jobs.tick(done, n, desc)
            out.append(fut.result())
        return out
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def default_workers() -> int:
    """Threads for the copy matcher: ``CHEXGEN_MATCH_WORKERS`` when set, else the CPUs this process may use."""
    env = settings.get("CHEXGEN_MATCH_WORKERS")
    if env is not None:
        return env
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def copy_scores(items: Sequence, sims: np.ndarray, rows: np.ndarray, match: str, matcher, *,
                workers: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Each query's memorisation score and matched training row, from its encoder candidates."""
    if match == "cosine":
        return sims[:, 0].astype(np.float64), rows[:, 0].astype(np.int64)
    out = _map(lambda pair: matcher.best(pair[0], pair[1].tolist()), list(zip(items, rows)), workers,
               "memorisation search: pixel re-check")
    return np.array([o[0] for o in out], dtype=np.float64), np.array([o[1] for o in out], dtype=np.int64)


def pixel_nearest(keys: np.ndarray, query_keys: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Rows [Q, k] of the training pixel keys most similar (cosine) to each query key, best first."""
    keys = np.asarray(keys, dtype=np.float32)
    q = np.atleast_2d(np.asarray(query_keys, dtype=np.float32))
    k = max(0, min(int(k), len(keys)))
    out = np.full((len(q), k), -1, dtype=np.int64)
    if k == 0:
        return out
    for s in range(0, len(q), chunk):
        sim = q[s : s + chunk] @ keys.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < len(keys) else np.tile(np.arange(k), (len(sim), 1))
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        out[s : s + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def merge_candidates(enc_rows: np.ndarray, pix_rows: np.ndarray | None, n_pix: int, *, keep: int = 0,
                     lead: int = 0) -> np.ndarray:
    """Each query's encoder candidate rows and up to ``n_pix`` of its pixel-key rows, each row once, padded with -1
    (which the matchers skip). Order: the encoder's first ``keep``, the pixel key's first ``lead``, the other
    encoder rows, the other pixel rows, so the matcher's always-refined first rows (``keep_encoder = keep +
    lead``) hold both searches' nearest."""
    enc_rows = np.asarray(enc_rows, dtype=np.int64)
    if pix_rows is None or n_pix <= 0:
        return enc_rows
    out = np.full((len(enc_rows), enc_rows.shape[1] + int(n_pix)), -1, dtype=np.int64)
    for i, (er, pr) in enumerate(zip(enc_rows, pix_rows)):
        er = [int(r) for r in er if r >= 0]
        pr = [int(r) for r in pr if r >= 0][: int(n_pix)]
        order = er[:keep] + pr[:lead] + er[keep:] + pr[lead:]
        row = list(dict.fromkeys(order))
        out[i, : len(row)] = row
    return out


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


def n_loo_queries(n_train: int, max_queries: int | None) -> int:
    """How many leave-one-out calibration queries an index of ``n_train`` images gets."""
    return int(n_train) if not max_queries or n_train <= int(max_queries) else int(max_queries)


def loo_scores(index, match: str, matcher, n_cand: int, *, max_queries: int | None = DEFAULT_CALIBRATION_QUERIES,
               duplicate_score: float = DUPLICATE_SCORE, level: float = 0.01, seed: int = 0,
               workers: int = 1, pixel_keys: np.ndarray | None = None, n_pix: int = 0, pixel_lead: int = 0) -> dict:
    """Leave-one-out copy scores over the index (see the module docstring).

    With ``pixel_keys`` (one per training row) each query's candidates also hold its ``n_pix`` nearest other
    training images by pixel key, merged as :meth:`MemorisationSearch.candidates` merges them for synthetic images.

    Returns ``scores`` (one per query), ``rows`` (the query rows), ``patient_ids_used``, and without ids
    ``duplicate_level`` (the near-duplicate level used) and ``n_near_duplicates`` (candidates excluded).
    """
    x = np.asarray(index.features, dtype=np.float32)
    n = len(x)
    if n < 2:
        raise InputError("Calibration needs at least 2 training images (or a held-out set: --heldout).")
    pids = patient_ids(index.meta)
    rng = np.random.default_rng(seed)
    m = n_loo_queries(n, max_queries)
    q_rows = np.arange(n) if m == n else np.sort(rng.choice(n, size=m, replace=False))
    group = np.zeros(n, dtype=np.int64)
    extra = 1
    if pids is not None:
        _, group, counts = np.unique(np.asarray(pids), return_inverse=True, return_counts=True)
        extra = int(counts.max())
        if len(counts) < 2:
            raise InputError("Leave-one-out calibration needs at least 2 training patients (or --heldout).")
    sims, rows = index.search(x[q_rows], min(n, n_cand + extra))
    use_pix = pixel_keys is not None and n_pix > 0 and match != "cosine"
    keep_first = max(0, getattr(matcher, "keep_encoder", 0) - int(pixel_lead))
    prows = pixel_nearest(pixel_keys, np.asarray(pixel_keys)[q_rows], min(n, n_pix + extra)) if use_pix else None

    def keep(q: int, rr: np.ndarray) -> np.ndarray:
        ok = (rr >= 0) & (rr != q)
        if pids is not None:
            ok &= group[np.clip(rr, 0, None)] != group[q]
        return ok

    cands = []
    for i, (q, srow, rrow) in enumerate(zip(q_rows, sims, rows)):
        ok = keep(q, rrow)
        srow, rrow = srow[ok][:n_cand], rrow[ok][:n_cand]
        if prows is not None:
            pr = prows[i][keep(q, prows[i])]
            rrow = merge_candidates(rrow[None], pr[None], n_pix, keep=keep_first, lead=pixel_lead)[0]
            rrow = rrow[rrow >= 0]
            srow = np.concatenate([srow, np.full(len(rrow) - len(srow), -1.0, dtype=srow.dtype)])
        cands.append((srow, rrow))
    paths = index.meta["path"].astype(str).to_numpy()

    def item_of(q: int):
        return matcher.prepare_query(paths[q]) if hasattr(matcher, "prepare_query") else paths[q]

    def top2(job) -> tuple[float, int, float]:
        """(best score, its row, second-best score) of a query among its candidates."""
        q, (srow, rrow) = job
        if len(rrow) == 0:
            return -1.0, -1, -1.0
        if match == "cosine":
            keep = srow < 0.9999 if pids is None else np.ones(len(srow), bool)  # exact duplicates only
            kept = srow[keep]
            return (float(kept[0]) if kept.size else -1.0), -1, (float(kept[1]) if kept.size > 1 else -1.0)
        item, cand = item_of(q), [int(r) for r in rrow]
        if pids is not None:
            score, row = matcher.best(item, cand)
            return score, row, -1.0
        if hasattr(matcher, "scores"):
            sc = matcher.scores(item, cand)
            o = np.argsort(-sc)
            return float(sc[o[0]]), cand[o[0]], (float(sc[o[1]]) if len(o) > 1 else -1.0)
        score, row = matcher.best(item, cand)
        rest = [r for r in cand if r != row]
        return score, row, (matcher.best(item, rest)[0] if rest else -1.0)

    work = list(zip(q_rows.tolist(), cands))
    first = _map(top2, work, workers, "memorisation calibration: leave-one-out")
    s1 = np.array([f[0] for f in first], dtype=np.float64)
    if pids is not None or match == "cosine":
        return {"scores": s1, "rows": q_rows, "patient_ids_used": pids is not None, "duplicate_level": None,
                "n_near_duplicates": 0}
    # No ids: a query's best candidate may be another study of its own patient. Its second best mostly is not,
    # so the level at which a pair counts as a near-duplicate study is never below the calibration quantile of
    # the second-best scores (nor below duplicate_score).
    s2 = np.array([f[2] for f in first], dtype=np.float64)
    dup = max(float(duplicate_score), conformal_threshold(s2, level) if len(s2) else -1.0)

    def again(k: int) -> tuple[float, int]:
        q, (_, rrow) = work[k]
        cand, dropped = [int(r) for r in rrow if int(r) != first[k][1]], 1
        item = item_of(q)
        while cand:
            score, row = matcher.best(item, cand)
            if score < dup:
                return score, dropped
            cand.remove(row)  # another near-duplicate study of the query: look past it
            dropped += 1
        return -1.0, dropped

    redo = [k for k in range(len(work)) if s1[k] >= dup]
    n_dup = 0
    for k, (score, dropped) in zip(redo, _map(again, redo, workers)):
        s1[k] = score
        n_dup += dropped
    return {"scores": s1, "rows": q_rows, "patient_ids_used": False, "duplicate_level": dup,
            "n_near_duplicates": n_dup}


def calibrate(index, held, source: str, enc, percentile: float, match: str, matcher, n_cand: int, *,
              max_queries: int | None = DEFAULT_CALIBRATION_QUERIES, workers: int = 1,
              duplicate_score: float = DUPLICATE_SCORE, candidates_of=None, pixel_keys=None, n_pix: int = 0,
              pixel_lead: int = 0) -> dict:
    """The memorisation threshold and the scores behind it (see the module docstring).

    ``held``: an ImageSet of other patients to calibrate on (``source`` says where it came from), or
    None for leave-one-out over the index. ``candidates_of(items, sims, rows)`` -> (items, rows): how the search
    adds its pixel-key candidates to held-out images (:meth:`MemorisationSearch.candidates`); ``pixel_keys`` and
    ``n_pix`` (``pixel_lead`` of them refined always) do the same for leave-one-out.
    """
    import time

    from ..features import extract_features

    t0 = time.perf_counter()
    level = round(1 - float(percentile) / 100, 12)
    train_pids = patient_ids(index.meta)
    notes: list[str] = []
    base = {"percentile": float(percentile), "level": level, "match": match}
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
        _check_level(int(keep.sum()), level)
        sims, rows = index.search(feats.features[keep], n_cand)
        paths = [held.paths[int(i)] for i in feats.index[keep]]
        if candidates_of is not None:
            paths, rows = candidates_of(paths, sims, rows)
        scores, _ = copy_scores(paths, sims, rows, match, matcher, workers=workers)
        ids_used = held_pids is not None and train_pids is not None
        if not ids_used:
            notes.append("Patient ids are missing: the held-out images are assumed to be of other patients.")
        dropped = int((~keep).sum())
        if dropped:
            notes.append(f"{dropped} held-out image(s) belong to training patients and were left out of calibration.")
        extra = {"source": source, "heldout_set": held.name, "n_dropped_same_patient": dropped,
                 "patient_ids_used": ids_used, "n_near_duplicates_excluded": 0}
    else:
        m = n_loo_queries(len(index), max_queries)
        _check_level(m, level)
        loo = loo_scores(index, match, matcher, n_cand, max_queries=max_queries, workers=workers,
                         duplicate_score=duplicate_score, level=level, pixel_keys=pixel_keys, n_pix=n_pix,
                         pixel_lead=pixel_lead)
        if loo["duplicate_level"] is not None:
            duplicate_score = loo["duplicate_level"]
        scores = loo["scores"]
        if not loo["patient_ids_used"]:
            notes.append(NO_IDS_NOTE.format(dup=duplicate_score))
            if loo["n_near_duplicates"]:
                notes.append(f"{loo['n_near_duplicates']} candidate(s) scoring >= {duplicate_score:.3f} against their "
                             "query were excluded as near-duplicate studies.")
        capped = f", {m} drawn at random (max_queries={max_queries})" if m < len(index) else ""
        extra = {"source": f"leave-one-out over the training index: each of {m} training images{capped} searched "
                           "against the others" + (", its own patient excluded" if loo["patient_ids_used"] else ""),
                 "heldout_set": None, "n_dropped_same_patient": 0, "patient_ids_used": loo["patient_ids_used"],
                 "n_near_duplicates_excluded": loo["n_near_duplicates"]}
    n = int(scores.size)
    thr = conformal_threshold(scores, level)
    if not extra["patient_ids_used"] and held is None and thr >= duplicate_score - 0.02:
        notes.append(f"The threshold ({thr:.3f}) sits at the near-duplicate level ({duplicate_score:.3f}): many training "
                     "images have look-alike studies, so the level, not the data, set it. Patient ids would make it exact.")
    bound = realised_rate_bound(n, level)
    if np.isfinite(bound) and bound > 2 * level:
        notes.append(f"With {n} calibration images the rate at which new patients are flagged varies from run to "
                     f"run: up to {bound:.3f} (90% bound) for a nominal {level:g}; more calibration images narrow it.")
    return {**base, "threshold": thr, "n": n, "n_queries": n, "smallest_level": smallest_level(n),
            "max_queries": max_queries, "n_train": len(index), "rate_bound_90": bound, **extra,
            "duplicate_score": None if extra["patient_ids_used"] else duplicate_score, "notes": notes,
            "seconds": round(time.perf_counter() - t0, 2), "scores": np.sort(scores).tolist()}


def _check_level(n: int, level: float) -> None:
    """Refuse a level ``n`` calibration images cannot support, before any work."""
    if level < smallest_level(n) - 1e-12:
        conformal_threshold(np.zeros(max(n, 1)), level)  # raises with the supported level


@dataclass
class SearchResult:
    """Per synthetic image: its k nearest training images by encoder similarity, and the copy check."""

    neighbours: list  # list of lists of evaluators.index.Neighbour
    copy_score: np.ndarray  # [N] aligned-match (or cosine) score against the best candidate
    match_row: np.ndarray  # [N] training row of that best candidate (-1: none)
    flagged: np.ndarray  # [N] copy_score > threshold (equivalently p_values <= level)
    threshold: float
    p_values: np.ndarray | None = None  # [N] empirical p-value of copy_score among the calibration scores

    @property
    def top1(self) -> np.ndarray:
        from ..index import top1_similarity

        return top1_similarity(self.neighbours)


class MemorisationSearch:
    """The memorisation check against one reference index (see the module docstring).

    ``match="registered"`` (default): the ``candidates`` nearest training images by encoder cosine are
    re-ranked by :class:`.matcher.CopyMatcher`, whose best score is the copy score; ``"aligned"``: the
    older shift/crop :class:`AlignedMatcher`; ``"cosine"``: the copy score is the top-1 encoder cosine.
    Either way the threshold is calibrated on the same score (leave-one-out over the index, or
    ``heldout``), once per (index, held-out images, settings), and cached in the index folder.
    ``max_queries`` caps the leave-one-out queries (None: every training image); ``workers`` threads
    run the matcher (default: :func:`default_workers`). With the registered matcher, ``pixel_candidates``
    training images nearest by pixel key (:func:`.matcher.thumbnail`, computed once per training set and cached
    in the index folder) join each image's encoder candidates, in calibration as in the check.
    """

    def __init__(self, index, encoder, *, train_set=None, spec: str | None = None, heldout=None,
                 percentile: float = DEFAULT_PERCENTILE, match: str = DEFAULT_MATCH,
                 candidates: int = DEFAULT_CANDIDATES, k: int = 5, cache: bool = True,
                 max_queries: int | None = DEFAULT_CALIBRATION_QUERIES, workers: int | None = None,
                 duplicate_score: float = DUPLICATE_SCORE, pixel_candidates: int = DEFAULT_PIXEL_CANDIDATES):
        if match not in MATCH_MODES:
            raise InputError(f"match must be one of {', '.join(MATCH_MODES)} (got {match!r}).")
        self.index, self.encoder = index, encoder
        self.train_set, self.spec, self.heldout = train_set, spec, heldout
        self.percentile, self.match, self.k, self.cache = float(percentile), match, int(k), cache
        self.n_cand = min(len(index), max(int(k), int(candidates)))
        self.train_paths = index.meta["path"].astype(str).to_numpy()
        self.n_pix = max(0, int(pixel_candidates)) if match == "registered" else 0
        self.pixel_lead = min(PIXEL_LEAD, self.n_pix)
        self.matcher = make_matcher(match, self.train_paths, pixel_lead=self.pixel_lead)
        self.max_queries = None if not max_queries else int(max_queries)
        self.workers = default_workers() if workers is None else max(1, int(workers))
        self.duplicate_score = float(duplicate_score)
        self._calibration: dict | None = None
        self._pixel_keys: np.ndarray | None = None

    @property
    def pixel_keys(self) -> np.ndarray:
        """The pixel key (:func:`.matcher.thumbnail`) of every training row, computed once (cached in the index
        folder unless ``cache=False``)."""
        if self._pixel_keys is None:
            from .matcher import THUMB, thumbnail

            path = None
            if self.cache:
                key = json.dumps([PIXEL_KEYS_VERSION, THUMB, files_key(list(self.train_paths))])
                path = Path(self.index.dir) / f"pixel-keys-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
                if path.is_file():
                    with contextlib.suppress(OSError, ValueError):
                        keys = np.load(path)
                        if keys.shape == (len(self.train_paths), THUMB * THUMB):
                            self._pixel_keys = keys
                            return keys
            keys = _map(lambda p: thumbnail(self.matcher.prepare_query(p)[0]), list(self.train_paths), self.workers,
                        "memorisation search: pixel keys of the training images")
            self._pixel_keys = np.stack(keys).astype(np.float32) if keys else np.zeros((0, THUMB * THUMB), np.float32)
            if path is not None:
                with contextlib.suppress(OSError):
                    np.save(path, self._pixel_keys)
        return self._pixel_keys

    def candidates(self, items: Sequence, sims: np.ndarray, rows: np.ndarray) -> tuple[list, np.ndarray]:
        """(items, candidate rows) for the matcher: with pixel candidates, each item prepared once and its
        ``n_pix`` nearest training rows by pixel key appended to its encoder rows; else as given."""
        if not self.n_pix or not len(self.train_paths):
            return list(items), rows
        from .matcher import thumbnail

        prepped = _map(self.matcher.prepare_query, list(items), self.workers)
        if not prepped:
            return prepped, rows
        keys = np.stack([thumbnail(p[0]) for p in prepped])
        keep = max(0, getattr(self.matcher, "keep_encoder", 0) - self.pixel_lead)
        return prepped, merge_candidates(rows, pixel_nearest(self.pixel_keys, keys, self.n_pix), self.n_pix, keep=keep,
                                         lead=self.pixel_lead)

    @property
    def calibration(self) -> dict:
        """The calibrated threshold and what it was computed from (``threshold``, ``n``, ``source``...)."""
        if self._calibration is None:
            held = load_set(self.heldout, "held-out") if self.heldout is not None else None
            source = "given held-out set"
            path = self._cache_path(held)
            if path is not None and path.is_file():
                try:
                    self._calibration = json.loads(path.read_text())
                    return self._calibration
                except (OSError, ValueError):  # a damaged cache file is recomputed
                    pass
            cal = calibrate(self.index, held, source, self.encoder, self.percentile, self.match, self.matcher,
                            self.n_cand, max_queries=self.max_queries, workers=self.workers,
                            duplicate_score=self.duplicate_score, candidates_of=self.candidates,
                            pixel_keys=self.pixel_keys if self.n_pix else None, n_pix=self.n_pix,
                            pixel_lead=self.pixel_lead)
            cal["candidates"] = self.n_cand
            cal["pixel_candidates"] = self.n_pix
            self._calibration = cal
            if path is not None:
                with contextlib.suppress(OSError):  # a read-only index folder: recompute next time
                    path.write_text(json.dumps(cal, indent=2))
        return self._calibration

    def _cache_path(self, held) -> Path | None:
        if not self.cache:
            return None
        key = json.dumps([CALIBRATION_VERSION, self.percentile, self.match, self.n_cand, self.encoder.cache_key(),
                          len(self.index), files_key(list(held.paths)) if held is not None else None,
                          self.max_queries, self.duplicate_score, str(self.index.dir), self.n_pix, self.pixel_lead])
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
        items, cand = self.candidates(items, sims, rows)
        scores, best = copy_scores(items, sims, cand, self.match, self.matcher, workers=self.workers)
        pv = p_values(self.calibration["scores"], scores)
        return SearchResult(neighbours, scores, best, scores > thr, thr, pv)
