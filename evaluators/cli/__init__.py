"""``python -m evaluators COMMAND ...``: every argparse parser of the engine, one module per command group.

Each module of this package defines ``add_cli(subparsers)``, which adds its commands' parsers and sets
``func`` to a handler taking the parsed namespace and returning an exit code. Handlers are thin: they
call the engine functions of the domain modules (``evaluators.fidelity``, ``evaluators.privacy``, ...),
which hold no CLI code. User errors (:class:`InputError`, :class:`UnavailableError`) are printed without
a traceback and exit with 2.

A new command goes into the module of its group (or a new module listed in :data:`GROUPS`). Group modules
import no engine module at import time: handlers import what they call, and options whose choices or
defaults come from an engine module are added through :func:`.args.add_options`, so ``--help`` and
:func:`build_parser` stay fast (no torch).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import InputError, UnavailableError
from .args import CommandParser

# Command groups, in the order --help lists their commands.
GROUPS = (
    "data",  # demo-data, inspect-set, label
    "encoders",  # encoders
    "index",  # index
    "fidelity",  # fidelity
    "generate",  # models, generate
    "privacy",  # privacy, privacy-protocol, train-reid
    "neighbours",  # neighbours ("search from this image")
    "embedding_map",  # embedding-map (the map's points, coloured by pathology or C_T cell)
    "inspection",  # inspect, leaderboard
    "utility",  # utility
    "readerstudy",  # reader-study create|status|results|list
    "reportgen",  # report-utility, report-models
)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m evaluators",
        description="CheXGen Studio engine: synthetic chest X-ray fidelity, privacy and utility.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in GROUPS:
        importlib.import_module(f"{__name__}.{name}").add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except (InputError, UnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; what was written so far is kept and a rerun resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
