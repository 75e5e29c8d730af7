"""Cost per image of the FRD radiomic features (the ``radiomics`` encoder) on one CPU core, and of FRD itself.

Images: ``--images FOLDER`` (PNG/JPEG), by default the shared NIH ChestX-ray14 sample at 64 px when present,
else a demo world. Extraction runs in this process with one torch thread and no DataLoader workers
(PyRadiomics is single-threaded); the second pass reads the feature cache.

    python benchmarks/frd_cost.py --n 40
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _common import command_line, machine_line, quiet_warning

NIH = Path("/work/shared/data/nih-cxr14-sample/images")


def _images(folder: str | None, n: int, tmp: Path) -> tuple[list[Path], str]:
    if folder:
        root = Path(folder)
    elif NIH.is_dir():
        root = NIH
    else:
        from evaluators.demo_world import generate_demo_world

        generate_demo_world(tmp / "world", patients=max(8, n), seed=0, size=64)
        root = tmp / "world"
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[: 2 * n]
    if len(files) < 2 * n:
        raise SystemExit(f"{root}: {len(files)} images, need {2 * n}")
    return files, str(root)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="images per set (two sets are extracted)")
    ap.add_argument("--images", default=None)
    a = ap.parse_args()
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from evaluators.encoders.registry import load_encoder
    from evaluators.features import extract_features
    from evaluators.metrics.frd import frd

    print(f"command: `{command_line()}`")
    print(machine_line())
    if (w := quiet_warning()):
        print(w)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        files, source = _images(a.images, a.n, tmp)
        enc = load_encoder("radiomics")
        kw = {"store_root": tmp / "cache", "show_progress": False, "num_workers": 0}
        t0, c0 = time.perf_counter(), time.process_time()
        feats = extract_features(files, enc, **kw).features
        cold, cold_cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        extract_features(files, enc, **kw)
        warm = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        out = frd(feats[: a.n], feats[a.n:])
        metric, metric_cpu = time.perf_counter() - t0, time.process_time() - c0
        size = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(files[0])).shape
    print(f"\nimages: {len(files)} from {source} ({size[1]} x {size[0]} px); {enc.dim} radiomic features\n")
    print("| step | wall seconds | CPU seconds (this process) | per image (CPU) |")
    print("|---|---|---|---|")
    print(f"| radiomic features, first extraction (1 core) | {cold:.1f} | {cold_cpu:.1f} | "
          f"{cold_cpu / len(files):.3f} s |")
    print(f"| same images again (feature cache) | {warm:.2f} | | {warm / len(files) * 1000:.1f} ms (wall) |")
    print(f"| FRD from the cached features ({a.n} vs {a.n}) | {metric:.3f} | {metric_cpu:.3f} | |")
    print(f"\nFRD of two disjoint halves: {out['FRD']:.3f} ({out['n_features']} features used)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    sys.exit(main())
