"""Screenshots of every tab for the README: ``python scripts/screenshots.py [--reference demo@train]``.

Starts the app in a subprocess on a free local port, drives Debian's Chromium with Playwright (never
``playwright install``), generates from the default model, inspects the first image, opens the map, runs a
small batch fidelity job, and writes ``assets/screenshots/*.png`` (each kept under 300 KB by palette
quantisation when needed).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
MAX_BYTES = 300_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def save_small(png: bytes, path: Path, max_bytes: int = MAX_BYTES) -> int:
    """Write a screenshot, quantising to a palette (then shrinking) until it is under ``max_bytes``."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    colours, scale = 256, 1.0
    while True:
        im = img if scale == 1.0 else img.resize((int(img.width * scale), int(img.height * scale)),
                                                 Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.quantize(colours, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        if buf.tell() <= max_bytes:
            path.write_bytes(buf.getvalue())
            return buf.tell()
        if colours > 64:
            colours //= 2
        else:
            scale *= 0.85


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default="demo@train")
    ap.add_argument("--out", default=str(REPO / "assets" / "screenshots"))
    ap.add_argument("--batch-n", type=int, default=64, help="images generated for the batch job")
    ap.add_argument("--only", default="", help="comma-separated screenshot names to take (default: all), e.g. "
                                               "generate_inspect,batch_suite,setup")
    args = ap.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()}

    def want(name: str) -> bool:
        return not only or name in only

    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    env.setdefault("HF_HUB_OFFLINE", "1")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--reference", args.reference, "--port", str(port)],
                            cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("the app exited before it served a page") from None
                time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1360, "height": 980})
            page.goto(url)
            page.wait_for_selector("#generate-btn", timeout=600_000)

            def shot(name: str) -> None:
                size = save_small(page.screenshot(full_page=True), out / f"{name}.png")
                print(f"{out / name}.png: {size / 1000:.0f} KB")

            page.click("#generate-btn")  # the map's stars come from these images
            page.wait_for_selector("#gallery .thumbnail-item img", timeout=600_000)
            page.locator("#gallery .thumbnail-item").first.click()
            page.wait_for_selector("#neighbours .thumbnail-item img", timeout=120_000)
            page.wait_for_function("document.querySelector('#verdict').innerText.includes('Verdict')", timeout=120_000)
            page.wait_for_selector("#evidence img", timeout=120_000)
            time.sleep(1)
            if want("generate_inspect"):
                shot("generate_inspect")
            page.get_by_role("tab", name="Embedding map").click()
            page.wait_for_selector("#umap .main-svg", timeout=120_000)
            time.sleep(2)
            points = page.locator("#umap .scatterlayer .point")
            if points.count():
                points.nth(0).click(force=True)
                time.sleep(2)
            if want("embedding_map"):
                shot("embedding_map")
            if want("per_pathology"):
                page.get_by_role("tab", name="Per-pathology fidelity").click()
                page.get_by_label("generate N from a model").first.check()
                page.locator("#pp-n input").fill(str(args.batch_n))
                page.click("#pp-run")
                page.wait_for_function("document.querySelector('#pp-table').innerText.includes('Atelectasis')",
                                       timeout=600_000)
                time.sleep(2)
                shot("per_pathology")
            page.get_by_role("tab", name="Batch suite").click()
            page.get_by_label("generate N from a model").last.check()
            page.locator("#batch-n input").fill(str(args.batch_n))
            page.get_by_label("Utility", exact=True).check()
            page.click("#batch-run")
            page.wait_for_function("document.querySelector('#batch-status').innerText.includes('Macro AUC')",
                                   timeout=1_800_000)
            time.sleep(1)
            if want("batch_suite"):
                shot("batch_suite")
            if want("leaderboard"):
                page.get_by_role("tab", name="Leaderboard").click()
                page.wait_for_function("document.querySelector('#lb-a input').value.startsWith('#')", timeout=30_000)
                page.get_by_role("button", name="Compare side by side").click()
                page.wait_for_function("document.querySelector('#lb-side').innerText.includes('setting:')",
                                       timeout=30_000)
                time.sleep(1)
                shot("leaderboard")
            if want("setup"):
                page.get_by_role("tab", name="Setup").click()
                page.wait_for_function("document.querySelector('#setup-reid').innerText.includes('re-ID')",
                                       timeout=120_000)
                time.sleep(2)
                shot("setup")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
