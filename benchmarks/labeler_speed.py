"""Rule labeler speed: label N prompts (default 20,000) on one CPU core; prints the per-prompt cost.

    taskset -c 0 python benchmarks/labeler_speed.py [--n 20000] [--seed 0]

Pure Python (``re`` only, no torch, no BLAS): thread settings do not matter; pin to one core with
``taskset -c 0`` so the figure is a one-core figure (the script prints the cores it may run on). Prompts are a
mix of the demo report writer's prompts (evaluators/reports.py, random label vectors) and the hand-labelled
report-style sentences and reports of tests/, cycled up to N. Target (issue #20): 20,000 prompts under 20 s.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from _common import REPO, command_line, cpu_model, loadavg, quiet_warning

from evaluators.labeler import label_report
from evaluators.pathologies import N_LABELS
from evaluators.reports import write_report


def prompts(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for name in ("labeler_report_sentences.csv", "labeler_holdout_reports.csv", "labeler_sentences.csv"):
        with (REPO / "tests" / name).open(newline="") as f:
            out += [r["text"] for r in csv.DictReader(f)]
    vectors = rng.choice([np.nan, 1.0, 0.0, -1.0], size=(n, N_LABELS), p=[0.7, 0.1, 0.13, 0.07])
    out += [write_report(v.astype(np.float32), rng) for v in vectors[: max(0, n - len(out))]]
    return (out * (n // len(out) + 1))[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes over the N prompts (median reported)")
    args = ap.parse_args(argv)

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print("## Rule labeler speed")
    print(f"command: `{command_line()}`")
    print(f"machine: {cpu_model()}, may run on cores {cores or 'n/a'} of {os.cpu_count()}, "
          f"load average {loadavg()}; pure Python, one thread")
    if len(cores) != 1:
        print("NOTE: not pinned to one core; run under `taskset -c 0` for a one-core figure")
    warn = quiet_warning()
    if warn:
        print(warn)
    texts = prompts(args.n, args.seed)
    chars = statistics.mean(len(t) for t in texts)
    label_report(texts[0])  # compile-once costs out of the timing
    wall, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for t in texts:
            label_report(t)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    w, c = statistics.median(wall), statistics.median(cpu)
    print()
    print(f"| prompts | mean chars | wall (median of {args.repeats}) | CPU time | per prompt (CPU) | target |")
    print("|---:|---:|---:|---:|---:|---|")
    print(f"| {args.n:,} | {chars:.0f} | {w:.2f} s | {c:.2f} s | {c / args.n * 1e3:.3f} ms | "
          f"{'met' if c < 20 * args.n / 20000 else 'NOT met'}: 20,000 in < 20 s of one core's time |")
    print("\nThe verdict uses CPU time (what one core spent); wall time also counts waiting for a shared core "
          "and equals the CPU time on a quiet, pinned core.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
