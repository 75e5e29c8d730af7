"""Time and peak memory against N for every fidelity/search step, and a check that none is quadratic in memory.

Each (step, N) runs in its own child process, so ``resource.getrusage(...).ru_maxrss`` is that step's
peak and nothing leaks between measurements. Memory is reported two ways: the peak resident set above
the child's resident set just before the step (covers torch, FAISS and numba allocations, which
``tracemalloc`` does not see) and the ``tracemalloc`` peak (Python and numpy allocations only).

Steps (metrics and search on random float32 features ``[N, dim]``, real and synthetic sets both of N):
- ``features``: :func:`evaluators.features.extract_features` on N demo-world PNGs with the demo encoder
  (cold cache; 1k/5k only unless ``--full``).
- ``FID``, ``KID`` (100 subsets of size N: the full-set shortcut), ``PRDC`` (k=5): :mod:`evaluators.metrics`.
- ``search``: FAISS ``IndexFlatIP`` on L2-normalised features (the reference index's "flat" type):
  N synthetic queries, top 5, against N references (the memorisation search pattern).
- ``UMAP``: the reference index's fit (:func:`evaluators.index._fit_umap`, cosine, 15 neighbours;
  fitted on at most 20,000 points, the rest placed with ``transform``). numba's compilation runs on a
  300-point warm-up first and is reported separately.
- ``prdc-package`` (the reference implementation, for contrast): builds full N x N matrices; run only
  up to 5k.

The default sizes are 1k, 5k, 20k (``--max-n``, default 20000; 50k with ``--max-n 50000``). A step counts
as quadratic when its peak memory grows faster than N^1.5 between the two largest sizes of at least 10k
(with one such size: when its peak there exceeds half of one N x N float32 matrix, 2 N^2 bytes); the
script then exits 1. (A fixed cost such as UMAP's ~1 GB of numba/pynndescent state is not growth.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import _common as C

SIZES = (1_000, 5_000, 20_000, 50_000)
STEPS = ("features", "FID", "KID", "PRDC", "search", "UMAP", "prdc-package")
PROJECT_STEPS = ("features", "FID", "KID", "PRDC", "search", "UMAP")
REFERENCE_MAX_N = 5_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def _child(step: str, n: int, dim: int) -> dict:
    """Run one step once in this process and return its time and memory."""
    import numpy as np

    extra: dict = {}
    rng = np.random.default_rng(0)
    real = fake = None
    if step != "features":
        real = rng.standard_normal((n, dim), dtype=np.float32)
        fake = rng.standard_normal((n, dim), dtype=np.float32) + np.float32(0.1)

    if step == "features":
        from evaluators.features import extract_features

        work = Path(tempfile.mkdtemp(prefix="chexgen-bench-scale-"))
        os.environ["CHEXGEN_HOME"] = str(work / "home")
        paths = list(C.demo_images(n, seed=0).paths)
        encoder, note = C.load_bench_encoder("demo", work)
        encoder.weights_sha256()
        extra["note"] = note

        def run():
            extract_features(paths, encoder, show_progress=False)
    elif step == "FID":
        from evaluators.metrics import fid

        def run():
            fid(real, fake)
    elif step == "KID":
        from evaluators.metrics import kid

        def run():
            kid(real, fake, subsets=100)
    elif step == "PRDC":
        from evaluators.metrics import prdc

        def run():
            prdc(real, fake, k=5)
    elif step == "prdc-package":
        import contextlib
        import io

        from prdc import compute_prdc

        def run():
            with contextlib.redirect_stdout(io.StringIO()):
                compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    elif step == "search":
        import faiss

        from evaluators.index import l2_normalise

        def run():
            index = faiss.IndexFlatIP(dim)
            index.add(l2_normalise(real))
            index.search(l2_normalise(fake), 5)
    elif step == "UMAP":
        from evaluators.index import _fit_umap, l2_normalise

        folder = Path(tempfile.mkdtemp(prefix="chexgen-bench-umap-"))
        t0 = time.perf_counter()
        _fit_umap(l2_normalise(rng.standard_normal((300, dim), dtype=np.float32)), folder, neighbors=15, seed=0)
        extra["compile_s"] = round(time.perf_counter() - t0, 2)
        normed = l2_normalise(real)

        def run():
            _fit_umap(normed, folder, neighbors=15, seed=0)
    else:
        raise SystemExit(f"unknown step {step!r}")

    import gc

    gc.collect()
    rss0 = _rss_bytes()
    tracemalloc.start()
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"step": step, "n": n, "dim": dim, "seconds": seconds, "rss_peak_delta": max(0, _maxrss_bytes() - rss0),
            "tracemalloc_peak": traced_peak, "loadavg": C.loadavg(), **extra}


def _run_child(step: str, n: int, dim: int, timeout: float) -> dict:
    cmd = [sys.executable, __file__, "--child", step, str(n), "--dim", str(dim)]
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(C.bench_cache() / "numba"))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"step": step, "n": n, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"step": step, "n": n, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


GROWTH_MIN_N = 10_000
"""Below this N a step's fixed memory (numba state, thread pools) hides how it grows."""


