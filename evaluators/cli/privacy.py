"""Privacy commands: ``privacy`` (memorisation search and re-identification of a synthetic set),
``privacy-protocol`` (CheXGenBench's M prompts x S seeds protocol) and ``train-reid`` (:mod:`evaluators.privacy`)."""

from __future__ import annotations

import argparse
import json
import sys

from .args import (
    add_derive_argument,
    add_dtype_argument,
    add_options,
    honours_derive_flag,
    int_range,
    knob,
    positive,
)


def add_cli(subparsers) -> None:
    _add_privacy(subparsers)
    _add_train_reid(subparsers)


def _progress(done: int, total: int, desc: str) -> None:
    if done == total:
        print(f"{desc}: {done}/{total}", file=sys.stderr, flush=True)


def _save(result: dict, out: str, *, model: str | None, synthetic: str | None, reference: str | None) -> int:
    from ..runs import RunResult, save

    return save(RunResult("privacy", result), json_path=out, model=model, synthetic=synthetic,
                reference=reference).run_id


def _reid_arg(value: str | None):
    return None if value is None or value.lower() == "none" else value


@honours_derive_flag
def _cli_privacy(args: argparse.Namespace) -> int:
    """The run layer's privacy job (:mod:`evaluators.runs`): the same config gives the app's result."""
    from ..privacy.search import load_set
    from ..privacy.suite import format_summary
    from ..runs import PrivacyConfig, RunContext, partial_on_failure, privacy
    from ..settings import select_device

    ctx = RunContext(args.train, encoder=args.encoder, device=select_device(args.device), dtype=args.encoder_dtype,
                     preprocess=args.preprocess)
    config = PrivacyConfig(reid=_reid_arg(args.reid), k=args.k, percentile=args.percentile, heldout=args.heldout,
                           match=args.match, candidates=args.candidates,
                           calibration_queries=args.calibration_queries or None)
    synthetic = load_set(args.synthetic, "synthetic")
    with partial_on_failure("privacy", synthetic, reference=args.train, settings=config.settings()):
        run = privacy.run(ctx, synthetic, config, progress=_progress)
    run_id = _save(run.data, args.out, model=None, synthetic=args.synthetic, reference=args.train)
    print(format_summary(run.data))
    print(f"results: {args.out} (store run {run_id})")
    return 0


@honours_derive_flag
def _cli_protocol(args: argparse.Namespace) -> int:
    from ..privacy.suite import format_summary, run_privacy_protocol

    result = run_privacy_protocol(args.model, args.train, m_prompts=args.prompts, seeds=range(args.seeds),
                                  encoder=args.encoder, reid=_reid_arg(args.reid), size=args.size, k=args.k,
                                  percentile=args.percentile, heldout=args.heldout, match=args.match,
                                  candidates=args.candidates, prompt_seed=args.prompt_seed,
                                  calibration_queries=args.calibration_queries or None,
                                  steps=args.steps, batch_size=args.batch_size, device=args.device,
                                  encoder_dtype=args.encoder_dtype, encoder_preprocess=args.preprocess,
                                  progress=_progress)
    run_id = _save(result, args.out, model=args.model, synthetic=None, reference=args.train)
    print(format_summary(result))
    print(f"results: {args.out} (store run {run_id})")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    from ..privacy.memorisation import DEFAULT_PERCENTILE
    from ..privacy.search import DEFAULT_CALIBRATION_QUERIES, DEFAULT_CANDIDATES, DEFAULT_MATCH, MATCH_MODES

    p.add_argument("--train", required=True,
                   help="training set (folder, CSV, PATH@SPLIT, 'demo@train') or a reference index folder")
    p.add_argument("--encoder", default=None, help="encoder for the memorisation search (default: best available)")
    p.add_argument("--reid", default="auto",
                   help="re-ID model: 'auto', 'demo', 'chexgenbench', a weights file, or 'none'. auto (default): the "
                        "demo model on demo-world sets only; elsewhere CheXGenBench's checkpoint when present, else "
                        "a model trained on this training set (train-reid), else re-ID is reported unavailable")
    p.add_argument("--k", type=positive(int), default=5, help="training neighbours listed per image (default: 5)")
    p.add_argument("--percentile", type=positive(float), default=DEFAULT_PERCENTILE,
                   help="calibration percentile of new patients' copy scores: flags at level 1 - P/100 "
                        "(default: 99)")
    p.add_argument("--heldout", default=None,
                   help="real images of other patients to calibrate on (default: leave-one-out over the "
                        "training set itself)")
    p.add_argument("--match", choices=MATCH_MODES, default=DEFAULT_MATCH,
                   help="copy score: 'registered' re-ranks the encoder's candidates after registering them "
                        "(rotation, scale, shift) on contrast-invariant fine detail; 'aligned' the older "
                        "shift/crop-tolerant correlation; 'cosine' the encoder similarity alone "
                        f"(default: {DEFAULT_MATCH})")
    p.add_argument("--calibration-queries", type=int_range(1, zero=True), default=DEFAULT_CALIBRATION_QUERIES,
                   help="leave-one-out calibration queries at most, drawn from the training images "
                        f"(0: every image; default: {DEFAULT_CALIBRATION_QUERIES})")
    p.add_argument("--candidates", type=knob("candidates"), default=DEFAULT_CANDIDATES,
                   help=f"encoder candidates verified per image with --match aligned (default: {DEFAULT_CANDIDATES})")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    add_dtype_argument(p)
    add_derive_argument(p)
    p.add_argument("--preprocess", default=None, choices=("auto", "clean", "chexgenbench"),
                   help="encoder preprocessing (see `fidelity --help`); default: the reference index's mode, else auto")


