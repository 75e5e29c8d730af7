"""``models`` and ``generate``: thin calls into the generator registry (:mod:`evaluators.generators`)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InputError
from .args import float_range, int_range, knob


def _add_models_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-file", action="append", default=[], metavar="FILE",
                        help="extra model entry file (TOML/YAML); repeatable; overrides built-ins by name")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise InputError(f"--seeds must be integers separated by commas, e.g. 0,1,2 (got {text!r}).") from exc
    if not seeds:
        raise InputError("--seeds is empty; give e.g. 0,1,2.")
    return seeds


def cmd_models(args: argparse.Namespace) -> int:
    from ..generators.pipelines import list_models

    rows = list_models(args.models_file)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        status = "available" if r["available"] else "unavailable"
        what = r["pipeline"] or r["kind"]
        print(f"{r['name']:<{width}}  {status:<11}  {r['kind']:<9} {what:<26} {r['weights'] or ''}")
        print(f"{'':<{width}}    {r['reason']}")
        if not r["available"] and r["how_to_provide"]:
            print(f"{'':<{width}}    how to provide: {r['how_to_provide']}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..generators.generate import _labels_for, generate_to_folder, pathology_prompts, read_prompts

    frame = None
    if args.prompts:
        prompts, frame = read_prompts(args.prompts, args.prompt_col)
    elif args.pathology:
        if args.n is None:
            raise InputError("--pathology needs --n (how many prompts).")
        prompts = pathology_prompts(args.pathology, args.n, seed=args.prompt_seed)
    else:
        raise InputError("Give --prompts CSV or --pathology P --n N.")
    if args.limit is not None:
        prompts = prompts[: args.limit]
        frame = frame.iloc[: args.limit] if frame is not None else None
    labels = _labels_for(prompts, frame, args.pathology)

    def progress(done: int, total: int) -> None:
        print(f"{done}/{total} images", file=sys.stderr, flush=True)

    csv_path = generate_to_folder(
        args.model, prompts, args.out, seeds=_seeds(args.seeds), batch_size=args.batch_size, steps=args.steps,
        guidance=args.guidance, height=args.height, width=args.width, negative_prompt=args.negative_prompt,
        labels=labels, device=args.device, dtype=args.dtype, offload=args.offload,
        attention_slicing=args.attention_slicing, vae_tiling=args.vae_tiling, files=args.models_file,
        progress=progress, on_message=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(csv_path)
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("models", help="list text-to-image models and whether they are available here")
    _add_models_files(p)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_models)

    g = subparsers.add_parser("generate", help="generate images from prompts with a registry model (resumable)")
    g.add_argument("--model", required=True, help="registry name (see `models`)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--prompts", metavar="CSV", help="CSV of prompts (column prompt / annotated_prompt); CSV@SPLIT keeps one split, e.g. metadata.csv@train")
    src.add_argument("--pathology", metavar="P", help="generate --n prompts for one CheXpert pathology")
    g.add_argument("--prompt-col", help="prompt column of --prompts")
    g.add_argument("--n", type=int_range(1), help="number of prompts with --pathology")
    g.add_argument("--prompt-seed", type=int, default=0, help="seed for drawing --pathology prompts")
    g.add_argument("--limit", type=int_range(1), help="only the first N prompts")
    g.add_argument("--seeds", default="0", help="comma-separated seeds; one image per prompt and seed")
    g.add_argument("--batch-size", type=int_range(1), default=4)
    g.add_argument("--steps", type=knob("steps"))
    g.add_argument("--guidance", type=float_range(0))
    g.add_argument("--height", type=int_range(8, 8192))
    g.add_argument("--width", type=int_range(8, 8192))
    g.add_argument("--negative-prompt")
    g.add_argument("--device", help="cuda, mps or cpu (default: best present)")
    g.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], help="default: the entry's (fp32 on CPU)")
    g.add_argument("--offload", choices=["model", "sequential"], help="CPU offload of weights (GPU only)")
    g.add_argument("--attention-slicing", action="store_true")
    g.add_argument("--vae-tiling", action="store_true")
    g.add_argument("--out", required=True, help="output folder (PNGs + generations.csv)")
    _add_models_files(g)
    g.set_defaults(func=cmd_generate)
