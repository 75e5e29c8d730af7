"""``embedding-map``: the app's Embedding map as a table (:mod:`evaluators.runs.embedding_map`), optionally coloured by
the privacy job's C_T cells (:mod:`evaluators.runs.ct_map`)."""

from __future__ import annotations

import argparse


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "embedding-map", help="the embedding map's points as CSV (UMAP x, y; pathology group or C_T cell and Z)",
        description="The app's Embedding map as a CSV: one row per reference image (UMAP x, y, pathology group, "
                    "labels, report, patient, path). --colour ct-cell adds each point's C_T cell, the cell's Z "
                    "(< 0: the synthetic images of that cell sit closer to the training images than held-out real "
                    "images do: copying), whether C_T scored it and why not, and one row per synthetic image. The "
                    "cells are those of a privacy run (--privacy its JSON, or --run its results-store id), or of "
                    "C_T computed now for --synthetic. x, y are empty when the index has no UMAP map.")
    p.add_argument("--reference", required=True,
                   help="training set (folder, CSV, PATH@SPLIT, 'demo@train') or a reference index folder")
    p.add_argument("--colour", choices=("pathology", "ct-cell"), default="pathology",
                   help="pathology (default) or ct-cell: the C_T data-copying cell of each point")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--privacy", default=None, help="ct-cell: a privacy run's JSON (`privacy --out`)")
    which.add_argument("--run", type=int, default=None, help="ct-cell: a privacy run's id in the results store")
    which.add_argument("--synthetic", default=None, help="ct-cell: compute C_T now for this synthetic set")
    p.add_argument("--heldout", default=None, help="with --synthetic: held-out real images (default: the training "
                   "source's other splits, as the privacy job)")
    p.add_argument("--store", default=None, help="results store for --run (default: CHEXGEN_HOME/results.sqlite)")
    p.add_argument("--encoder", default=None, help="encoder (default: the index's, else the best available)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--no-umap", action="store_true", help="do not fit a UMAP map when the index has none (x, y "
                   "empty; the cells and groups only)")
    p.add_argument("--out", required=True, help="the CSV to write")
    p.set_defaults(func=_cli_map)


def _cli_map(args: argparse.Namespace) -> int:
    import json

    from ..errors import InputError
    from ..runs import RunContext, ct_map
    from ..settings import select_device

    given = [o for o in ("privacy", "run", "synthetic") if getattr(args, o) is not None]
    if args.colour == "pathology" and given:
        raise InputError(f"--{given[0]} needs --colour ct-cell.")
    if args.colour == "ct-cell" and not given:
        raise InputError("--colour ct-cell needs the cells: --privacy RUN.json, --run ID or --synthetic SET.")
    ctx = RunContext(args.reference, encoder=args.encoder, device=select_device(args.device), umap=not args.no_umap)
    cells = None
    if args.privacy is not None:
        try:
            with open(args.privacy) as fh:
                result = json.load(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"Cannot read the privacy run {args.privacy}: {exc}") from exc
        cells = ct_map.from_result(ctx, result, f"privacy run {args.privacy}")
    elif args.run is not None:
        from ..store import ResultsStore

        cells = ct_map.from_store(ctx, ResultsStore(args.store), str(args.reference), run_id=args.run)
    elif args.synthetic is not None:
        cells = ct_map.fresh(ctx, args.synthetic, heldout=args.heldout)
    table = ct_map.table(ctx, cells)
    table.to_csv(args.out, index=False)
    if cells is not None:
        print(ct_map.summary_line(cells))
        print(cells.cells.to_string(index=False))
    if table["x"].isna().all():
        print("note: the reference index has no UMAP map, so x and y are empty (rebuild it without --no-umap)")
    print(f"wrote {args.out} ({len(table)} points)")
    return 0
