"""Peak memory and time of the data-copying tests (AuthPct, C_T) at N x N on random features.

Each step runs in its own child process, so ``ru_maxrss`` is that step's peak resident memory
(Python, torch and the feature matrices included). Features: float32 standard normal, ``--dim`` wide
(768 by default, a RadDino-sized embedding); the train, held-out test and synthetic sets have ``--n``
rows each (test: ``--n-test``). The issue's bar is < 4 GB at 50,000 x 50,000.

    python benchmarks/copying_memory.py --n 50000 --dim 768
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from _common import command_line, machine_line, quiet_warning

STEPS = ("authpct", "c_t")


def _child(step: str, n: int, n_test: int, dim: int, cells: int | None) -> dict:
    import numpy as np
    import torch

    from evaluators.metrics.copying import authpct, c_t

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rng = np.random.default_rng(0)
    train = rng.standard_normal((n, dim), dtype=np.float32)
    syn = rng.standard_normal((n, dim), dtype=np.float32)
    test = rng.standard_normal((n_test, dim), dtype=np.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    if step == "authpct":
        value = authpct(train, syn)
    else:
        value = c_t(train, test, syn, cells=cells)["C_T"]
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"step": step, "seconds": seconds, "peak_rss": peak, "rss_before": base, "value": float(value)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--n-test", type=int, default=None)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--cells", type=int, default=None, help="C_T k-means cells (default: default_cells)")
    ap.add_argument("--steps", default=",".join(STEPS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    n_test = a.n_test or a.n
    if a.child:
        print(json.dumps(_child(a.child, a.n, n_test, a.dim, a.cells)))
        return 0
    print(f"command: `{command_line()}`")
    print(machine_line())
    if (w := quiet_warning()):
        print(w)
    print(f"\ntrain {a.n:,} x {a.dim}, synthetic {a.n:,} x {a.dim}, test {n_test:,} x {a.dim} (float32, "
          f"{3 * a.n * a.dim * 4 / 2**20:,.0f} MB of features at most)\n")
    print("| step | seconds | peak RSS (MB) | RSS after making the features (MB) | value |")
    print("|---|---|---|---|---|")
    ok = True
    for step in a.steps.split(","):
        cmd = [sys.executable, __file__, "--child", step, "--n", str(a.n), "--n-test", str(n_test),
               "--dim", str(a.dim)] + (["--cells", str(a.cells)] if a.cells else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"| {step} | failed: {proc.stderr.strip().splitlines()[-1:]} | | | |")
            ok = False
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"| {step} | {r['seconds']:.1f} | {r['peak_rss'] / 2**20:,.0f} | {r['rss_before'] / 2**20:,.0f} "
              f"| {r['value']:.3f} |")
        ok &= r["peak_rss"] < 4 * 2**30
    print("\nall steps under 4 GB peak RSS" if ok else "\nSOME STEP FAILED OR USED 4 GB OR MORE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
