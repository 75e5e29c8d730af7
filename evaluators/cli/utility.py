"""``utility``: train a classifier on real / synthetic / both and test it on real images (:mod:`evaluators.utility`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import InputError
from .args import float_range, int_range, knob


def add_cli(subparsers) -> None:
    """Register ``python -m evaluators utility``."""
    p = subparsers.add_parser(
        "utility",
        help="train a classifier on real / synthetic / both and test it on real images",
        description=(
            "Trains a timm classifier (14 CheXpert labels) per setting and tests each on the real test set. "
            "--train sets are concatenated into the 'real' setting; with --synthetic as well, three settings "
            "run: real, synthetic, real+synthetic. A killed run resumes from its last epoch checkpoint."
        ),
    )
    p.add_argument("--train", action="append", default=[], metavar="SET",
                   help="training image set (PATH[@SPLIT] or 'demo'); repeat to concatenate")
    p.add_argument("--synthetic", action="append", default=[], metavar="SET",
                   help="synthetic training image set; adds the 'synthetic' and 'real+synthetic' settings")
    p.add_argument("--test", required=True, metavar="SET", help="real test image set, e.g. labels.csv@test")
    p.add_argument("--model", default=None, help="timm architecture (default: resnet50 on GPU, resnet18 on CPU)")
    p.add_argument("--epochs", type=knob("epochs"), default=20)
    p.add_argument("--image-size", type=knob("image_size"), default=128)
    p.add_argument("--batch-size", type=int_range(1), default=32)
    p.add_argument("--lr", type=float_range(0, lo_open=True), default=None, help="default 1e-3 from random init, 1e-4 pretrained")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int_range(1), default=4, help="epochs without validation-AUC gain before stopping")
    p.add_argument("--policy", choices=("zeros", "ones", "ignore"), default="zeros",
                   help="uncertain (-1) labels: zeros (CheXGenBench), ones, or ignore (masked)")
    p.add_argument("--scheduler", choices=("cosine", "plateau"), default="cosine",
                   help="LR schedule: cosine decay over --epochs, or plateau (CheXGenBench's ReduceLROnPlateau)")
    p.add_argument("--pretrained", nargs="?", const=True, default=False, metavar="WEIGHTS",
                   help="start from ImageNet weights (local HF cache, or a weights file); default random init")
    p.add_argument("--max-train-samples", type=int_range(1), default=None, help="subsample each setting's training rows")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--num-workers", type=int_range(0), default=0)
    p.add_argument("--work-dir", default=None, help="checkpoints per setting (default: next to --out)")
    p.add_argument("--restart", action="store_true", help="ignore existing checkpoints and train from scratch")
    p.add_argument("--out", default="utility.json", help="report JSON")
    p.set_defaults(func=_cli_utility)


def _cli_utility(args: argparse.Namespace) -> int:
    from ..utility.run import format_table, run_utility, standard_settings

    if not args.train and not args.synthetic:
        raise InputError("Give at least one --train (real) or --synthetic set.")
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".json":
        raise InputError(f"--out {args.out!r} should be a .json file.")
    work = Path(args.work_dir) if args.work_dir else out.with_name(out.stem + "_runs")
    settings = standard_settings(args.train, args.synthetic)
    report = run_utility(
        settings,
        args.test,
        model=args.model,
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        policy=args.policy,
        scheduler=args.scheduler,
        patience=args.patience,
        pretrained=args.pretrained,
        device=args.device,
        work_dir=work,
        max_train_samples=args.max_train_samples,
        num_workers=args.num_workers,
        resume=not args.restart,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(format_table(report))
    print(f"model {report['model']} ({report['weights']}), {report['image_size']}px, policy {report['policy']}; "
          f"report written to {out}")
    return 0
