"""The memorisation check on planted near copies: recall per kind, false flags, and the matcher's cost per pair.

For each data set, the patients are split in two halves (``--seeds`` draws the split; a second seed is a
held-out check that nothing was tuned to one split): the first half is the training set, less one study of
each patient who has several (those studies are "other studies of training patients"); the second half
supplies "new patients". Near copies of training images are planted for every kind of
``evaluators.privacy.perturb.KINDS``. The search is the engine's own (:class:`MemorisationSearch`: encoder
top-k candidates re-ranked by the copy matcher, threshold from leave-one-out calibration over the
training index), calibrated per ``--modes``: ``ids`` with the patient ids, ``no-ids`` with them removed (as for a
folder of training images without ids; nothing derived from the file names), ``derived`` removed and then taken
from the file names (:mod:`evaluators.patient_ids`, as the loader does for a set without ids: NIH names on the
NIH sample; the demo world's names follow no layout, so there it equals ``no-ids``), ``no-ids+heldout`` removed and
calibrated on a held-out set of other patients (``--heldout``: half of the new patients; false flags are then
measured on the other half only, and the rate's spread over 2,000 re-splits of the new patients is printed).
Printed: recall per kind, the false-flag rate of new patients' images
against the nominal level (with the calibration size), the rate for other studies of training patients,
where the missed copies went (search misses: the best candidate is not the copy's source, e.g. the source
was not among the candidates; threshold misses: the source matched but scored at or below the threshold),
and the matcher's cost per (synthetic, candidate) pair at 64/128/256 px on one thread.

    python benchmarks/privacy_matcher.py [--encoder demo] [--copies-per-kind 20] [--seeds 0 1] [--skip-demo]
        [--skip-nih] [--demo-patients 600] [--percentile 99] [--workers 1] [--pixel-candidates 10]
        [--modes ids no-ids derived no-ids+heldout] [--skip-costs]

Data: the shared NIH ChestX-ray14 sample (64 px, real) and the demo world at 128 px (600 patients).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import REPO, chexgen_home, markdown_table, print_header

NIH = REPO.parent / "shared" / "data" / "nih-cxr14-sample"


def split_world(full, seed: int):
    """(train ImageSet, other-study rows of training patients, new-patient rows) of a set with patient ids."""
    pids = np.asarray(full.patient_ids)
    rng = np.random.default_rng(seed)
    uniq = np.unique(pids)
    rng.shuffle(uniq)
    in_a = np.isin(pids, uniq[: len(uniq) // 2])
    train, same = [], []
    for p in uniq[: len(uniq) // 2]:
        rows = np.flatnonzero(pids == p)
        rng.shuffle(rows)
        if len(rows) > 1:
            same.append(int(rows[0]))
            rows = rows[1:]
        train += rows.tolist()
    train = np.sort(np.asarray(train))
    return full.subset(train, name=f"{full.name}@train{seed}"), np.asarray(same), np.flatnonzero(~in_a)


MODES = ("ids", "no-ids", "derived", "no-ids+heldout")


def searches(train, enc, work: Path, workers: int, percentile: float, pixel_candidates: int | None = None,
             modes: tuple[str, ...] = MODES[:2], heldout=None):
    """MemorisationSearch objects on the same training images: with patient ids, with them blanked, and blanked
    then derived from the file names (see the module docstring)."""
    from evaluators.imagesets import with_derived_patient_ids
    from evaluators.index import build_index
    from evaluators.privacy.search import MemorisationSearch

    out = {}
    for mode in modes:
        s = train if mode == "ids" else train.subset(np.arange(len(train)), name=f"{train.name} ({mode})")
        if mode != "ids":
            s.table["patient_id"] = None
            s.table["study_id"] = None
            s.patient_ids_source = "none"
        if mode == "derived":
            s = with_derived_patient_ids(s)
            print(f"{train.name}, derived: patient ids {s.describe()['patient_ids_source']} "
                  f"({s.describe()['n_patients']} patients)", flush=True)
        index = build_index(s, enc, work / f"{train.name}-{mode.replace(' ', '')}", umap=False, show_progress=False)
        t0 = time.perf_counter()
        extra = {} if pixel_candidates is None else {"pixel_candidates": pixel_candidates}
        if mode == "no-ids+heldout":
            extra["heldout"] = heldout  # other patients' images: calibration without ids, exact by construction
        search = MemorisationSearch(index, enc, cache=False, workers=workers, percentile=percentile, **extra)
        cal = search.calibration
        out[mode] = (search, cal, time.perf_counter() - t0)
    return out


def experiment(name: str, full, enc, seed: int, per_kind: int, work: Path, workers: int,
               percentile: float, pixel_candidates: int | None = None, modes: tuple[str, ...] = MODES[:2]) -> list[list]:
    from evaluators.features import extract_features
    from evaluators.privacy.perturb import KINDS, perturb

    train, same_rows, new_rows = split_world(full, seed)
    cal_rows = np.zeros(0, dtype=int)
    heldout = None
    if "no-ids+heldout" in modes:  # half of the new patients calibrate, the other half measure false flags
        pids = np.asarray(full.patient_ids)[new_rows]
        uniq = np.unique(pids)
        np.random.default_rng(200 + seed).shuffle(uniq)
        cal_rows = new_rows[np.isin(pids, uniq[: len(uniq) // 2])]
        heldout = full.subset(cal_rows, name=f"{full.name} held-out patients")
        heldout.table["patient_id"] = None
        heldout.table["study_id"] = None
    both = searches(train, enc, work, workers, percentile, pixel_candidates, modes, heldout)
    rng = np.random.default_rng(100 + seed)
    items, groups, sources = [], [], []
    for kind in KINDS:
        for i in rng.choice(len(train), size=min(per_kind, len(train)), replace=False):
            items.append(perturb(train.image(int(i)), kind, rng))
            groups.append(kind)
            sources.append(int(i))
    is_cal = []
    for r in new_rows:
        items.append(full.image(int(r)))
        groups.append("new patients")
        is_cal.append(bool(np.isin(r, cal_rows)))
    for r in same_rows:
        items.append(full.image(int(r)))
        groups.append("other studies of training patients")
    feats = extract_features(items, enc, show_progress=False).features
    search = next(iter(both.values()))[0]  # the candidates and scores do not depend on the ids
    t0 = time.perf_counter()
    found = search.check(items, feats)
    t_query = (time.perf_counter() - t0) / len(items)
    groups = np.asarray(groups)
    planted = np.isin(groups, KINDS)
    src_found = found.match_row[planted] == np.asarray(sources)
    rows = []
    new = groups == "new patients"
    cal_mask = np.zeros(len(groups), dtype=bool)
    cal_mask[np.flatnonzero(new)[np.asarray(is_cal, dtype=bool)]] = True
    for mode, (_, cal, secs) in both.items():
        flags = found.copy_score > cal["threshold"]
        judged = new & ~cal_mask if mode == "no-ids+heldout" else new  # never judge on the calibration images
        lvl = cal["level"]
        missed = ~flags[planted]
        rows.append([name, seed, mode, len(train), cal["n_queries"], f"{secs:.1f} s", round(cal["threshold"], 3),
                     *(round(float(flags[groups == k].mean()), 3) for k in KINDS),
                     f"{flags[judged].mean():.3f} (nominal {lvl:g}; n={int(judged.sum())})",
                     f"{flags[groups == 'other studies of training patients'].mean():.3f} "
                     f"(n={int((groups == 'other studies of training patients').sum())})",
                     f"{int((missed & ~src_found).sum())} / {int((missed & src_found).sum())}"])
    if "no-ids+heldout" in modes:
        print(resplit_line(name, seed, found.copy_score[new], np.asarray(full.patient_ids)[new_rows],
                           both["no-ids+heldout"][1]["level"]), flush=True)
    print(f"{name} seed {seed}: {t_query * 1000:.0f} ms per query ({search.n_cand} candidates, {workers} thread(s)); "
          f"new patients' copy score p50 {np.median(found.copy_score[groups == 'new patients']):.3f}, "
          f"max {found.copy_score[groups == 'new patients'].max():.3f}; lowest planted copy "
          f"{found.copy_score[np.isin(groups, KINDS)].min():.3f}", flush=True)
    return rows


def resplit_rates(scores: np.ndarray, pids: np.ndarray, level: float, n_splits: int = 2000,
                  seed: int = 0) -> np.ndarray:
    """False-flag rates of ``n_splits`` patient-disjoint halvings of the new patients' copy scores: one half
    calibrates (the conformal threshold), the other is flagged against it. A new patient's copy score does not
    depend on the split, so the scores are computed once; this shows how far one split's rate is from the mean."""
    from evaluators.privacy.memorisation import conformal_threshold

    uniq = np.unique(pids)
    rng = np.random.default_rng(seed)
    out = np.empty(n_splits)
    for t in range(n_splits):
        rng.shuffle(uniq)
        cal = np.isin(pids, uniq[: len(uniq) // 2])
        out[t] = (scores[~cal] > conformal_threshold(scores[cal], level)).mean()
    return out


def resplit_line(name: str, seed: int, scores: np.ndarray, pids: np.ndarray, level: float) -> str:
    r = resplit_rates(np.asarray(scores, dtype=np.float64), np.asarray(pids), level)
    return (f"{name} seed {seed}, no-ids+heldout: over {len(r)} patient-disjoint re-splits of the new patients "
            f"({len(np.unique(pids))} patients, {len(scores)} images), new patients flagged: mean {r.mean():.4f}, "
            f"sd {r.std():.4f}, 5-95% {np.quantile(r, 0.05):.3f}-{np.quantile(r, 0.95):.3f}, above nominal + 1 point "
            f"in {(r > level + 0.01).mean():.1%} of splits (nominal {level:g})")


def pair_costs(images: list[np.ndarray], sizes=(64, 128, 256), k: int = 50, n_queries: int = 6) -> list[list]:
    """Per (synthetic, candidate) pair, one thread: the cascade over k candidates (cold: every image prepared
    from its full-size array; warm: training images already prepared), and one full registration + score."""
    import cv2

    from evaluators.privacy.distances import resize_to
    from evaluators.privacy.matcher import CopyMatcher, full_score, prepare
    from evaluators.privacy.perturb import perturb

    cv2.setNumThreads(1)
    rows = []
    for size in sizes:
        train = [resize_to(im, size) for im in images[: k + n_queries]]
        queries = [perturb(train[i], "combined", i) for i in range(n_queries)]
        m = CopyMatcher(train[:k])
        t0 = time.perf_counter()
        for q in queries:
            m.best(q, range(k))
            m._prep.clear()
        cold = (time.perf_counter() - t0) / (n_queries * k)
        for r in range(k):
            m.prepared(r)
        t0 = time.perf_counter()
        for q in queries:
            m.best(q, range(k))
        warm = (time.perf_counter() - t0) / (n_queries * k)
        pq, pc = prepare(queries[0]), [prepare(t) for t in train[:k]]
        t0 = time.perf_counter()
        for c in pc:
            full_score(pq, c)
        full = (time.perf_counter() - t0) / k
        rows.append([size, round(cold * 1000, 2), round(warm * 1000, 2), round(full * 1000, 2)])
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="demo", help="encoder proposing candidates (default: demo)")
    ap.add_argument("--copies-per-kind", type=int, default=20)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--workers", type=int, default=1, help="matcher threads (default: 1, the per-core figure)")
    ap.add_argument("--percentile", type=float, default=99.0, help="calibration percentile (default: 99)")
    ap.add_argument("--pixel-candidates", type=int, default=None,
                    help="training images nearest by pixel key added to the encoder's candidates (default: the "
                         "engine's, DEFAULT_PIXEL_CANDIDATES; 0 = encoder candidates only)")
    ap.add_argument("--demo-patients", type=int, default=600)
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-nih", action="store_true")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES[:2]),
                    help="patient ids: 'ids' as given, 'no-ids' removed, 'derived' removed then taken from the file "
                         "names, 'no-ids+heldout' removed and the threshold calibrated on other patients' images "
                         "(half of the new patients; the other half measure false flags) (default: ids no-ids)")
    ap.add_argument("--skip-costs", action="store_true", help="skip the matcher's cost per pair")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    print_header("Copy matcher: planted near copies, new patients, other studies, cost per pair")
    from evaluators.encoders import load_encoder
    from evaluators.imagesets import load_image_set
    from evaluators.privacy.perturb import KINDS

    headers = ["data", "split seed", "patient ids", "train images", "calibration queries", "calibration time",
               "threshold", *KINDS, "new patients flagged", "other studies of training patients flagged",
               "copies missed: source not matched / below threshold"]
    rows: list[list] = []
    with tempfile.TemporaryDirectory(prefix="privacy_matcher_") as tmp, chexgen_home(Path(tmp) / "home"):
        work = Path(tmp)
        enc = load_encoder(args.encoder)
        nih = None
        if not args.skip_nih and (NIH / "labels.csv").is_file():
            nih = load_image_set(NIH)
            for seed in args.seeds:
                rows += experiment("NIH sample (64 px)", nih, enc, seed, args.copies_per_kind, work, args.workers,
                                   args.percentile, args.pixel_candidates, tuple(args.modes))
        if not args.skip_demo:
            from evaluators.demo_world import generate_demo_world

            world = load_image_set(generate_demo_world(work / "demo", patients=args.demo_patients, seed=0, size=128))
            rows += experiment("demo world (128 px)", world, enc, args.seeds[0], args.copies_per_kind, work,
                               args.workers, args.percentile, args.pixel_candidates, tuple(args.modes))
        print()
        print(markdown_table(headers, rows))
        if args.skip_costs:
            return 0
        imgs = [nih.image(i) for i in range(60)] if nih is not None else None
        if imgs is None:
            from evaluators.demo_world import generate_demo_world

            w = load_image_set(work / "demo") if (work / "demo").is_dir() else load_image_set(
                generate_demo_world(work / "demo", patients=40, seed=0, size=128))
            imgs = [w.image(i) for i in range(60)]
        print()
        print("Matcher cost per (synthetic, candidate) pair, one thread, 50 candidates (images upsampled from the "
              "source to each size):")
        print(markdown_table(["size px", "cascade ms/pair (cold)", "cascade ms/pair (warm)", "full registration ms"],
                             pair_costs(imgs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
