"""Command line of the app: ``python app.py [--reference SET] [--public] [--host H] [--port P]``.

Public mode (``--public``, automatic on a Hugging Face Space where SPACE_ID is set) limits uploads and
the queue (environment variables, listed in :func:`launch_options`), the work of each job
(:mod:`evaluators.limits`), its wall-clock time (:mod:`chexgen_ui.jobctl`) and the disk
(:mod:`chexgen_ui.quotas`), and shows no server path (:mod:`chexgen_ui.public_paths`).
"""

from __future__ import annotations

import argparse
import os

from evaluators import settings

PUBLIC_MAX_FILE_SIZE = "200mb"  # CHEXGEN_PUBLIC_MAX_FILE_SIZE: one uploaded file, as sent (zip compressed)
LOCAL_MAX_FILE_SIZE = "2gb"
PUBLIC_QUEUE_SIZE = 16  # CHEXGEN_QUEUE_MAX_SIZE: waiting jobs; more are refused ("queue full") until one ends
DEFAULT_CONCURRENCY = 2  # CHEXGEN_CONCURRENCY: events of one kind running at once (GPU events: CHEXGEN_GPU_CONCURRENCY)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python app.py", description="CheXGen Studio: synthetic chest X-ray workbench.")
    p.add_argument("--reference", default="demo@train",
                   help="reference (training) set: folder, CSV, or 'demo' (default: demo@train, the embedded demo world)")
    p.add_argument("--public", action="store_true", help="public mode: uploads only, no server paths (automatic on a Space)")
    p.add_argument("--host", default=settings.get("GRADIO_SERVER_NAME"))
    p.add_argument("--port", type=int, default=settings.get("GRADIO_SERVER_PORT"))
    return p.parse_args(argv)


def is_public(args: argparse.Namespace) -> bool:
    """--public, or running on a Hugging Face Space (SPACE_ID is set there)."""
    return bool(args.public or settings.get("SPACE_ID"))


def _int_env(name: str, default: int | None) -> int | None:
    return settings.int_setting(name, default)


def launch_options(public: bool) -> tuple[dict, dict]:
    """(``demo.queue`` kwargs, ``demo.launch`` kwargs) for the mode.

    Public: one file at most CHEXGEN_PUBLIC_MAX_FILE_SIZE (default 200mb), at most CHEXGEN_QUEUE_MAX_SIZE
    (default 16) jobs waiting, so one user cannot fill the queue. Local: 2gb files, no queue bound.
    """
    queue = {"default_concurrency_limit": _int_env("CHEXGEN_CONCURRENCY", DEFAULT_CONCURRENCY),
             "max_size": _int_env("CHEXGEN_QUEUE_MAX_SIZE", PUBLIC_QUEUE_SIZE if public else None)}
    size = (settings.get("CHEXGEN_PUBLIC_MAX_FILE_SIZE") or PUBLIC_MAX_FILE_SIZE) if public else LOCAL_MAX_FILE_SIZE
    # The zips and result files handed to visitors live under CHEXGEN_HOME (exports/, runs/), which Gradio refuses to
    # serve unless allowed (it only allows the working and temp folders): with the default ~/.cache/chexgen every
    # download failed. Only these two areas are allowed, never CHEXGEN_HOME itself (weights, features, indexes).
    from evaluators.settings import subdir

    launch = {"show_error": True, "enable_monitoring": False, "max_file_size": size,
              "allowed_paths": [str(subdir("exports")), str(subdir("runs"))]}
    return queue, launch


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    args = parse_args(argv)
    from .app import build_app

    public = is_public(args)
    queue, launch = launch_options(public)
    demo = build_app(reference=args.reference, public=public)
    demo.queue(**queue).launch(server_name=args.host, server_port=args.port, **launch)
