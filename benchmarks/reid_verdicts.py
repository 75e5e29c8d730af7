"""Per-image verdicts (memorised / same patient / new) on a demo world: planted copies, new patients, new studies.

A demo world (``--patients``, seed 0, 64 px) is the training set (its train split; its valid/test splits calibrate
the re-ID verdict threshold); another world (seed 11) supplies new patients; every kind of
``evaluators.privacy.perturb.KINDS`` is planted ``--copies-per-kind`` times; and ``--new-studies`` training patients
are rendered again with a new pose (same anatomy and findings): another study of a training patient, not a copy.
Printed per group: the verdict counts and the share of re-ID scores > 0.5 (CheXGenBench's rule) against the matched
training image, with the re-ID model, its AUC and the verdict threshold.

    python benchmarks/reid_verdicts.py [--patients 300] [--copies-per-kind 10] [--new-studies 60]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from _common import chexgen_home, markdown_table, print_header
from PIL import Image


def _save(img, path: Path) -> None:
    arr = np.asarray(img)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(arr).save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--copies-per-kind", type=int, default=10)
    ap.add_argument("--new-patients", type=int, default=100)
    ap.add_argument("--new-studies", type=int, default=60)
    args = ap.parse_args()
    print_header("Per-image verdicts: planted copies, new patients, new studies of training patients")
    from evaluators.demo_anatomy import render_layers, sample_study_params
    from evaluators.demo_world import _view, generate_demo_world, sample_labels, sample_patient
    from evaluators.imagesets import load_image_set
    from evaluators.privacy.perturb import KINDS, perturb
    from evaluators.privacy.suite import run_privacy

    with tempfile.TemporaryDirectory(prefix="reid_verdicts_") as tmp, chexgen_home(Path(tmp) / "home"):
        root = Path(tmp)
        generate_demo_world(root / "train", patients=args.patients, seed=0, size=64)
        generate_demo_world(root / "novel", patients=args.new_patients, seed=11, size=64)
        train = load_image_set(f"{root / 'train'}@train")
        novel = load_image_set(root / "novel")
        syn = root / "synthetic"
        syn.mkdir()
        rng = np.random.default_rng(0)
        group: dict[str, str] = {}
        for j, i in enumerate(rng.choice(len(train), size=args.copies_per_kind * len(KINDS), replace=False)):
            name = f"copy_{j:04d}.png"
            _save(perturb(train.image(int(i)), KINDS[j % len(KINDS)], rng), syn / name)
            group[name] = "planted copies"
        for j in range(len(novel)):
            _save(novel.image(j), syn / f"novel_{j:04d}.png")
            group[f"novel_{j:04d}.png"] = "new patients"
        for pid in sorted(set(train.patient_ids))[: args.new_studies]:
            i = int(pid[1:]) - 10000000  # the demo world's patient i is drawn from rng([seed, i])
            prng = np.random.default_rng([0, i])
            patient = sample_patient(prng, pid)
            labels = sample_labels(prng)
            srng = np.random.default_rng([12345, i])
            view = _view(srng, labels)
            img, _ = render_layers(patient, labels, size=64, view=view, params=sample_study_params(srng, view))
            _save(img, syn / f"{pid}_newstudy.png")
            group[f"{pid}_newstudy.png"] = "new studies of training patients"
        pd.DataFrame({"path": sorted(group)}).to_csv(syn / "metadata.csv", index=False)
        r = run_privacy(f"{root / 'train'}@train", syn, encoder="demo")
    rc = r["reid"].get("verdict_calibration") or {}
    print(f"re-ID model {r['reid']['model']} (AUC {r['reid']['auc_text']} on this training set's patients); "
          f"verdict threshold {rc.get('threshold', float('nan')):.3f} from {rc.get('n')} held-out images, "
          f"{rc.get('fraction_above_0.5', float('nan')):.2f} of which score > 0.5; copy threshold "
          f"{r['calibration']['threshold']:.3f} ({r['calibration'].get('match')})\n")
    rows = []
    for g in ("planted copies", "new patients", "new studies of training patients"):
        smp = [s for s in r["samples"] if group[Path(s["synthetic"]).name] == g]
        c = Counter(s["verdict"]["decision"] for s in smp)
        reid = np.array([s["reid_score"] for s in smp if s["reid_score"] is not None])
        rows.append([g, len(smp), c["memorised"], c["same patient"], c["new"],
                     f"{(reid > 0.5).mean():.2f}" if reid.size else "n/a"])
    print(markdown_table(["images", "n", "memorised", "same patient", "new", "re-ID > 0.5"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
