"""``python -m evaluators SUBCOMMAND ...``: one subcommand per engine function.

Each engine module that offers a command defines ``add_cli(subparsers)``, which adds its parser and
sets ``func`` to a callable taking the parsed namespace and returning an exit code. User errors
(:class:`InputError`, :class:`UnavailableError`) are printed without a traceback and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import InputError, UnavailableError

# Modules that contribute subcommands, in the order --help lists them.
COMMAND_MODULES = (
    "evaluators.demo_world",
    "evaluators.imagesets",
    "evaluators.labeler",
    "evaluators.encoders",
    "evaluators.index",
    "evaluators.fidelity",
    "evaluators.generators",
    "evaluators.privacy",
    "evaluators.privacy.reid",
    "evaluators.utility",
    "evaluators.readerstudy",
    "evaluators.reportgen",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m evaluators",
        description="CheXGen Studio engine: synthetic chest X-ray fidelity, privacy and utility.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a module not written yet must not break the others
            if exc.name != name:
                raise
            continue
        add = getattr(module, "add_cli", None)
        if add is not None:
            add(sub)
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
