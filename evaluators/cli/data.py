"""Data commands: ``demo-data`` (the synthetic demo world), ``inspect-set`` (an image set's counts) and ``label``
(the rule labeler)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import InputError
from .args import add_derive_argument


def add_cli(subparsers) -> None:
    _add_demo_data(subparsers)
    _add_inspect_set(subparsers)
    _add_label(subparsers)


def _add_demo_data(subparsers) -> None:
    p = subparsers.add_parser(
        "demo-data",
        help="write a synthetic chest X-ray world (PNGs + metadata.csv) for offline demos and tests",
        description="Render a seeded population of synthetic patients (persistent anatomy, 1..N studies each, "
        "AP/PA views, the 14 CheXpert labels with a MIMIC-like long tail, report-style prompts) into "
        "OUT/images/*.png and OUT/metadata.csv (columns: path, prompt, patient_id, study_id, view, split, "
        "then the 14 labels as 1/0/-1/blank). The same seed writes byte-identical files.",
    )
    p.add_argument("--out", required=True, help="output folder (created; existing files are overwritten)")
    p.add_argument("--patients", type=int, default=600, help="number of synthetic patients (default: 600)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> identical files (default: 0)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels, 32-1024 (default: 128)")
    p.add_argument("--studies-max", type=int, default=4,
                   help="most studies per patient; counts are long-tailed from 1 (default: 4)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes to render with; output is identical for any value (default: 1)")
    p.set_defaults(func=_cli_demo_data)


def _cli_demo_data(args: argparse.Namespace) -> int:
    from ..demo_world import generate_demo_world

    t0 = time.perf_counter()
    step = max(1, args.patients // 10) if args.patients > 0 else 1

    def progress(done: int, total: int) -> None:
        if done % step == 0 or done == total:
            print(f"  {done}/{total} patients", file=sys.stderr)

    meta = generate_demo_world(args.out, patients=args.patients, seed=args.seed, size=args.size,
                               studies_max=args.studies_max, workers=args.workers, progress=progress)
    with open(meta, encoding="utf-8") as fh:
        n = sum(1 for _ in fh) - 1
    dt = time.perf_counter() - t0
    print(f"wrote {n} images of {args.patients} patients to {Path(args.out)} ({dt:.1f} s, {n / dt:.0f} images/s); "
          f"metadata: {meta}")
    return 0


def _add_inspect_set(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect-set",
        help="load an image set and print its counts per label and split",
        description="Load a folder, CSV, PATH@SPLIT or 'demo' and print image, label and split counts.",
    )
    p.add_argument("set", help="folder, CSV file, PATH@SPLIT or 'demo'")
    p.add_argument("--images-root", default=None, help="folder the CSV's image paths are relative to")
    p.add_argument("--skip-bad", action="store_true", help="skip bad rows / files and list them instead of stopping")
    p.add_argument("--verify", action="store_true", help="decode every image now (slower; finds corrupt files)")
    add_derive_argument(p)
    p.set_defaults(func=_cli_inspect_set)


def _cli_inspect_set(args: argparse.Namespace) -> int:
    from ..imagesets import format_description, load_image_set

    s = load_image_set(args.set, images_root=args.images_root, skip_bad=args.skip_bad, verify_images=args.verify,
                       derive_patient_ids=False if args.no_derive_patient_ids else None)
    print(format_description(s.describe()))
    return 0


def _cli_label(args: argparse.Namespace) -> int:
    from ..labeler import format_explanation, format_labels, label_csv, label_report

    text = args.text
    if args.explain:  # `--explain "TEXT"` on its own labels and explains that text
        if text is not None and text != args.explain:
            raise InputError("Give the text once: `label --explain \"...\"` or `label --text \"...\" --explain`.")
        text = args.explain
    if text is None and args.csv is None:
        raise InputError("Nothing to label: pass --text \"...\", --explain \"...\" or --csv FILE.")
    if text is not None:
        print(format_labels(label_report(text)))
        if args.explain is not None:
            print()
            print(format_explanation(text))
        return 0
    df = label_csv(Path(args.csv), args.prompt_col)
    if args.out is None:
        df.to_csv(sys.stdout, index=False)
        return 0
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(out, index=False)
    except OSError as exc:
        raise InputError(f"Could not write {str(out)!r} ({exc}); choose a writable --out path.") from exc
    print(f"labelled {len(df)} rows from {args.csv} (column {args.prompt_col!r}) -> {out}")
    return 0


def _add_label(subparsers) -> None:
    """Register ``label``: label one text (--text) or a CSV column (--csv, --prompt-col, --out)."""
    p = subparsers.add_parser(
        "label",
        help="label report text or a CSV of prompts with the 14 CheXpert labels (rule labeler)",
        description="Negation- and uncertainty-aware rule labeler: 1 positive, 0 negative, -1 uncertain, "
        "blank not mentioned.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="one report or prompt to label")
    src.add_argument("--csv", help="a CSV file whose --prompt-col column is labelled")
    p.add_argument("--prompt-col", default="prompt", help="text column of --csv (default: prompt)")
    p.add_argument("--out", help="where to write the labelled CSV (default: standard output)")
    p.add_argument(
        "--explain",
        nargs="?",
        const="",
        default=None,
        metavar="TEXT",
        help="also print, per label, the mention, the trigger and the scope that decided it "
        "(`--explain \"TEXT\"` alone labels and explains TEXT; with --text, explains that text)",
    )
    p.set_defaults(func=_cli_label)
