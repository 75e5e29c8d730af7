"""``encoders``: list the feature encoders and whether each is available here (:mod:`evaluators.encoders`)."""

from __future__ import annotations

import argparse


def _cli_encoders(args: argparse.Namespace) -> int:
    from ..encoders import default_encoder, list_encoders

    rows = list_encoders()
    if args.json:
        import json

        print(json.dumps({"default": default_encoder(), "encoders": rows}, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        state = "available  " if r["available"] else "UNAVAILABLE"
        dim = f"{r['dim']}-d" if r["dim"] else "?-d"
        print(f"{r['name']:<{width}}  {state}  {dim:>6}  {r['description']}")
        print(f"{'':<{width}}  {r['reason']}")
        if not r["available"] and r["how_to_provide"]:
            print(f"{'':<{width}}  how to provide: {r['how_to_provide']}")
    print(f"\ndefault encoder: {default_encoder()}")
    return 0


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("encoders", help="list feature encoders and whether each is available here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cli_encoders)
