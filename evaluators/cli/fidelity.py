"""``fidelity``: a synthetic set against a real one (:func:`evaluators.runs.fidelity.run`)."""

from __future__ import annotations

import argparse
import sys

from .args import add_dtype_argument, add_options, add_preprocess_argument, int_range, knob


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "fidelity",
        help="FID, KID, Inception Score, Precision/Recall/Density/Coverage, alignment; overall and per pathology",
        description=(
            "Fidelity of a synthetic set against a real one, from cached features (one encoder pass per image). "
            "Writes JSON (and a CSV with CheXGenBench's column names)."
        ),
    )
    p.set_defaults(func=_cli_fidelity)
    add_options(p, _fidelity_options)


def _fidelity_options(p: argparse.ArgumentParser) -> None:
    from ..fidelity import DEFAULT_MIN_COUNT, MATCH_MODES
    from ..limits import KNOBS

    p.add_argument("--real", required=True, help="real set (folder, CSV, 'demo', PATH@SPLIT) or a reference index folder")
    p.add_argument("--synthetic", required=True, help="synthetic set (folder, CheXGenBench CSV, PATH@SPLIT)")
    p.add_argument("--real-images-root", default=None, help="folder that the real CSV's image paths are under")
    p.add_argument("--synthetic-images-root", default=None, help="folder that the synthetic CSV's image paths are under")
    p.add_argument("--encoder", action="append", default=None,
                   help="encoder name, repeatable (default: the best available, plus inception when available)")
    p.add_argument("--per-pathology", action="store_true", help="also compute every metric for each of the 14 pathologies")
    p.add_argument("--match", choices=MATCH_MODES, default="labels",
                   help="per-pathology subsets: by labels (default) or CheXGenBench's prompt matching")
    p.add_argument("--min-count", type=int_range(1), default=DEFAULT_MIN_COUNT,
                   help=f"skip a pathology with fewer images on either side (default {DEFAULT_MIN_COUNT})")
    p.add_argument("--bootstrap", type=int_range(2, KNOBS["bootstrap"].local_max, zero=True), default=0, metavar="N", help="N bootstrap resamples for 95%% intervals")
    p.add_argument("--k", type=knob("k"), default=5, help="neighbours for Precision/Recall/Density/Coverage (default 5)")
    p.add_argument("--kid-subsets", type=knob("kid_subsets"), default=100, help="KID subsets (default 100, as CheXGenBench)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    add_dtype_argument(p)
    add_preprocess_argument(p)
    p.add_argument("--batch-size", type=int_range(1), default=64)
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable synthetic images and list them")
    p.add_argument("--no-alignment", action="store_true", help="skip the classifier-based alignment")
    p.add_argument("--fd-inf", action="store_true",
                   help="also FD_inf (Chong and Forsyth: FID extrapolated to infinite samples, with its error), overall "
                        "and per pathology; opt-in: ~105 Frechet distances per row")
    p.add_argument("--out", required=True, help="JSON results file")
    p.add_argument("--csv", default=None, help="also write a CSV with CheXGenBench's column names")
    p.add_argument("--model", default=None, help="model name to record with the run in the results store")
    p.add_argument("--no-store", action="store_true", help="do not save the run to the results store (leaderboard)")


def _cli_fidelity(args: argparse.Namespace) -> int:
    """The run layer's fidelity job (:mod:`evaluators.runs`): the same config gives the app's result."""
    from ..fidelity import format_summary, load_real
    from ..imagesets import load_image_set
    from ..runs import FidelityConfig, RunContext, fidelity, partial_on_failure, save
    from ..settings import select_device

    real = args.real if args.real_images_root is None else load_real(args.real, args.real_images_root)
    ctx = RunContext(real, encoder=args.encoder[0] if args.encoder else None, device=select_device(args.device),
                     dtype=args.encoder_dtype, preprocess=args.preprocess)
    synthetic = load_image_set(args.synthetic, images_root=args.synthetic_images_root, skip_bad=args.skip_bad)
    config = FidelityConfig(encoders=tuple(args.encoder) if args.encoder else None, per_pathology=args.per_pathology,
                            match=args.match, bootstrap=args.bootstrap, min_count=args.min_count, k=args.k,
                            kid_subsets=args.kid_subsets, seed=args.seed, batch_size=args.batch_size,
                            skip_bad=args.skip_bad, alignment=not args.no_alignment, preprocess=args.preprocess,
                            include=("FD_inf",) if args.fd_inf else ())
    from ..extraction_cost import first_run_cost

    cost = first_run_cost(ctx, synthetic, config.encoders)  # a first FRD run on a large new set: say what it costs
    if cost:
        print(cost, file=sys.stderr, flush=True)
    with partial_on_failure("fidelity", synthetic, store=False if args.no_store else None, model=args.model,
                            reference=args.real, settings=config.settings()):  # a failed or stopped run leaves a row
        run = fidelity.run(ctx, synthetic, config)
    saved = save(run, json_path=args.out, csv_path=args.csv, store=False if args.no_store else None,
                 model=args.model, synthetic=args.synthetic, reference=args.real)
    if saved.run_id is not None:
        print(f"saved as run {saved.run_id} in the results store")
    print(format_summary(run.data))
    print(f"results: {args.out}" + (f", {args.csv}" if args.csv else ""))
    return 0
