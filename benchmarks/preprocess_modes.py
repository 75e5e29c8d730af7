"""How far the two preprocessing modes' numbers differ, and what each costs per image.

For each pair of image sets (the demo world at 256 px: two worlds of different seeds; the NIH sample: two disjoint
halves, 64 px) and each CheXGenBench encoder (RadDino's architecture, InceptionV3), features are extracted in
``clean`` mode (one float bicubic resize to the network input) and in ``chexgenbench`` mode (CheXGenBench's chain:
PIL RGB, 299 px bilinear, uint8 truncation, then RadDino's processor), and FID, KID and PRDC (k=5) are computed from
each. Printed: both modes' numbers, their relative difference, the mean cosine between an image's two feature
vectors, and the per-image cost of each mode (preprocessing alone, and encoding end to end).

The encoders have RANDOM weights (microsoft/rad-dino and the FID Inception weights cannot be downloaded here), so
the numbers show how much the chain moves a feature space of this architecture, not the size of the gap with the
real weights; rerun with real weights (``--raddino DIR``, ``--inception FILE``) for that. ``--raddino-arch small``
uses a 4-layer, 192-wide Dinov2 (patch 14, 518 px, RadDino's processor) instead of the full ViT-B/14, for a 2-core
CPU; the preprocessing (what differs between the modes) is the same, and the forward cost of the full ViT-B is
timed on ``--cost-images`` images either way.

    python benchmarks/preprocess_modes.py [--n 24] [--encoders raddino,inception] [--sets demo,nih] [--raddino-arch small]
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


def _encoder(name: str, args, workdir: Path, *, full: bool = False):
    from evaluators.encoders import load_encoder

    given = getattr(args, name)
    if given:
        return load_encoder(name, weights=given), f"{name} (weights {given})"
    if name == "raddino" and args.raddino_arch == "small" and not full:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.tiny_models import make_tiny_raddino

        folder = workdir / "raddino_small_random"
        if not (folder / "model.safetensors").is_file():
            make_tiny_raddino(folder, image_size=518, hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                              mlp_ratio=4)
        return (load_encoder("raddino", weights=folder),
                "Dinov2 4 layers x 192 (patch 14, 518 px, RadDino's processor) with RANDOM weights")
    return load_bench_encoder(f"{name}-random", workdir)


def _gray_levels(encoder, x) -> np.ndarray:
    """A preprocessed input back in 0..255 gray levels (RadDino: undo mean/std; Inception: already uint8)."""
    x = x.float().numpy()
    if encoder.name == "raddino":
        pre = encoder.metadata()["preprocessing"]
        mean = np.asarray(pre["mean"], np.float32).reshape(-1, 1, 1)
        std = np.asarray(pre["std"], np.float32).reshape(-1, 1, 1)
        x = (x * std + mean) * 255.0
    return x


def _per_image_ms(fn, items) -> float:
    fn(items[0])  # imports and first-call set-up are not per-image costs
    t0 = time.perf_counter()
    for it in items:
        fn(it)
    return 1000 * (time.perf_counter() - t0) / len(items)


def _costs(enc_name, set_name, real, clean, cgb, rows, costs) -> None:
    """The two modes' network inputs compared in gray levels, and each mode's preprocessing ms per image."""
    from evaluators.imageio import read_image

    sample = real[: min(16, len(real))]
    diff = np.concatenate([_gray_levels(clean, clean.preprocess(read_image(p)))
                           - _gray_levels(clean, cgb.preprocess(p)) for p in sample]).ravel()
    rows.append([enc_name, set_name, "network input, |clean - chexgenbench| in gray levels (mean / 99th pct)",
                 "", "", f"{np.abs(diff).mean():.2f} / {np.percentile(np.abs(diff), 99):.1f}"])
    pre_clean = _per_image_ms(lambda p, e=clean: e.preprocess(read_image(p)), sample)
    pre_cgb = _per_image_ms(cgb.preprocess, sample)
    costs.append([enc_name, set_name, pre_clean, pre_cgb])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=24, help="images per side of each pair (default 24)")
    ap.add_argument("--encoders", default="raddino,inception")
    ap.add_argument("--sets", default="demo,nih")
    ap.add_argument("--raddino", default=None, help="a microsoft/rad-dino folder (default: random weights)")
    ap.add_argument("--inception", default=None, help="the FID Inception weights file (default: random weights)")
    ap.add_argument("--raddino-arch", choices=("full", "small"), default="full",
                    help="random RadDino for the metric differences: full ViT-B/14 (default) or a small Dinov2")
    ap.add_argument("--cost-images", type=int, default=4, help="images for the full-size forward timing (default 4)")
    ap.add_argument("--costs-only", action="store_true", help="skip the metrics: input differences and costs only")
    args = ap.parse_args()
    print_header("Preprocessing modes: clean vs chexgenbench")

    from evaluators.features import extract_features
    from evaluators.imageio import read_image
    from evaluators.metrics import fidelity_metrics

    sets = _sets(args.sets.split(","), args.n)
    workdir = bench_cache() / "preprocess-modes-encoders"
    rows, costs, forward_ms = [], [], {}
    for enc_name in args.encoders.split(","):
        clean, note = _encoder(enc_name, args, workdir)
        clean = clean.with_preprocess("clean")
        cgb = clean.with_preprocess("chexgenbench")
        print(f"- {enc_name}: {note}")
        for set_name, (real, synth) in sets.items():
            if args.costs_only:
                _costs(enc_name, set_name, real, clean, cgb, rows, costs)
                continue
            with tempfile.TemporaryDirectory() as store:  # a cold cache: every image encoded in both modes
                feats = {}
                for mode, enc in (("clean", clean), ("chexgenbench", cgb)):
                    fr = extract_features(real, enc, store_root=Path(store), show_progress=False, batch_size=8)
                    fs = extract_features(synth, enc, store_root=Path(store), show_progress=False, batch_size=8)
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
            _costs(enc_name, set_name, real, clean, cgb, rows, costs)
        full = clean if (enc_name != "raddino" or args.raddino_arch == "full") else _encoder(enc_name, args, workdir, full=True)[0]
        import torch

        first = next(iter(sets.values()))[0][: args.cost_images]
        batch = torch.stack([full.preprocess(read_image(p)) for p in first])
        t0 = time.perf_counter()
        full.forward(batch)
        forward_ms[enc_name] = 1000 * (time.perf_counter() - t0) / len(first)
    print()
    print(markdown_table(["encoder", "sets", "metric", "clean", "chexgenbench", "relative difference"], rows))
    print()
    print(markdown_table(["encoder", "sets", "preprocess ms/image, clean", "preprocess ms/image, chexgenbench",
                          "full-size forward ms/image (either mode)"],
                         [[*c, forward_ms[c[0]]] for c in costs]))
    print(f"\n(n = {args.n} images per side; preprocessing timed on up to 16 images, reading the file included; the "
          f"forward pass is the same in both modes (same input size), timed on {args.cost_images} images, batch "
          f"{args.cost_images}, with the full-size random network)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
