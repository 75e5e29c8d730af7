"""``utility``: train a classifier on real / synthetic / both and test it on real images (:mod:`evaluators.utility`)."""

from __future__ import annotations

import argparse
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
    p.add_argument("--test", default=None, metavar="SET", help="real test image set, e.g. labels.csv@test")
    p.add_argument("--reference", default=None, metavar="SET",
                   help="the app's utility axis: train on --synthetic beside a real baseline trained on SET (cached "
                        "across runs) and test both on SET's test split; the same job and JSON as the app")
    p.add_argument("--mixed", action="store_true", help="with --reference: also the real+synthetic setting")
    p.add_argument("--swap", action="store_true",
                   help="also CheXGenBench's 'mixed' setting: the real training images with half of them swapped for "
                        "synthetic ones (seeded; the training size stays the real setting's)")
    p.add_argument("--no-store", action="store_true", help="do not save the run to the results store (leaderboard)")
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
    from ..runs import RunResult, save
    from ..runs.utility import headline
    from ..utility.run import auc_line, format_table, run_utility, standard_settings

    if args.reference:
        return _cli_reference_utility(args)
    if not args.test:
        raise InputError("Give --test SET (the real test images), or --reference SET for the app's utility job.")
    if not args.train and not args.synthetic:
        raise InputError("Give at least one --train (real) or --synthetic set.")
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".json":
        raise InputError(f"--out {args.out!r} should be a .json file.")
    work = Path(args.work_dir) if args.work_dir else out.with_name(out.stem + "_runs")
    settings = standard_settings(args.train, args.synthetic, swap=args.swap)
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
    report["utility"] = headline(report["settings"])  # the leaderboard's columns, as the app's runs
    saved = save(RunResult("utility", report), json_path=out, store=False if args.no_store else None,
                 synthetic=",".join(args.synthetic) or None, reference=args.test,
                 settings={k: report.get(k) for k in ("model", "epochs", "image_size", "policy", "scheduler", "seed",
                                                      "test")})
    print(format_table(report))
    print(auc_line(report["settings"], report.get("paired")))
    if saved.run_id is not None:
        print(f"saved as run {saved.run_id} in the results store")
    print(f"model {report['model']} ({report['weights']}), {report['image_size']}px, policy {report['policy']}; "
          f"report written to {out}")
    return 0


def _cli_reference_utility(args: argparse.Namespace) -> int:
    """``--reference``: :func:`evaluators.runs.utility.run`, the job the app's Batch tab runs."""
    from ..imagesets import load_image_set
    from ..runs import RunContext, run_folder, save
    from ..runs import utility as job
    from ..settings import select_device
    from ..utility.models import default_model
    from ..utility.run import auc_line

    if len(args.synthetic) != 1 or args.train:
        raise InputError("With --reference give exactly one --synthetic set and no --train (the reference is the "
                         "real training set).")
    ctx = RunContext(args.reference, device=select_device(args.device))
    synthetic = load_image_set(args.synthetic[0])
    config = job.UtilityConfig(model=args.model or default_model(ctx.device), epochs=args.epochs,
                               image_size=args.image_size, mixed=args.mixed, swap=args.swap,
                               batch_size=args.batch_size,
                               seed=args.seed, policy=args.policy, scheduler=args.scheduler)
    work = Path(args.work_dir) if args.work_dir else run_folder("utility")
    run = job.run(ctx, synthetic, config, run_dir=work, source=args.synthetic[0])
    saved = save(run, json_path=args.out, store=False if args.no_store else None, model=args.synthetic[0],
                 synthetic=synthetic.name, reference=args.reference)
    print(auc_line(run.data["per_setting"], run.data.get("paired")))
    print(f"results: {args.out}" + (f" (store run {saved.run_id})" if saved.run_id is not None else ""))
    return 0
