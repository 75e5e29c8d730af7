"""Utility benchmark: how well the classifier trains here, on the demo world and on the NIH sample.

    python benchmarks/utility_demo.py [--demo-dir /tmp/demo_u] [--patients 600] [--epochs 18] [--out DIR]

1. Demo world (evaluators.demo_world, 128 px): the real-trained classifier on its train split, tested on its
   test split; the target on a 2-core CPU is macro AUC >= 0.85 within 10 minutes. If the demo world has a
   synthetic set (a folder/CSV given with --demo-synthetic) the three settings run side by side.
2. NIH ChestX-ray14 sample (../shared/data/nih-cxr14-sample, 64 px, its train/valid/test split column):
   real-only, report only (1,000 images and overlapping patients across splits: not a benchmark result).

Prints the side-by-side tables and wall time; writes the reports as JSON under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
NIH = REPO.parent / "shared" / "data" / "nih-cxr14-sample" / "labels.csv"


def _run(title: str, settings: dict, test: str, *, out: Path, **kw) -> dict | None:
    from evaluators.errors import InputError, UnavailableError
    from evaluators.utility.run import format_table, run_utility

    print(f"\n## {title}", flush=True)
    t = time.time()
    try:
        report = run_utility(settings, test, work_dir=out / "runs", **kw)
    except (InputError, UnavailableError) as exc:
        print(f"unavailable: {exc}")
        return None
    out.mkdir(parents=True, exist_ok=True)
    (out / "utility.json").write_text(json.dumps(report, indent=2, default=str))
    print(format_table(report))
    for name, r in report["settings"].items():
        print(f"- {name}: {r['n_train']} train / {r['n_val']} val ({r['validation']}), {r['epochs_run']} epochs "
              f"(best {r['best_epoch']}, val AUC {r['best_val_auc']:.3f}), {r['train_seconds']:.0f} s")
    for note in report.get("notes", []):
        print(f"- note: {note}")
    print(f"model {report['model']} ({report['weights']}), {report['image_size']}px, {report['n_test']} test images, "
          f"{time.time() - t:.0f} s wall")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-dir", default="/tmp/demo_u")
    p.add_argument("--patients", type=int, default=600)
    p.add_argument("--demo-synthetic", default=None, help="synthetic set for the demo world (optional)")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--epochs", type=int, default=18)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=6)
    p.add_argument("--out", default="/tmp/utility_bench")
    p.add_argument("--skip-demo", action="store_true")
    p.add_argument("--skip-nih", action="store_true")
    args = p.parse_args(argv)
    out = Path(args.out)
    common = dict(model=args.model, epochs=args.epochs, seed=args.seed, device="cpu", patience=args.patience)

    if not args.skip_demo:
        from evaluators.demo_world import generate_demo_world

        # Always (re)written, a few seconds: a world left in --demo-dir by older code would give other numbers
        # (same seed, same files when nothing changed).
        meta = generate_demo_world(args.demo_dir, patients=args.patients, seed=args.seed, size=128)
        settings = {"real": [str(meta)]}  # its valid rows validate; test rows are never trained on
        if args.demo_synthetic:
            from evaluators.utility.run import standard_settings

            settings = standard_settings([str(meta)], [args.demo_synthetic])
        _run(f"Demo world ({args.patients} patients, 128 px)", settings, f"{meta}@test",
             out=out / "demo", image_size=128, **common)

    if not args.skip_nih:
        if NIH.is_file():
            # the whole CSV: its 'valid' rows validate, its 'test' rows are never trained on
            _run("NIH ChestX-ray14 sample (64 px; report only)", {"real": [str(NIH)]}, f"{NIH}@test",
                 out=out / "nih", image_size=64, **common)
        else:
            print(f"\n## NIH sample\nunavailable: {NIH} is absent")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
