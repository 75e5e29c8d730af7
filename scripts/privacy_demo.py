"""Planted-copies experiment: does the memorisation search find copies of training images, and only those?

For each data set: copies of training images, exact and lightly changed (every kind in
``evaluators.privacy.perturb.KINDS``), are mixed with real images of patients not in training; the
script prints the share of copies flagged (recall) and of new-patient images flagged (false flags).
The non-training patients are split in two halves: one calibrates the threshold (``heldout=``), the
other supplies the "novel" images, so the images that set the threshold are never the ones judged.

Data sets: the demo world (seed 0; training split as training) and, when present, the shared NIH
ChestX-ray14 sample (its train split as training; valid/test patients as held-out and novel).

    python scripts/privacy_demo.py [--encoder demo] [--match registered] [--copies-per-kind 10]

``benchmarks/privacy_matcher.py`` measures the default calibration (leave-one-out over the training index)
and the matcher's cost; this script keeps the calibration on a given held-out half.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evaluators.demo_world import WORLD_VERSION, generate_demo_world  # noqa: E402
from evaluators.imagesets import load_image_set  # noqa: E402
from evaluators.privacy.perturb import KINDS, perturb  # noqa: E402
from evaluators.privacy.suite import run_privacy  # noqa: E402

NIH = REPO.parent / "shared" / "data" / "nih-cxr14-sample"


def _save(img: np.ndarray, path: Path) -> None:
    Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(path)


def experiment(name: str, full_spec: str, out: Path, *, encoder: str | None, match: str, per_kind: int,
               n_novel: int, seed: int = 0) -> dict:
    full = load_image_set(full_spec)
    is_train = (full.table["split"] == "train").to_numpy()
    train = full.subset(is_train, name=f"{name}@train")
    others = full.subset(~is_train)
    train_pids = set(train.patient_ids)
    pids = sorted({p for p in others.patient_ids if p not in train_pids})
    rng = np.random.default_rng(seed)
    rng.shuffle(pids)
    calib_p, novel_p = set(pids[: len(pids) // 2]), set(pids[len(pids) // 2 :])
    heldout = others.subset(np.array([p in calib_p for p in others.patient_ids]), name=f"{name} calibration")
    novel = others.subset(np.array([p in novel_p for p in others.patient_ids]), name=f"{name} novel")
    syn = out / f"{name}_synthetic"
    syn.mkdir(parents=True, exist_ok=True)
    picks = rng.choice(len(train), size=min(len(train), per_kind * len(KINDS)), replace=False)
    rows = []
    for j, i in enumerate(picks):
        kind = KINDS[j % len(KINDS)]
        fname = f"copy_{j:04d}_{kind}.png"
        _save(perturb(train.image(int(i)), kind, rng), syn / fname)
        rows.append({"path": fname})
    for j in rng.choice(len(novel), size=min(len(novel), n_novel), replace=False):
        fname = f"novel_{int(j):04d}.png"
        _save(novel.image(int(j)), syn / fname)
        rows.append({"path": fname})
    pd.DataFrame(rows).to_csv(syn / "metadata.csv", index=False)
    result = run_privacy(train, syn, encoder=encoder, reid="auto", heldout=heldout, match=match)
    samples = {Path(s["synthetic"]).name: s for s in result["samples"]}
    copies = [s for n, s in samples.items() if n.startswith("copy_")]
    nov = [s for n, s in samples.items() if n.startswith("novel_")]

    def mean(xs):
        return float(np.mean(xs)) if xs else float("nan")

    return {
        "data": name,
        "encoder": result["encoder"].get("name"),
        "match": match,
        "n_train": len(train),
        "n_calibration": result["calibration"]["n"],
        "threshold": round(result["calibration"]["threshold"], 4),
        "n_copies": len(copies),
        "n_novel": len(nov),
        "recall": round(mean([s["flagged"] for s in copies]), 3),
        "recall_per_kind": {k: round(mean([s["flagged"] for n, s in samples.items() if n.endswith(f"_{k}.png")]), 3)
                            for k in KINDS},
        "false_flag_rate": round(mean([s["flagged"] for s in nov]), 3),
        "reid_available": result["summary"]["reid_available"],
        "reid_model": result["reid"].get("model"),  # the demo model only on the demo world (see README)
        "reid_auc": result["reid"].get("auc"),
        "mean_reid_copies": round(mean([s["reid_score"] for s in copies if s["reid_score"] is not None]), 3),
        "mean_reid_novel": round(mean([s["reid_score"] for s in nov if s["reid_score"] is not None]), 3),
        "seconds": result["settings"]["seconds"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default=None, help="encoder (default: the best available)")
    ap.add_argument("--match", default="registered", choices=("registered", "aligned", "cosine"))
    ap.add_argument("--copies-per-kind", type=int, default=20)
    ap.add_argument("--novel", type=int, default=400)
    ap.add_argument("--demo-patients", type=int, default=1000)
    ap.add_argument("--skip-nih", action="store_true")
    ap.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out or tempfile.mkdtemp(prefix="privacy_demo_"))
    world = out / f"demo_world-v{WORLD_VERSION}"  # a world written by older code is not reused
    if not (world / "metadata.csv").is_file():
        generate_demo_world(world, patients=args.demo_patients, seed=0, size=128)
    results = [experiment("demo-world", str(world), out, encoder=args.encoder, match=args.match,
                          per_kind=args.copies_per_kind, n_novel=args.novel)]
    if not args.skip_nih and (NIH / "labels.csv").is_file():
        results.append(experiment("nih-cxr14-sample", str(NIH), out, encoder=args.encoder, match=args.match,
                                  per_kind=args.copies_per_kind, n_novel=args.novel))
    for r in results:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
