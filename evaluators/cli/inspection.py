"""Inspection and the leaderboard, as the app shows them: ``inspect`` (each image's nearest training images and
its privacy verdict, :mod:`evaluators.runs.inspect`) and ``leaderboard`` (the results store,
:mod:`evaluators.leaderboard`)."""

from __future__ import annotations

import argparse

from .args import int_range


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect", help="each image's nearest training images and its verdict (memorised / same patient / new)",
        description="What the app's Generate & inspect tab shows, for a few images made elsewhere: the nearest "
                    "reference images, the memorisation search's copy score, p-value and threshold, the re-ID score "
                    "and the one verdict per image. For a whole synthetic set use `privacy`.")
    p.add_argument("--reference", required=True, help="reference (training) set: folder, CSV, 'demo', PATH@SPLIT, "
                   "or an index folder")
    p.add_argument("--images", required=True, help="the images to inspect: a folder or a CSV")
    p.add_argument("--encoder", default=None, help="encoder of the reference index (default: the best available)")
    p.add_argument("--k", type=int_range(1, 50), default=5, help="training neighbours listed per image (default 5)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: best available)")
    p.add_argument("--json", default=None, help="also write the per-image records (verdict, neighbours) here")
    p.add_argument("--zip", default=None, help="also write the app's export zip (PNGs + metadata.csv) in this folder")
    p.set_defaults(func=_cli_inspect)

    b = subparsers.add_parser("leaderboard", help="the results store's runs with their headline numbers",
                              description="The app's Leaderboard tab: every saved run, newest first; --compare A B "
                                          "shows two runs side by side.")
    b.add_argument("--kind", default=None, help="only runs of this kind (fidelity, privacy, utility, ...)")
    b.add_argument("--store", default=None, help="the results store file (default: CHEXGEN_HOME/results.sqlite)")
    b.add_argument("--compare", nargs=2, type=int, metavar=("A", "B"), default=None, help="two run ids side by side")
    b.add_argument("--csv", default=None, help="also write the table as CSV here")
    b.set_defaults(func=_cli_leaderboard)


def _cli_inspect(args: argparse.Namespace) -> int:
    from ..imagesets import load_image_set
    from ..runs import RunContext, inspect
    from ..runs.export import export_zip

    ctx = RunContext(args.reference, encoder=args.encoder, device=args.device)
    gen = inspect.from_image_set(load_image_set(args.images))
    inspect.inspect(ctx, gen, k=args.k)
    for i in range(len(gen)):
        print(f"\n== image {i}: {gen.prompts[i][:80]}")
        print(inspect.verdict_text(ctx, gen, i))
        print(inspect.neighbour_table(gen, i).to_string(index=False, max_colwidth=60))
    from ..privacy.verdict import count, counts_text

    print("\nverdicts: " + counts_text(count(inspect.image_verdict(ctx, gen, i) for i in range(len(gen)))))
    if args.json:
        from ..runs import write_json

        print(f"wrote {write_json({'images': inspect.records(ctx, gen), 'notes': gen.notes}, args.json)}")
    if args.zip:
        print(f"wrote {export_zip(ctx, gen, args.zip)}")
    return 0


def _cli_leaderboard(args: argparse.Namespace) -> int:
    from ..leaderboard import compare_runs, leaderboard
    from ..store import ResultsStore

    store = ResultsStore(args.store)
    table = compare_runs(store, *args.compare) if args.compare else leaderboard(store, args.kind)
    print(table.to_string(index=False) if len(table) else f"no runs in {store.path}")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    return 0
