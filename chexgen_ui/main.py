"""Command line of the app: ``python app.py [--reference SET] [--public] [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import os


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="CheXGen Studio: synthetic chest X-ray workbench.")
    p.add_argument("--reference", default="demo@train",
                   help="reference (training) set: folder, CSV, or 'demo' (default: demo@train, the embedded demo world)")
    p.add_argument("--public", action="store_true", help="public mode: uploads only, no server paths (automatic on a Space)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = parse_args(argv)
    from .app import build_app

    demo = build_app(reference=args.reference, public=args.public or bool(os.environ.get("SPACE_ID")))
    demo.queue(default_concurrency_limit=2).launch(
        server_name=args.host, server_port=args.port, show_error=True, enable_monitoring=False,
        max_file_size="2gb",
    )
