"""Report-generation utility on the demo world: real vs synthetic (demo generator) vs real + synthetic.

    python -m evaluators demo-data --out /tmp/demo_u --patients 600 --seed 0
    python -m evaluators generate --model demo --prompts /tmp/demo_u/metadata.csv@train --out /tmp/syn_u
    python benchmarks/report_utility_demo.py --demo-dir /tmp/demo_u --synthetic /tmp/syn_u [--jobs 3] [--epochs 10]

Trains the registry's ``captioner`` per setting (``--jobs N`` settings at once, one process each, one torch
thread each: on a shared 2-core CPU three single-thread processes waste less time than one two-thread process),
then runs ``report-utility`` over the same work folder: it finds every setting's finished checkpoint, so it only
generates the test reports and scores them, adds the "most frequent report" baseline, writes the JSON and saves
the run in the results store. Prints the side-by-side table, each setting's training time and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _train_one(name: str, specs: list[str], test: str, work: Path, kw: dict) -> None:
    from evaluators.reportgen.run import run_report_utility

    report = run_report_utility({name: specs}, test, work_dir=work, meteor=False, baseline=False, **kw)
    r = report["settings"][name]
    (work / f"{name}.timing.json").write_text(json.dumps(
        {k: r[k] for k in ("train_seconds", "generate_seconds", "epochs_run", "best_epoch", "n_train", "n_val",
                            "resumed_from_epoch")}, indent=2))


def main(argv: list[str] | None = None) -> int:
    from benchmarks._common import machine_line, print_header

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo-dir", default="/tmp/demo_u")
    p.add_argument("--synthetic", default="/tmp/syn_u")
    p.add_argument("--real", default=None, help="real training set (default: DEMO_DIR/metadata.csv@train)")
    p.add_argument("--test", default=None, help="real test set (default: DEMO_DIR/metadata.csv@test)")
    p.add_argument("--model", default="captioner")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="settings trained at once (one process each)")
    p.add_argument("--out", default="/tmp/report_utility_bench")
    p.add_argument("--one", nargs=2, metavar=("SETTING", "SPECS_JSON"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    from evaluators.reportgen.run import format_table, standard_settings

    out = Path(args.out)
    work = out / "runs"
    work.mkdir(parents=True, exist_ok=True)
    real = args.real or f"{args.demo_dir}/metadata.csv@train"
    test = args.test or f"{args.demo_dir}/metadata.csv@test"
    kw = {"model": args.model, "epochs": args.epochs, "patience": args.patience, "seed": args.seed,
          "show_bars": False}
    if args.one:
        _train_one(args.one[0], json.loads(args.one[1]), test, work, kw)
        return 0
    print_header("Report-generation utility on the demo world")
    settings = standard_settings([real], [args.synthetic])
    started = time.time()
    procs: list[subprocess.Popen] = []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if args.jobs > 1 else dict(os.environ)
    base = [sys.executable, __file__, "--demo-dir", args.demo_dir, "--synthetic", args.synthetic, "--real", real,
            "--test", test, "--model",
            args.model, "--seed", str(args.seed), "--out", str(out)]
    base += [*(["--epochs", str(args.epochs)] if args.epochs else []),
             *(["--patience", str(args.patience)] if args.patience else [])]
    for name, specs in settings.items():
        procs.append(subprocess.Popen([*base, "--one", name, json.dumps(specs)], env=env))
        while len([q for q in procs if q.poll() is None]) >= args.jobs:
            time.sleep(5)
    if any(q.wait() != 0 for q in procs):
        print("a setting failed; see its output above")
        return 1
    cmd = [sys.executable, "-m", "evaluators", "report-utility", "--train", real, "--synthetic", args.synthetic,
           "--test", test, "--model", args.model, "--seed", str(args.seed), "--work-dir", str(work),
           "--out", str(out / "report_utility.json"),
           *(["--epochs", str(args.epochs)] if args.epochs else []),
           *(["--patience", str(args.patience)] if args.patience else [])]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO)
    report = json.loads((out / "report_utility.json").read_text())
    print()
    print(format_table(report))
    for name in settings:
        t = json.loads((work / f"{name}.timing.json").read_text())
        print(f"- {name}: {t['n_train']} train / {t['n_val']} val pairs, {t['epochs_run']} epochs (best {t['best_epoch']}), "
              f"trained in {t['train_seconds']:.0f} s, {report['n_test']} test reports in {t['generate_seconds']:.0f} s")
    base_row = report["settings"]["most frequent report"]
    print(f"- most frequent report: {base_row['report']!r}")
    print(f"total {time.time() - started:.0f} s wall; {machine_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
