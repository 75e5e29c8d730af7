"""Train the embedded demo generator on the demo world's train split (CPU-sized; see evaluators/generators/demo.py).

    nohup python scripts/train_demo_generator.py --minutes 38 > /tmp/demo_gen.log 2>&1 &

Trains until ``--steps`` or ``--minutes`` runs out, checkpoints every ``--ckpt-every`` steps to ``--ckpt``
(resumed from if present) and exports the EMA weights (fp16 safetensors) + config.json to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evaluators.generators import demo  # noqa: E402


def load_train(world: Path, split: str) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    import pandas as pd
    from PIL import Image

    meta = pd.read_csv(world / "metadata.csv")
    meta = meta[meta["split"] == split].reset_index(drop=True)
    imgs = []
    for p in meta["path"]:
        im = Image.open(world / p).convert("L")
        if im.size != (demo.RESOLUTION, demo.RESOLUTION):
            im = im.resize((demo.RESOLUTION, demo.RESOLUTION), Image.Resampling.BICUBIC)
        imgs.append(np.asarray(im, np.float32) / 255.0)
    x = torch.from_numpy(np.stack(imgs))[:, None] * 2 - 1
    prompts = meta["prompt"].astype(str).tolist()
    return x, demo.prompt_states(prompts), prompts


def export(encoder, unet, out: Path, info: dict, unet_config: dict | None = None) -> None:
    """EMA weights as fp16 safetensors (``encoder.*``, ``unet.*``) + config.json, written atomically."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {f"encoder.{k}": v.detach().half().contiguous() for k, v in encoder.state_dict().items()}
    state.update({f"unet.{k}": v.detach().half().contiguous() for k, v in unet.state_dict().items()})
    tmp = out / (demo.WEIGHTS_FILE + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(out / demo.WEIGHTS_FILE)
    cfg = {"unet": unet_config or demo.UNET_CONFIG, "scheduler": demo.SCHEDULER_CONFIG,
           "presets": {"steps": 20, "guidance": 2.0}, "text_encoder": "rule labeler + learned label-token embeddings",
           "states": list(demo.STATES), "training": info}
    (out / demo.CONFIG_FILE).write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", default=None, help="demo world folder (default: ensure_demo_world(size=64))")
    ap.add_argument("--out", default=str(ROOT / "assets" / "demo_generator"))
    ap.add_argument("--ckpt", default="/tmp/demo_gen_ckpt.pt")
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--minutes", type=float, default=38.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--warmup", type=int, default=20, help="linear learning-rate warm-up steps")
    ap.add_argument("--drop", type=float, default=0.1, help="share of samples trained unconditionally (CFG)")
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.world:
        world = Path(args.world)
    else:
        from evaluators.demo_world import ensure_demo_world

        world = ensure_demo_world(size=demo.RESOLUTION)
    x, states, _ = load_train(world, "train")
    states_t = torch.from_numpy(states)
    print(f"train images {tuple(x.shape)} from {world}", flush=True)

    encoder, unet = demo.build_modules()
    ema_enc, ema_unet = demo.build_modules()
    ema_enc.load_state_dict(encoder.state_dict())
    ema_unet.load_state_dict(unet.state_dict())
    params = list(encoder.parameters()) + list(unet.parameters())
    print(f"params {sum(p.numel() for p in params) / 1e6:.2f}M", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-2)
    sched = demo.make_scheduler("ddpm")
    step = 0
    ckpt = Path(args.ckpt)
    if ckpt.is_file():
        st = torch.load(ckpt, map_location="cpu")
        encoder.load_state_dict(st["encoder"])
        unet.load_state_dict(st["unet"])
        ema_enc.load_state_dict(st["ema_encoder"])
        ema_unet.load_state_dict(st["ema_unet"])
        opt.load_state_dict(st["opt"])
        step = int(st["step"])
        print(f"resumed at step {step}", flush=True)

    ac = sched.alphas_cumprod
    gen = torch.Generator().manual_seed(args.seed + step)
    t0, losses = time.time(), []
    ema_pairs = list(zip(list(ema_enc.parameters()) + list(ema_unet.parameters()), params, strict=True))

    def save() -> None:
        torch.save({"encoder": encoder.state_dict(), "unet": unet.state_dict(), "ema_encoder": ema_enc.state_dict(),
                    "ema_unet": ema_unet.state_dict(), "opt": opt.state_dict(), "step": step}, ckpt)
        export(ema_enc, ema_unet, Path(args.out), {"steps": step, "batch": args.batch, "lr": args.lr,
                                                    "train_images": int(x.shape[0]), "world": world.name})

    encoder.train()
    unet.train()
    while step < args.steps and (time.time() - t0) < args.minutes * 60:
        idx = torch.randint(0, x.shape[0], (args.batch,), generator=gen)
        x0 = torch.nn.functional.pixel_unshuffle(x[idx], demo.PATCH)
        s = states_t[idx].clone()
        s[torch.rand(args.batch, generator=gen) < args.drop] = demo.NULL_STATE
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch,), generator=gen)
        a = ac[t].sqrt().view(-1, 1, 1, 1)
        b = (1 - ac[t]).sqrt().view(-1, 1, 1, 1)
        xt = a * x0 + b * noise
        target = a * noise - b * x0  # v-prediction
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        pred = unet(xt, t, encoder_hidden_states=encoder(s)).sample
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in ema_pairs:
                pe.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if step % 10 == 0:
            el = time.time() - t0
            print(f"step {step} loss {np.mean(losses[-10:]):.4f} lr {lr:.2e} {el / 60:.1f} min", flush=True)
        if step % args.ckpt_every == 0:
            save()
        if not math.isfinite(loss.item()):
            print("non-finite loss; stopping", flush=True)
            return 1
    save()
    print(f"done: {step} steps in {(time.time() - t0) / 60:.1f} min; exported to {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