def _add_privacy(subparsers) -> None:
    """``privacy`` (a synthetic set) and ``privacy-protocol`` (a generator, CheXGenBench's protocol)."""
    p = subparsers.add_parser(
        "privacy", help="memorisation search and patient re-identification of a synthetic set",
        description="Search every synthetic image against the whole training set, flag near-copies above a "
                    "threshold calibrated on held-out patients, and score re-identification against the "
                    "nearest training image. Writes JSON and saves the run to the results store.")
    p.set_defaults(func=_cli_privacy)
    add_options(p, _privacy_options)

    q = subparsers.add_parser(
        "privacy-protocol", help="CheXGenBench's privacy protocol: M training prompts x S seeds of a generator",
        description="Generate S images for each of M training prompts; per prompt, re-ID scores and pixel / "
                    "latent distances against the prompt's real image; plus the whole-set memorisation search.")
    q.set_defaults(func=_cli_protocol)
    add_options(q, _protocol_options)


def _privacy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--synthetic", required=True, help="synthetic set (folder, CSV, PATH@SPLIT)")
    _common(p)
    p.add_argument("--out", required=True, help="JSON results file")


def _protocol_options(q: argparse.ArgumentParser) -> None:
    from ..privacy.suite import DEFAULT_SEEDS

    q.add_argument("--model", required=True, help="generator name (python -m evaluators models)")
    _common(q)
    q.add_argument("--prompts", type=positive(int), default=20, help="M, training prompts (default: 20)")
    q.add_argument("--seeds", type=positive(int), default=len(DEFAULT_SEEDS), help="S, seeds 0..S-1 (default: 3)")
    q.add_argument("--size", type=positive(int), default=None, help="image side (default: the model's preset)")
    q.add_argument("--steps", type=knob("steps"), default=None, help="sampling steps (default: preset)")
    q.add_argument("--batch-size", type=positive(int), default=4)
    q.add_argument("--prompt-seed", type=int, default=0, help="seed that draws the prompts (default: 0)")
    q.add_argument("--out", required=True, help="JSON results file")


@honours_derive_flag
def _cli_train_reid(args: argparse.Namespace) -> int:
    from ..privacy.reid import train_reid

    def progress(done: int, total: int, desc: str) -> None:
        if done == total or done % 20 == 0:
            print(f"\r{desc}: {done}/{total}", end="\n" if done == total else "", file=sys.stderr, flush=True)

    result = train_reid(
        args.train, out=args.out, backbone=args.backbone, epochs=args.epochs, image_size=args.image_size,
        pairs_per_epoch=args.pairs_per_epoch, batch_size=args.batch_size, seed=args.seed, device=args.device,
        progress=progress,
    )  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2))
    return 0


def _add_train_reid(subparsers) -> None:
    """``train-reid``: train a siamese re-ID model on an image set with patient ids."""
    p = subparsers.add_parser(
        "train-reid",
        help="train a patient re-identification model (siamese, CheXGenBench head)",
        description="Train a siamese re-ID model on pairs of studies (same / different patient); writes "
        "safetensors plus a JSON sidecar with the held-out-patient AUC. Rerun to resume.",
    )
    p.set_defaults(func=_cli_train_reid)
    add_options(p, _train_reid_options)


def _train_reid_options(p: argparse.ArgumentParser) -> None:
    from ..privacy.reid import BACKBONES

    p.add_argument("--train", required=True, help="image set with patient ids (path, CSV or 'demo')")
    p.add_argument("--out", default=None,
                   help="output weights file (.safetensors); default: the file `privacy --reid auto` looks for this "
                        "training set (CHEXGEN_HOME/reid/...)")
    p.add_argument("--backbone", choices=BACKBONES, default="tiny")
    p.add_argument("--epochs", type=int_range(1), default=5)
    p.add_argument(
        "--image-size", type=int, default=None, help="input side (default: 224 for ResNets, 64 for tiny)"
    )
    p.add_argument("--pairs-per-epoch", type=int_range(2), default=2048)
    p.add_argument("--batch-size", type=int_range(1), default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cuda, mps, cpu (default: best available)")
    add_derive_argument(p)
