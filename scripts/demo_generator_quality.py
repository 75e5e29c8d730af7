"""How good is the demo generator? Conditional fidelity and FID on held-out demo-world prompts.

    python scripts/demo_generator_quality.py [--model demo] [--n 250] [--steps 20] [--guidance 2]

- Prompts: the demo world's (64 px, seed 0) *test* split; one image per prompt (seed = row number).
- Label agreement: the demo classifier (``load_encoder("demo")``, trained on seed-1 and seed-2 worlds) scores
  each generated image; its logits are compared with the prompt's labels (rule labeler, uncertain ->
  0) by ROC AUC per pathology with >= ``--min-count`` positives and negatives; macro over those.
  The same AUC on the real test images is printed as the ceiling.
- FID: demo-encoder features (else the ``pixels`` encoder) of generated vs real test images.
- Time: seconds per generated image on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluators.errors import UnavailableError  # noqa: E402
from evaluators.pathologies import PATHOLOGIES, binarize  # noqa: E402


def encode(encoder, images: list[np.ndarray], batch: int = 64) -> dict[str, np.ndarray]:
    import torch

    outs: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(images), batch):
        x = torch.stack([encoder.preprocess(np.asarray(im, np.float32)) for im in images[i:i + batch]])
        for k, v in encoder(x).items():
            outs.setdefault(k, []).append(v.numpy())
    return {k: np.concatenate(v) for k, v in outs.items()}


def label_auc(y: np.ndarray, logits: np.ndarray, min_count: int) -> tuple[float | None, dict[str, float]]:
    from evaluators.metrics.classification import binary_auc

    per = {}
    for j, name in enumerate(PATHOLOGIES):
        if name == "No Finding":
            continue
        col = y[:, j]
        if min(int((col == 1).sum()), int((col == 0).sum())) < min_count:
            continue
        auc = binary_auc(col, logits[:, j])
        if auc is not None:
            per[name] = auc
    return (float(np.mean(list(per.values()))) if per else None), per


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--n", type=int, default=250, help="number of test prompts (all if fewer)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--min-count", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", default=None, help="write the generated images as a .npy stack here")
    args = ap.parse_args(argv)

    import torch

    import evaluators.generators.baselines  # registers the builtins
    import evaluators.generators.demo  # noqa: F401
    from evaluators.demo_world import ensure_demo_world
    from evaluators.encoders import load_encoder
    from evaluators.generators import load_generator
    from evaluators.imagesets import load_image_set
    from evaluators.labeler import label_reports
    from evaluators.metrics.fidelity import fid

    torch.set_num_threads(args.threads)
    world = ensure_demo_world(size=64)
    test = load_image_set(f"{world}@test")
    n = min(args.n, len(test))
    prompts = test.prompts[:n]
    real = [test.image(i) for i in range(n)]
    y = binarize(label_reports(prompts), "zeros")

    gen = load_generator(args.model)
    t0 = time.perf_counter()
    fake = gen.generate(prompts, list(range(n)), steps=args.steps, guidance=args.guidance, batch_size=args.batch,
                        height=64, width=64)
    per_image = (time.perf_counter() - t0) / n
    print(f"model {args.model}: {n} images from held-out test prompts, {per_image:.3f} s/image "
          f"(steps {args.steps or gen.presets.get('steps')}, guidance {args.guidance or gen.presets.get('guidance')}, "
          f"batch {args.batch}, {torch.get_num_threads()} threads)")
    if args.save:
        np.save(args.save, np.stack(fake))

    try:
        enc = load_encoder("demo")
        enc_name = "demo"
    except UnavailableError as exc:
        print(f"demo encoder unavailable ({exc}); label AUC skipped, FID with the pixels encoder")
        enc, enc_name = load_encoder("pixels"), "pixels"
    f_real, f_fake = encode(enc, real), encode(enc, fake)
    if "logits" in f_fake:
        macro, per = label_auc(y, f_fake["logits"], args.min_count)
        macro_r, per_r = label_auc(y, f_real["logits"], args.min_count)
        print(f"label AUC (demo classifier on generated images vs prompt labels): macro {macro:.3f} over {len(per)}")
        print(f"  ceiling (same classifier on the real test images):             macro {macro_r:.3f}")
        for name in per:
            print(f"  {name:28s} generated {per[name]:.3f}   real {per_r[name]:.3f}   "
                  f"positives {int((y[:, PATHOLOGIES.index(name)] == 1).sum())}")
    print(f"FID ({enc_name} features, {n} vs {n}): generated vs real test {fid(f_real['features'], f_fake['features']):.2f}")
    # a floor for comparison: real train images vs real test images
    train = load_image_set(f"{world}@train")
    f_train = encode(enc, [train.image(i) for i in range(min(n, len(train)))])
    print(f"  floor: real train vs real test {fid(f_real['features'], f_train['features']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
