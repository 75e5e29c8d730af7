"""How far the two preprocessing modes' numbers differ, and what each costs per image.

For each pair of image sets (the demo world at 256 px: two worlds of different seeds; the NIH sample: two disjoint
halves, 64 px) and each CheXGenBench encoder (RadDino's architecture, InceptionV3), features are extracted in
``clean`` mode (one float bicubic resize to the network input) and in ``chexgenbench`` mode (CheXGenBench's chain:
PIL RGB, 299 px bilinear, uint8 truncation, then RadDino's processor), and FID, KID and PRDC (k=5) are computed from
each. Printed: both modes' numbers, their relative difference, the mean cosine between an image's two feature
vectors, and the per-image cost of each mode (preprocessing alone, and encoding end to end).

The encoders have RANDOM weights (microsoft/rad-dino and the FID Inception weights cannot be downloaded here), so
the numbers show how much the chain moves a feature space of this architecture, not the size of the gap with the
real weights; rerun with real weights (``--raddino DIR``, ``--inception FILE``) for that.

    python benchmarks/preprocess_modes.py [--n 24] [--encoders raddino,inception] [--sets demo,nih]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import bench_cache, demo_images, load_bench_encoder, markdown_table, print_header

NIH = Path(__file__).resolve().parents[2] / "shared" / "data" / "nih-cxr14-sample"


def _sets(names: list[str], n: int):
    out = {}
    if "demo" in names:
        out["demo world 256 px (seed 0 vs seed 1)"] = (list(demo_images(n, seed=0, size=256).paths),
                                                      list(demo_images(n, seed=1, size=256).paths))
    if "nih" in names:
        if not (NIH / "labels.csv").is_file():
            print(f"(NIH sample absent at {NIH}: skipped)")
        else:
            files = sorted((NIH / "images").glob("*.png"))
            out["NIH sample 64 px (two halves)"] = (files[:n], files[len(files) // 2 : len(files) // 2 + n])
    return out


def _encoder(name: str, args, workdir: Path):
    from evaluators.encoders import load_encoder

    given = getattr(args, name)
    if given:
        return load_encoder(name, weights=given), f"{name} (weights {given})"
    return load_bench_encoder(f"{name}-random", workdir)


def _per_image_ms(fn, items) -> float:
    t0 = time.perf_counter()
    for it in items:
        fn(it)
    return 1000 * (time.perf_counter() - t0) / len(items)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24, help="images per side of each pair (default 24)")
    ap.add_argument("--encoders", default="raddino,inception")
    ap.add_argument("--sets", default="demo,nih")
    ap.add_argument("--raddino", default=None, help="a microsoft/rad-dino folder (default: random weights)")
    ap.add_argument("--inception", default=None, help="the FID Inception weights file (default: random weights)")
    args = ap.parse_args()
    print_header("Preprocessing modes: clean vs chexgenbench")

    from evaluators.features import extract_features
    from evaluators.imageio import read_image
    from evaluators.metrics import fidelity_metrics

    sets = _sets(args.sets.split(","), args.n)
    workdir = bench_cache() / "preprocess-modes-encoders"
    rows, costs = [], []
    for enc_name in args.encoders.split(","):
        clean, note = _encoder(enc_name, args, workdir)
        clean = clean.with_preprocess("clean")
        cgb = clean.with_preprocess("chexgenbench")
        print(f"- {enc_name}: {note}")
        for set_name, (real, synth) in sets.items():
            with tempfile.TemporaryDirectory() as store:  # a cold cache: every image encoded in both modes
                feats, enc_ms = {}, {}
                for mode, enc in (("clean", clean), ("chexgenbench", cgb)):
                    t0 = time.perf_counter()
                    fr = extract_features(real, enc, store_root=Path(store), show_progress=False, batch_size=8)
                    fs = extract_features(synth, enc, store_root=Path(store), show_progress=False, batch_size=8)
                    enc_ms[mode] = 1000 * (time.perf_counter() - t0) / (len(real) + len(synth))
                    feats[mode] = (fr.features, fs.features)
            m = {mode: fidelity_metrics(*feats[mode], k=5) for mode in feats}
            a, b = feats["clean"][0], feats["chexgenbench"][0]
            cos = float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
            for key in ("FID", "KID", "Precision", "Recall", "Density", "Coverage"):
                c, g = m["clean"][key], m["chexgenbench"][key]
                rel = abs(g - c) / abs(c) if c else float("nan")
                rows.append([enc_name, set_name, key, c, g, f"{100 * rel:.1f}%"])
            rows.append([enc_name, set_name, "feature cosine clean vs chexgenbench (real images, mean)", "", "",
                         f"{cos:.4f}"])
            sample = real[: min(16, len(real))]
            pre_clean = _per_image_ms(lambda p, e=clean: e.preprocess(read_image(p)), sample)
            pre_cgb = _per_image_ms(cgb.preprocess, sample)
            costs.append([enc_name, set_name, pre_clean, pre_cgb, enc_ms["clean"], enc_ms["chexgenbench"]])
    print()
    print(markdown_table(["encoder", "sets", "metric", "clean", "chexgenbench", "relative difference"], rows))
    print()
    print(markdown_table(["encoder", "sets", "preprocess ms/image, clean", "preprocess ms/image, chexgenbench",
                          "encode ms/image, clean", "encode ms/image, chexgenbench"], costs))
    print(f"\n(n = {args.n} images per side; preprocessing timed on up to 16 images, read from disk included; "
          "encode = extract_features with a cold cache, batch 8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
