"""Train the ``demo`` encoder (evaluators/demo_encoder.py) and write assets/demo_encoder.safetensors + .json.

Why this recipe: the encoder serves two purposes. Its 14-label head drives the classifier-based checks
(BCE, uncertain labels masked), and its embedding drives the memorisation search, where a lightly
changed copy of a training image must stay nearer its source than any new patient is to the training
set. So the embedding is trained with a supervised-contrastive loss (positives: two augmented views of
one image, and the other studies of the same patient) under augmentations at least as strong as the
copies it must still recognise (shift, scale, rotation, brightness/contrast, noise, blur, JPEG).

The world is seed 1 by default (the app uses seed 0, so tests on seed-0 worlds are out of sample). Training runs for
a wall-clock budget (``--minutes``) with a time-based cosine schedule, on ``--threads`` CPU threads.

    python scripts/train_demo_encoder.py [--world DIR] [--patients 1800] [--minutes 15] [--threads 2]

The shipped weights came from four resumed stages (``assets/demo_encoder.json`` records each): three on a
1,800-patient seed-1 world (15 + 17 + 30 minutes; macro AUC 0.795, the rare Fracture, Lung Lesion and
Pleural Other at chance), then one on a fresh 6,000-patient seed-2 world with rare findings sampled more
often (the fix: far more positives of the rare labels, and batches that contain them):

    python -m evaluators demo-data --out /tmp/w_s2 --patients 6000 --seed 2 --size 128
    python scripts/train_demo_encoder.py --world /tmp/w_s2 --seed 2 --patients 6000 \
        --init assets/demo_encoder.safetensors --lr 1e-3 --warmup-steps 20 --balance 0.5 --minutes 45 \
        --eval-world <the app's seed-0 world>

which reached macro AUC 0.919 on the seed-2 test split (2,683 images) and 0.920 on the app's seed-0 test split.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from evaluators.demo_encoder import EMBED_DIM, SIZE, WIDTHS, DemoNet
from evaluators.imageio import resize
from evaluators.imagesets import ImageSet, load_image_set
from evaluators.metrics.classification import multilabel_auc
from evaluators.pathologies import PATHOLOGIES, binarize


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def load_pixels(images: ImageSet) -> np.ndarray:
    """All images at SIZE x SIZE, float32 [N, SIZE, SIZE]."""
    return np.stack([resize(images.image(i), SIZE) for i in range(len(images))]).astype(np.float32)


# --------------------------------------------------------------------------------------------------
# Augmentation


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("L"), dtype=np.float32) / 255.0


def augment(x: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """A batch [B, H, W] -> augmented views [B, 1, H, W] (every parameter drawn per image)."""
    b = x.shape[0]
    x = x.copy()
    for i in np.flatnonzero(rng.random(b) < 0.25):
        x[i] = jpeg(x[i], int(rng.integers(50, 95)))
    t = torch.from_numpy(x).unsqueeze(1)
    angle = torch.from_numpy(rng.uniform(-6, 6, b)).float() * math.pi / 180
    scale = torch.from_numpy(rng.uniform(0.86, 1.06, b)).float()  # < 1 zooms in (crop + resize)
    shift = torch.from_numpy(rng.uniform(-0.1, 0.1, (b, 2))).float()  # in [-1, 1] units: +-5% of the side
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(t.shape), align_corners=False)
    t = F.grid_sample(t, grid, mode="bilinear", padding_mode="border", align_corners=False)
    blur = torch.from_numpy(rng.random(b) < 0.25)
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None, :] / 16).view(1, 1, 3, 3)
        t[blur] = F.conv2d(F.pad(t[blur], (1, 1, 1, 1), mode="replicate"), k)
    mean = t.mean(dim=(2, 3), keepdim=True)
    contrast = torch.from_numpy(rng.uniform(0.85, 1.15, (b, 1, 1, 1))).float()
    bright = torch.from_numpy(rng.uniform(-0.12, 0.12, (b, 1, 1, 1))).float()
    t = (t - mean) * contrast + mean + bright
    sigma = torch.from_numpy(rng.uniform(0, 0.035, (b, 1, 1, 1)) * (rng.random((b, 1, 1, 1)) < 0.5)).float()
    t = t + torch.randn_like(t) * sigma
    return t.clamp(0, 1)


def patient_weights(y: np.ndarray, pid_idx: np.ndarray, n_patients: int, power: float) -> np.ndarray | None:
    """Sampling probability per patient: (1 / frequency of the rarest label the patient is positive for) ** power.

    Rare findings (a few dozen patients in a world of thousands) otherwise appear in one batch of ten and
    their head never learns; the power keeps the common labels well represented.
    """
    if power <= 0:
        return None
    pos = np.zeros((n_patients, y.shape[1]), dtype=bool)
    np.logical_or.at(pos, pid_idx, np.nan_to_num(y) > 0)
    freq = np.maximum(pos.mean(axis=0), 1.0 / n_patients)
    inv = np.where(pos, 1.0 / freq, 1.0).max(axis=1)
    w = inv ** power
    return w / w.sum()


# --------------------------------------------------------------------------------------------------
# Losses


def supcon(z: torch.Tensor, groups: torch.Tensor, tau: float) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) on L2-normalised z; same group = positive."""
    z = F.normalize(z, dim=1)
    sim = z @ z.T / tau
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool)
    sim = sim.masked_fill(eye, -1e9)
    pos = (groups[:, None] == groups[None, :]) & ~eye
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    return -((log_prob * pos).sum(1) / pos.sum(1).clamp_min(1)).mean()


def masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    keep = ~torch.isnan(target)
    return F.binary_cross_entropy_with_logits(logits[keep], target[keep])


# --------------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def embed(model: DemoNet, x: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    feats, logits = [], []
    for i in range(0, len(x), batch):
        f, g = model(torch.from_numpy(x[i : i + batch]).unsqueeze(1))
        feats.append(f.numpy())
        logits.append(g.numpy())
    return np.concatenate(feats), np.concatenate(logits)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def memorisation_check(model: DemoNet, train_x: np.ndarray, novel_x: np.ndarray, n_copies: int, seed: int) -> dict:
    """Copies (light perturbations of training images) vs novel patients, by cosine similarity to the train set."""
    from evaluators.privacy.perturb import perturb

    rng = np.random.default_rng(seed)
    train_f = unit(embed(model, train_x)[0])
    novel_f = unit(embed(model, novel_x)[0])
    novel_max = (novel_f @ train_f.T).max(axis=1)
    thr = float(novel_max.max())
    src = rng.choice(len(train_x), size=min(n_copies, len(train_x)), replace=False)
    out: dict = {"n_train": len(train_x), "n_novel": len(novel_x), "n_sources": len(src),
                 "novel_max_sim": {"max": thr, "p99": float(np.quantile(novel_max, 0.99)),
                                   "median": float(np.median(novel_max))}, "kinds": {}}
    for kind in ("identity", "shift", "crop_resize", "brightness", "noise", "jpeg"):
        copies = np.stack([perturb(train_x[i], kind, rng) for i in src]).astype(np.float32)
        f = unit(embed(model, copies)[0])
        sims = f @ train_f.T
        to_src = sims[np.arange(len(src)), src]
        out["kinds"][kind] = {"min_sim_to_source": float(to_src.min()),
                              "median_sim_to_source": float(np.median(to_src)),
                              "share_above_all_novel": float((to_src > thr).mean()),
                              "share_nearest_is_source": float((sims.argmax(1) == src).mean())}
    return out


