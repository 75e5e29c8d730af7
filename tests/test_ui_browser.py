"""End-to-end: the app in a subprocess, driven by Debian's Chromium through Playwright.

Generates from the default model (whatever the registry prefers: the demo model when trained) on a tiny
world, checks the gallery, the nearest
neighbours and the memorisation verdict, "search from this image" (follow a result, go back), the UMAP map (a
point click and a search from it), and a small batch fidelity
job's results table. Screenshots go to test-artifacts/. Skips when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.ui_world import make_world

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAUNCH = """
import sys
from tests.ui_world import register_copier
register_copier(sys.argv[1])
from chexgen_ui.app import build_app
demo = build_app(reference=sys.argv[1] + "@train", public=False)
demo.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=int(sys.argv[2]),
                                               show_error=True, enable_monitoring=False)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    root = tmp_path_factory.mktemp("ui_browser")
    csv = make_world(root / "world", patients=85, size=64)  # 102 training images: the copy check calibrates at 1%
    port = _free_port()
    env = dict(os.environ, CHEXGEN_HOME=str(root / "home"), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               CHEXGEN_DEVICE="cpu", CHEXGEN_APP_ENCODER="pixels", PYTHONPATH=str(REPO))
    log = open(root / "app.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(csv), str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    t0 = time.time()
    while time.time() - t0 < 180:
        if proc.poll() is not None:
            break
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
    if proc.poll() is not None:
        log.close()
        pytest.fail("the app did not start:\n" + (root / "app.log").read_text()[-3000:])
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_generate_inspect_map_and_batch(app_url):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url)
        page.wait_for_selector("#generate-btn", timeout=60_000)
        # the prompt is pre-filled with a report-style example
        assert "effusion" in page.locator("#prompt textarea").input_value().lower()

        # Generate -> gallery; select an image -> neighbours, table, verdict
        page.click("#generate-btn")
        page.wait_for_selector("#gallery .thumbnail-item img", timeout=180_000)
        assert page.locator("#gallery .thumbnail-item").count() == 4
        page.locator("#gallery .thumbnail-item").first.click()
        page.wait_for_selector("#neighbours .thumbnail-item img", timeout=60_000)
        page.wait_for_function("document.querySelector('#verdict').innerText.includes('threshold')", timeout=30_000)
        verdict = page.locator("#verdict").inner_text()
        assert sum(f"Verdict: {d}." in verdict for d in ("memorised", "same patient", "new", "unknown")) == 1
        assert "re-ID" in verdict
        page.wait_for_selector("#evidence img", timeout=30_000)  # the aligned overlay / difference image
        nn_text = page.locator("#nn-table").inner_text()
        assert nn_text.count("P0") == 5  # five neighbours, each with a patient id P0xx
        page.screenshot(path=str(ARTIFACTS / "ui_generate.png"), full_page=True)

        # Search from this image: its nearest training images; follow the first result, then go back
        page.click("#search-selected")
        page.wait_for_selector("#search-results .thumbnail-item img", timeout=60_000)
        page.wait_for_function("document.querySelector('#search-trail').innerText.includes('Trail (1)')",
                               timeout=30_000)
        page.locator("#search-results .thumbnail-item").first.click()
        page.click("#search-follow")
        page.wait_for_function("document.querySelector('#search-trail').innerText.includes('Trail (2)')",
                               timeout=30_000)
        assert "training image" in page.locator("#search-trail").inner_text()
        assert "No memorisation verdict" in page.locator("#search-summary").inner_text()
        page.click("#search-back")
        page.wait_for_function("document.querySelector('#search-trail').innerText.includes('Trail (1)')",
                               timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui_search.png"), full_page=True)

        # Embedding map: reference points + generated stars; clicking a point shows that image
        page.get_by_role("tab", name="Embedding map").click()
        page.wait_for_selector("#umap .scatterlayer .point", timeout=60_000)
        assert page.locator("#umap .scatterlayer .point").count() >= 18 + 4
        assert page.locator("#umap .legendtext", has_text="generated").count() == 1
        page.locator("#umap .scatterlayer .point").nth(0).click(force=True)
        page.wait_for_function("document.querySelector('#map-caption').innerText.includes('patient')",
                               timeout=30_000)
        page.click("#map-search")  # search from the clicked point
        page.wait_for_function("document.querySelector('#map-search-trail').innerText.includes('Trail (1)')",
                               timeout=30_000)
        assert page.locator("#map-search-results .thumbnail-item").count() == 5
        page.screenshot(path=str(ARTIFACTS / "ui_map.png"), full_page=True)

        # Batch suite: generate 36 images from the model with reference prompts, fidelity per pathology
        page.get_by_role("tab", name="Batch suite").click()
        page.get_by_label("generate N from a model").last.check()
        page.locator("#batch-n input").fill("36")
        page.locator("#batch-min input").fill("6")
        page.click("#batch-run")
        try:
            page.wait_for_function(
                "document.querySelector('#batch-status').innerText.includes('flagged as possible memorisation')",
                timeout=200_000)
        finally:
            page.screenshot(path=str(ARTIFACTS / "ui_batch.png"), full_page=True)
        table = page.locator("#batch-table").inner_text()
        assert all(name in table for name in ("Atelectasis", "No Finding", "Support Devices"))
        overall = page.locator("#batch-overall").inner_text()
        assert "pixels" in overall
        status = page.locator("#batch-status").inner_text()
        assert re.search(r"\b\d+ of 36 image\(s\) flagged", status)
        assert "Atelectasis" in page.locator("#batch-privacy").inner_text()
        per_image = page.locator("#batch-privacy-images").inner_text()
        assert "verdict" in per_image and "memorised" in per_image  # one decision per image (a copier memorises)
        assert "Verdicts (one per image)" in status
        page.screenshot(path=str(ARTIFACTS / "ui_batch.png"), full_page=True)

        # Leaderboard lists the run
        page.get_by_role("tab", name="Leaderboard").click()
        page.wait_for_function("document.querySelector('#leaderboard').innerText.includes('fidelity')",
                               timeout=30_000)
        # the side-by-side pickers preselect the newest run as B (names, not bare ids)
        page.wait_for_function("document.querySelector('#lb-b input').value.startsWith('#')", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui_leaderboard.png"), full_page=True)
        browser.close()
