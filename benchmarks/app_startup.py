"""App start-up: seconds from ``python app.py`` until the page is served and until the map is drawn.

    python benchmarks/app_startup.py [--home DIR] [--runs 2]

Run 1 on an empty ``--home`` is the *first start* (demo world, reference index, UMAP map and the
memorisation calibration are built); later runs on the same home are *later starts* (everything is
loaded from disk). "ready" is when a headless Chromium (Debian's, /usr/bin/chromium) sees the reference
points of the embedding map, which the page draws after the load-time job (index + calibration) ends.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import _common as C

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_start(home: Path, timeout: float) -> tuple[float, float]:
    """(seconds until HTTP 200, seconds until the map's points are drawn) for one ``python app.py``."""
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = dict(os.environ, CHEXGEN_HOME=str(home), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    log = open(home / f"app-{port}.log", "w")  # noqa: SIM115 - closed below
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=C.REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"app.py exited with {proc.returncode}; see {log.name}")
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"no page after {timeout:.0f} s; see {log.name}")
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        served = time.perf_counter() - t0
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("tab", name="Embedding map").click()
            page.wait_for_selector("#umap .scatterlayer .point", timeout=timeout * 1000)
            ready = time.perf_counter() - t0
            browser.close()
        return served, ready
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", help="CHEXGEN_HOME to start in (default: a new empty folder, so run 1 is a first start)")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=900.0)
    args = ap.parse_args(argv)
    if not CHROMIUM.is_file():
        raise SystemExit(f"{CHROMIUM} is absent (apt-get install chromium)")
    home = Path(args.home) if args.home else Path(tempfile.mkdtemp(prefix="chexgen-bench-startup-"))
    home.mkdir(parents=True, exist_ok=True)
    fresh = not any(home.iterdir())
    C.print_header(f"App start-up ({'first start, then later starts' if fresh else 'later starts'}; home {home})")
    rows = []
    for i in range(args.runs):
        served, ready = one_start(home, args.timeout)
        kind = "first start" if fresh and i == 0 else "later start"
        rows.append([f"{i + 1} ({kind})", served, ready])
        print(f"run {i + 1} ({kind}): page served in {served:.1f} s, map drawn in {ready:.1f} s", flush=True)
    print(C.markdown_table(["run", "page served (s)", "map drawn, app ready (s)"], rows))
    print(f"\nload average at the end: {C.loadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
