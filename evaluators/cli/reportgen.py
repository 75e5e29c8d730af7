"""``report-utility`` and ``report-models``: report generation trained on real / synthetic / both
(:mod:`evaluators.reportgen`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError


def add_cli(subparsers) -> None:
    """Register ``report-utility`` and ``report-models``."""
    p = subparsers.add_parser(
        "report-utility",
        help="train a report generator on real / synthetic / both image-report pairs and test it on real images",
        description=(
            "Trains a report-generation model entry per setting and scores its reports for the real test images. "
            "--train sets form the 'real' setting; with --synthetic as well, three settings run: real, synthetic, "
            "real+synthetic, plus a 'most frequent report' baseline. A real image's report is its set's "
            "prompt/report column, a synthetic image's its prompt. A killed run resumes from its last epoch."
        ),
    )
    p.add_argument("--train", action="append", default=[], metavar="SET",
                   help="real training set (PATH[@SPLIT] or 'demo@train'); repeat to concatenate")
    p.add_argument("--synthetic", action="append", default=[], metavar="SET",
                   help="synthetic set (e.g. a generate output folder); adds 'synthetic' and 'real+synthetic'")
    p.add_argument("--test", required=True, metavar="SET", help="real test set with reports, e.g. demo@test")
    p.add_argument("--model", default="captioner", help="report model entry (see `report-models`)")
    p.add_argument("--models-file", action="append", default=[], metavar="FILE",
                   help="extra report model entries (TOML/YAML); repeatable")
    p.add_argument("--epochs", type=int, default=None, help="default: the entry's")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--image-size", type=int, default=None, help="default: the entry's (captioner: 64)")
    p.add_argument("--patience", type=int, default=None, help="epochs without validation gain before stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-train-samples", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=None, help="llava: optimizer steps per epoch (smoke runs)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--chexbert", default=None, metavar="FILE",
                   help="CheXbert weights (chexbert.pth) to add CheXbert F1; default $CHEXGEN_CHEXBERT_WEIGHTS")
    p.add_argument("--no-meteor", action="store_true", help="skip METEOR (starts a Java process, ~10 s)")
    p.add_argument("--no-baseline", action="store_true", help="skip the 'most frequent report' baseline")
    p.add_argument("--no-store", action="store_true", help="do not save the run in the results store")
    p.add_argument("--work-dir", default=None, help="checkpoints per setting (default: next to --out)")
    p.add_argument("--restart", action="store_true", help="ignore existing checkpoints and train from scratch")
    p.add_argument("--out", default="report_utility.json", help="report JSON")
    p.set_defaults(func=_cli_report_utility)

    m = subparsers.add_parser("report-models", help="report-generation models: available or not, and why")
    m.add_argument("--models-file", action="append", default=[], metavar="FILE")
    m.set_defaults(func=_cli_models)


def _cli_report_utility(args: argparse.Namespace) -> int:
    from ..reportgen.run import format_table, paired_line, run_report_utility, standard_settings

    if not args.train and not args.synthetic:
        raise InputError("Give at least one --train (real) or --synthetic set.")
    out = Path(args.out).expanduser()
    if out.suffix.lower() != ".json":
        raise InputError(f"--out {args.out!r} should be a .json file.")
    work = Path(args.work_dir) if args.work_dir else out.with_name(out.stem + "_runs")
    report = run_report_utility(
        standard_settings(args.train, args.synthetic), args.test, model=args.model, models_files=args.models_file,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, image_size=args.image_size,
        patience=args.patience, seed=args.seed, device=args.device, work_dir=work,
        max_train_samples=args.max_train_samples, max_steps=args.max_steps, resume=not args.restart,
        meteor=not args.no_meteor, chexbert=args.chexbert, baseline=not args.no_baseline,
    )
    from ..runs import RunResult, save, write_json

    syn = ",".join(args.synthetic) or None
    saved = save(RunResult("report-utility", report), json_path=out, store=False if args.no_store else None,
                 model=report["model"], synthetic=syn, reference=args.test, settings=_store_settings(report))
    if saved.run_id is not None:
        report["run_id"] = saved.run_id
        write_json(report, out)
    print(format_table(report))
    if report.get("paired"):
        print("clinical F1 micro, paired 95% CI over 1,000 resamples of the test set: " + paired_line(report["paired"]))
    print(f"model {report['model']} ({report['model_kind']}), {report['image_size']} px, {report['n_test']} test "
          f"images; CheXbert: {report['chexbert']}; report written to {out}"
          + (f"; saved as run #{report['run_id']}" if "run_id" in report else ""))
    return 0


def _store_settings(report: dict) -> dict:
    return {k: report[k] for k in ("model", "test", "image_size", "seed", "device")} | {
        "settings": {n: r.get("train") for n, r in report["settings"].items()}}


def _cli_models(args: argparse.Namespace) -> int:
    from ..reportgen.registry import list_models

    for row in list_models(args.models_file):
        state = "available" if row["available"] else "unavailable"
        print(f"{row['name']:<14}{row['kind']:<11}{state:<12}{row['reason']}")
        if row["how_to_provide"]:
            print(f"{'':<37}how to provide: {row['how_to_provide']}")
    return 0