# --------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", help="an existing demo world folder (default: generate one in a temp dir)")
    ap.add_argument("--patients", type=int, default=1800)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-patients", type=int, default=48)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--supcon-weight", type=float, default=0.5)
    ap.add_argument("--init", help="start from these weights (a safetensors file) instead of random ones")
    ap.add_argument("--warmup-steps", type=int, default=50)
    ap.add_argument("--balance", type=float, default=0.0,
                    help="sample patients with weight (1 / frequency of their rarest positive label) ** BALANCE "
                         "(0: uniform; 0.5 lifts rare findings such as Pleural Other without hiding common ones)")
    ap.add_argument("--eval-world", action="append", default=[],
                    help="also report the test-split AUC of this demo world (repeatable), e.g. the app's seed-0 world")
    ap.add_argument("--nih", default="/work/shared/data/nih-cxr14-sample")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "assets" / "demo_encoder.safetensors"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    tmp = None
    if args.world:
        world = Path(args.world)
    else:
        from evaluators.demo_world import generate_demo_world

        tmp = tempfile.TemporaryDirectory(prefix="demo-encoder-world-")
        world = Path(tmp.name)
        t0 = time.time()
        generate_demo_world(world, patients=args.patients, seed=args.seed, size=SIZE, workers=args.threads)
        log(f"generated world ({args.patients} patients, seed {args.seed}) in {time.time() - t0:.0f}s")
    full = load_image_set(str(world))
    train, test = full.split("train"), full.split("test")
    t0 = time.time()
    train_x, test_x = load_pixels(train), load_pixels(test)
    log(f"loaded {len(train_x)} train / {len(test_x)} test images in {time.time() - t0:.0f}s")
    train_y = binarize(train.labels, "ignore")  # uncertain -> NaN (masked), blank -> 0
    pids = np.array([str(p) for p in train.patient_ids])
    uniq, pid_idx = np.unique(pids, return_inverse=True)
    by_patient = [np.flatnonzero(pid_idx == k) for k in range(len(uniq))]
    patient_p = patient_weights(train_y, pid_idx, len(uniq), args.balance)

    model = DemoNet()
    if args.init:
        from safetensors.torch import load_file

        model.load_state_dict(load_file(args.init))
        log(f"initialised from {args.init}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60
    start = time.time()
    step, seen, last_log = 0, 0, start
    run_bce = run_con = None
    while (elapsed := time.time() - start) < budget:
        frac = elapsed / budget
        lr = args.lr * min(1.0, (step + 1) / max(args.warmup_steps, 1)) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        chosen = rng.choice(len(uniq), size=args.batch_patients, replace=False, p=patient_p)
        idx = np.concatenate([rng.choice(by_patient[k], size=min(2, len(by_patient[k])), replace=False)
                              for k in chosen])
        xb = train_x[idx]
        views = torch.cat([augment(xb, rng), augment(xb, rng)])
        groups = torch.from_numpy(np.concatenate([pid_idx[idx], pid_idx[idx]]))
        target = torch.from_numpy(np.concatenate([train_y[idx], train_y[idx]]))
        model.train()
        z, logits = model(views)
        l_bce, l_con = masked_bce(logits, target), supcon(z, groups, args.tau)
        loss = l_bce + args.supcon_weight * l_con
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += len(views)
        run_bce = l_bce.item() if run_bce is None else 0.95 * run_bce + 0.05 * l_bce.item()
        run_con = l_con.item() if run_con is None else 0.95 * run_con + 0.05 * l_con.item()
        if time.time() - last_log > 60:
            last_log = time.time()
            log(f"step {step} views {seen} ({seen / 2 / len(train_x):.1f} epochs) lr {lr:.2e} "
                f"bce {run_bce:.4f} supcon {run_con:.3f}")
    train_time = time.time() - start
    log(f"trained {step} steps, {seen} views ({seen / 2 / len(train_x):.1f} epochs) in {train_time:.0f}s")

    # BatchNorm statistics re-estimated on clean training images (training saw augmented ones)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(train_x), 256):
            model(torch.from_numpy(train_x[i : i + 256]).unsqueeze(1))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    model.eval()

    _, test_logits = embed(model, test_x)
    demo_auc = multilabel_auc(binarize(test.labels, "ignore"), test_logits, PATHOLOGIES)
    log(f"demo test macro AUC {demo_auc['macro']:.4f}")
    for name, v in demo_auc["per_class"].items():
        log(f"  {name:<28} {'n/a' if v is None else f'{v:.4f}'}")

    extra_auc = {}
    for w in args.eval_world:
        ew = load_image_set(w).split("test")
        _, ew_logits = embed(model, load_pixels(ew))
        extra_auc[w] = multilabel_auc(binarize(ew.labels, "ignore"), ew_logits, PATHOLOGIES)
        extra_auc[w]["n_images"] = len(ew)
        log(f"{w} test split ({len(ew)} images) macro AUC {extra_auc[w]['macro']:.4f}")

    nih_auc = None
    if args.nih and Path(args.nih).exists():
        nih = load_image_set(args.nih)
        _, nih_logits = embed(model, load_pixels(nih))
        nih_auc = multilabel_auc(nih.labels, nih_logits, PATHOLOGIES)  # unmapped labels are NaN: excluded
        nih_auc["n_images"] = len(nih)
        log(f"NIH sample ({len(nih)} images) macro AUC over mapped labels {nih_auc['macro']:.4f}")
    else:
        log(f"NIH sample not found at {args.nih}: skipped")

    mem = memorisation_check(model, train_x, test_x, n_copies=200, seed=args.seed)
    log(f"memorisation: novel max sim {mem['novel_max_sim']}")
    for kind, r in mem["kinds"].items():
        log(f"  {kind:<12} {r}")

    from safetensors.torch import save_file

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out), metadata={"format": "pt", "encoder": "demo"})
    facts = {
        "encoder": "demo",
        "architecture": {"widths": list(WIDTHS), "embed_dim": EMBED_DIM, "input_size": SIZE,
                         "params": sum(p.numel() for p in model.parameters())},
        "world": {"seed": args.seed, "patients": args.patients, "size": SIZE, "train_images": len(train_x),
                  "test_images": len(test_x), "train_patients": len(uniq)},
        "training": {"seconds": round(train_time, 1), "threads": args.threads, "steps": step, "views": seen,
                     "epochs": round(seen / 2 / len(train_x), 2), "batch_patients": args.batch_patients,
                     "lr": args.lr, "balance": args.balance, "init": args.init, "tau": args.tau, "supcon_weight": args.supcon_weight,
                     "losses": {"bce": run_bce, "supcon": run_con}, "torch": torch.__version__},
        "demo_test_auc": demo_auc,
        "other_worlds_test_auc": extra_auc,
        "nih_sample_auc": nih_auc,
        "memorisation_check": mem,
        "label_policy": "train: uncertain masked, blank 0; demo AUC: uncertain excluded",
    }
    if args.init and Path(args.init).with_suffix(".json").is_file():  # the stage this one continued
        prev = json.loads(Path(args.init).with_suffix(".json").read_text())
        facts["previous_stages"] = [*prev.pop("previous_stages", []),
                                    {k: prev.get(k) for k in ("training", "demo_test_auc")}]
        facts["training"]["total_seconds"] = round(
            train_time + sum(st["training"]["seconds"] for st in facts["previous_stages"]), 1)
    out.with_suffix(".json").write_text(json.dumps(facts, indent=2) + "\n")
    log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json').name}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
