"""FRD's first-run statement: radiomic extraction cost by image size, and the cost of counting uncached images.

1. CPU seconds per image of the ``radiomics`` encoder (PyRadiomics, one core) at 64..1024 px: a few images of
   the shared NIH sample (64 px) upsampled bicubically; the table behind
   :data:`evaluators.extraction_cost.COST_SECONDS`.
2. :func:`evaluators.extraction_cost.uncached` on the NIH sample (1,000 images) in a fresh ``CHEXGEN_HOME``: before
   any hash is remembered, after the hashes are remembered (as any run leaves them), and with every image's
   radiomic features cached (a fake shard holding their hashes); ms per 1,000 images. No image is read.

    python benchmarks/frd_first_run.py [--sizes 64,128,256,512,1024] [--per-size 3]
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


def _extraction(sizes: list[int], per_size: int, files: list[Path]) -> None:
    import numpy as np
    from PIL import Image

    from evaluators.encoders.radiomics_features import extract, extractor

    ext = extractor()
    print("| side (px) | CPU s / image | wall s / image |\n|---|---|---|")
    for side in sizes:
        imgs = [np.asarray(Image.open(f).convert("L").resize((side, side), Image.BICUBIC), dtype=np.float32)
                for f in files[:per_size]]
        extract(ext, imgs[0])  # warm-up
        c0, t0 = time.process_time(), time.perf_counter()
        for im in imgs:
            extract(ext, im)
        print(f"| {side} | {(time.process_time() - c0) / len(imgs):.3f} | {(time.perf_counter() - t0) / len(imgs):.3f} |")


def _check(files: list[Path]) -> None:
    import numpy as np

    from evaluators.encoders import load_encoder
    from evaluators.extraction_cost import uncached
    from evaluators.features import FeatureStore
    from evaluators.filehashes import file_hashes

    t0 = time.perf_counter()
    key = load_encoder("radiomics").cache_key()
    print(f"\nloading the radiomics encoder for its cache key: {time.perf_counter() - t0:.2f} s")
    paths = [str(f) for f in files]
    per_k = 1000 / len(paths)

    def timed(label: str, expect: int) -> None:
        t0 = time.perf_counter()
        todo = uncached(paths, key)
        ms = (time.perf_counter() - t0) * 1000
        assert len(todo) == expect, (label, len(todo), expect)
        print(f"| {label} | {len(todo)} | {ms:.1f} | {ms * per_k:.1f} |")

    print(f"\n{len(paths)} images\n\n| state | uncached | ms | ms per 1,000 images |\n|---|---|---|---|")
    timed("no feature cache for the encoder yet", len(paths))
    store = FeatureStore(key)  # the cache folder exists from here on
    timed("nothing cached, no hash remembered", len(paths))
    hashes = file_hashes(paths)  # what any run leaves behind (its extraction hashes every file once)
    timed("hashes remembered, no features", len(paths))
    for s in range(0, len(hashes), 512):  # the cache's own shard size
        store.write(hashes[s:s + 512], {"features": np.zeros((len(hashes[s:s + 512]), 4), dtype=np.float32)})
    timed("features cached", 0)
    from evaluators.extraction_cost import SIZE_SAMPLE, _header_pixels

    t0 = time.perf_counter()
    sizes = [_header_pixels(p) for p in paths[:SIZE_SAMPLE]]
    print(f"\nimage size from {SIZE_SAMPLE} headers: {(time.perf_counter() - t0) * 1000:.1f} ms ({sizes[0]} px each)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,128,256,512,1024")
    ap.add_argument("--per-size", type=int, default=3)
    a = ap.parse_args()
    if not NIH.is_dir():
        print(f"{NIH} is absent: this benchmark needs the shared NIH sample", file=sys.stderr)
        return 1
    os.environ["CHEXGEN_HOME"] = tempfile.mkdtemp(prefix="frd-first-run-")
    import torch

    torch.set_num_threads(1)
    print(f"command: `{command_line()}`")
    print(machine_line())
    if (w := quiet_warning()):
        print(w)
    files = sorted(NIH.glob("*.png"))
    _extraction([int(s) for s in a.sizes.split(",")], a.per_size, files)
    _check(files)
    return 0


if __name__ == "__main__":
    sys.exit(main())
