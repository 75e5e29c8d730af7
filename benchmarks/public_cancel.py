"""Public app: how fast a long job stops, and how soon the next visitor is served.

    python benchmarks/public_cancel.py [--repeat 3]

Starts the public app (``--public``, a 10-patient 32 px world, ``pixels`` encoder) on 127.0.0.1, submits a
per-pathology fidelity job with 100,000 bootstrap resamples through gradio_client, and once it reports
bootstrap progress: (1) cancels it through the API and measures the seconds until a second client's
Generate (same GPU queue, one slot) returns and until the job's ``partial`` row is saved; (2) starts it
again from a separate process, kills that process (the visitor closes the tab) and measures the seconds
until the row saying "client disconnected" appears. Prints medians over ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import _common as C

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ARGS = ("generate N from a model", None, "", "reference-oracle", 12, 1, 100_000, 1)
PROMPT = "Small left pleural effusion."


def _partials(studio) -> int:
    return sum(r["status"] == "partial" for r in studio.store().runs(kind="fidelity"))


def _wait_partial(studio, before: int, timeout: float = 60.0) -> float:
    t0 = time.monotonic()
    while _partials(studio) <= before:
        if time.monotonic() - t0 > timeout:
            raise SystemExit("no partial row: the job did not stop")
        time.sleep(0.02)
    return time.monotonic() - t0


def _wait_bootstrap(job) -> None:
    while not any("bootstrap" in (p.desc or "") for p in (job.status().progress_data or [])):
        if job.done():
            raise SystemExit(f"the job ended early: {job.exception()}")
        time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("CHEXGEN_HOME", tempfile.mkdtemp(prefix="chexgen-cancel-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["CHEXGEN_PUBLIC_MAX_BOOTSTRAP"] = "100000"
    from gradio_client import Client

    from chexgen_ui.app import build_app
    from chexgen_ui.services import Studio
    from tests.ui_world import make_world

    world = make_world(tempfile.mkdtemp(prefix="chexgen-cancel-world-"), patients=10, size=32)
    studio = Studio(f"{world}@train", public=True, encoder="pixels", device="cpu", umap=False)
    studio.index()
    studio.generate("reference-oracle", PROMPT, n=1)
    demo = build_app(studio=studio)
    demo.queue(max_size=8).launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                                  enable_monitoring=False)
    url = demo.local_url
    C.print_header("Public app: cancel, disconnect and the next visitor (100,000 bootstrap resamples, tiny world)")
    served, stopped, gone = [], [], []
    visitor = Path(tempfile.mkdtemp()) / "visitor.py"
    visitor.write_text(textwrap.dedent(f"""
        import sys, time
        from gradio_client import Client
        job = Client(sys.argv[1], verbose=False, download_files=False).submit(*{ARGS!r}, api_name="/on_pp")
        while not any("bootstrap" in (p.desc or "") for p in (job.status().progress_data or [])):
            time.sleep(0.05)
        print("running", flush=True)
        time.sleep(600)
    """))
    try:
        for _ in range(args.repeat):
            before = _partials(studio)
            job = Client(url, verbose=False, download_files=False).submit(*ARGS, api_name="/on_pp")
            _wait_bootstrap(job)
            t0 = time.monotonic()
            job.cancel()
            Client(url, verbose=False, download_files=False).predict("reference-oracle", PROMPT, 1, 0, 1, 0.0,
                                                                     api_name="/on_generate")
            served.append(time.monotonic() - t0)
            stopped.append(served[-1] + _wait_partial(studio, before))

            before = _partials(studio)
            proc = subprocess.Popen([sys.executable, str(visitor), url], stdout=subprocess.PIPE, text=True,
                                    env={**os.environ, "PYTHONPATH": str(REPO)})
            assert proc.stdout.readline().strip() == "running"
            proc.kill()
            proc.wait()
            gone.append(_wait_partial(studio, before))
    finally:
        demo.close()
    rows = [["cancel -> second client's Generate served", f"{statistics.median(served):.2f}", f"{max(served):.2f}"],
            ["cancel -> job stopped, saved as partial (at most: read after the Generate)", f"{statistics.median(stopped):.2f}", f"{max(stopped):.2f}"],
            ["client killed -> job stopped ('client disconnected')", f"{statistics.median(gone):.2f}",
             f"{max(gone):.2f}"]]
    print(C.markdown_table(["event", f"median s ({args.repeat} runs)", "max s"], rows))
    print(f"\nload average at the end: {C.loadavg()}")


if __name__ == "__main__":
    main()