def memory_growth_flags(points: dict[str, list[tuple[int, float]]]) -> list[str]:
    """Steps whose peak memory looks quadratic in N, from (N, peak bytes) points at N >= GROWTH_MIN_N, sorted by N.

    Two or more points: the growth exponent between the two largest, flagged above 1.5. One point: flagged
    when its peak exceeds 2 N^2 bytes (half of one N x N float32 matrix).
    """
    flags = []
    for step, pts in points.items():
        if len(pts) >= 2:
            (n1, p1), (n2, p2) = pts[-2], pts[-1]
            expo = math.log(max(p2, 1.0) / max(p1, 1.0)) / math.log(n2 / n1)
            print(f"{step}: peak memory grows like N^{expo:.2f} from {n1:,} to {n2:,}")
            if expo > 1.5:
                flags.append(f"{step}: peak memory grows like N^{expo:.2f} from N={n1:,} to {n2:,}")
        elif pts and pts[-1][1] > 2 * pts[-1][0] ** 2:
            n, peak = pts[-1]
            flags.append(f"{step} at N={n:,}: peak {_mb(peak)} MiB > 2 N^2 bytes ({_mb(2 * n * n)} MiB)")
    return flags


def _mb(b: float) -> str:
    return f"{b / 2**20:,.1f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=list(SIZES),
                    help="comma-separated N values (default 1000,5000,20000,50000, capped by --max-n)")
    ap.add_argument("--max-n", type=int, default=20_000, help="largest N to run (default 20000)")
    ap.add_argument("--dim", type=int, default=256, help="feature dimension (default 256, the demo encoder's)")
    ap.add_argument("--steps", type=lambda s: s.split(","), default=list(STEPS),
                    help=f"comma-separated subset of {','.join(STEPS)}")
    ap.add_argument("--full", action="store_true", help="also extract image features at N > 5000")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per measurement")
    ap.add_argument("--child", nargs=2, metavar=("STEP", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), args.dim)))
        return 0
    unknown = [s for s in args.steps if s not in STEPS]
    if unknown:
        raise SystemExit(f"unknown step(s) {unknown}; choose from {', '.join(STEPS)}")

    sizes = sorted(n for n in args.sizes if n <= args.max_n)
    C.print_header(f"Scaling with N (dim {args.dim}; N capped at {args.max_n:,}: pass --max-n 50000 for 50k)")
    rows, results, quadratic = [], [], []
    big: dict[str, list[tuple[int, float]]] = {}  # step -> [(N, peak bytes)] for N >= 10k
    for step in args.steps:
        for n in sizes:
            if step == "features" and n > 5_000 and not args.full:
                continue
            if step == "prdc-package" and n > REFERENCE_MAX_N:
                continue
            r = _run_child(step, n, args.dim, args.timeout)
            results.append(r)
            if "error" in r:
                rows.append([step, f"{n:,}", "error", "", "", "", r["error"]])
                print(f"{step} N={n}: {r['error']}", file=sys.stderr, flush=True)
                continue
            peak = max(r["rss_peak_delta"], r["tracemalloc_peak"])
            note = []
            if "compile_s" in r:
                note.append(f"numba warm-up {r['compile_s']} s (not timed)")
            if "note" in r:
                note.append(r["note"])
            if step == "prdc-package":
                note.append("reference prdc 0.2 (N x N matrices)")
            if step in PROJECT_STEPS and n >= GROWTH_MIN_N:
                big.setdefault(step, []).append((n, peak))
            rows.append([step, f"{n:,}", f"{r['seconds']:.2f}", _mb(r["rss_peak_delta"]), _mb(r["tracemalloc_peak"]),
                         f"{peak / n:,.0f}", "; ".join(note) + f" (load {r['loadavg']})"])
            print(f"{step} N={n}: {r['seconds']:.2f} s, peak +{_mb(peak)} MiB (load {r['loadavg']})",
                  file=sys.stderr, flush=True)
    print(C.markdown_table(["step", "N", "seconds", "peak RSS above start (MiB)", "tracemalloc peak (MiB)",
                            "peak bytes / N", "notes"], rows))
    quadratic += memory_growth_flags(big)
    print(f"\nload average at the end: {C.loadavg()}")
    if quadratic:
        print("QUADRATIC MEMORY: " + "; ".join(quadratic), file=sys.stderr)
        return 1
    print("no project step's memory grows quadratically (N^1.5 at most between the largest sizes >= 10k)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
