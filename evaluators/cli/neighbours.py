"""``neighbours``: "search from this image", the nearest training images of one image with its copy score and
verdict (:mod:`evaluators.runs.neighbours`; the app's Generate tab and Embedding map show the same)."""

from __future__ import annotations

import argparse
import json

from .args import add_dtype_argument, add_options, int_range, knob


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "neighbours", help="the nearest training images of one image (a file or a training row), with its copy score",
        description="Search from one image: its k nearest training images by encoder similarity (same-patient "
                    "neighbours marked when patient ids exist), the memorisation search's copy score, p-value and "
                    "verdict. A training image (--row) is searched against the other training images: itself is "
                    "left out, and its copy score is against other patients' images.")
    p.add_argument("--reference", required=True,
                   help="training set (folder, CSV, PATH@SPLIT, 'demo@train') or a reference index folder")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--image", help="an image file (PNG, JPEG, DICOM...)")
    which.add_argument("--row", type=int_range(0), help="a training image by its row in the reference index")
    p.add_argument("--encoder", default=None, help="encoder (default: the index's, else the best available)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--out", default=None, help="also write the result as JSON to this file")
    p.set_defaults(func=_cli_neighbours)
    add_options(p, _engine_options)


def _engine_options(p: argparse.ArgumentParser) -> None:
    """Options whose ranges come from engine modules (added when the command is parsed)."""
    p.add_argument("--k", type=knob("k"), default=5, help="training neighbours listed (default: 5)")
    add_dtype_argument(p)


def _cli_neighbours(args: argparse.Namespace) -> int:
    from ..runs import RunContext
    from ..runs import neighbours as nb
    from ..settings import select_device

    ctx = RunContext(args.reference, encoder=args.encoder, device=select_device(args.device),
                     dtype=args.encoder_dtype)
    if args.image is not None:
        result = nb.from_file(ctx, args.image, k=args.k)
    else:
        result = nb.from_training_row(ctx, args.row, k=args.k)
    print(nb.format_text(result))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result.as_dict(), fh, indent=2, default=str)
        print(f"results: {args.out}")
    return 0
