"""End-to-end reader study in Chromium (Playwright): the lead creates a two-reader study in the Reader study tab,
reader ann answers half her images with the keyboard (r/s, 1-5, n), the server is killed and restarted, ann
resumes where she stopped, bob reads everything, and the lead's results screen shows the hand-computed accuracy,
Wilson intervals, Cohen's kappa and the ROC figure. Every image a reader is shown is fetched again over HTTP
from the URL the page uses (Gradio's file route) and its bytes checked: a PNG with only IHDR/IDAT/IEND chunks
(no text, time or EXIF chunk), one size for every image of the study although the real (64 px) and synthetic
(48 px, PNG text chunks added) sources differ, and no source path, file name, set name or label in the URL or
the reader's page. Screenshots go to test-artifacts/. Skips when /usr/bin/chromium is absent.
"""

from __future__ import annotations

import io
import os
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from evaluators.pathologies import PATHOLOGIES
from tests.test_ui_browser import ARGS, ARTIFACTS, CHROMIUM, REPO, _free_port
from tests.ui_world import make_world

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LAUNCH = """
import sys
from chexgen_ui.app import build_app
demo = build_app(reference=sys.argv[1] + "@train", public=False)
demo.queue(default_concurrency_limit=2).launch(server_name="127.0.0.1", server_port=int(sys.argv[2]),
                                               show_error=True, enable_monitoring=False)
"""


class Server:
    def __init__(self, root: Path, csv: Path):
        self.root, self.csv, self.port = root, csv, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.env = dict(os.environ, CHEXGEN_HOME=str(root / "home"), HF_HUB_OFFLINE="1",
                        GRADIO_ANALYTICS_ENABLED="False", CHEXGEN_DEVICE="cpu", CHEXGEN_APP_ENCODER="pixels",
                        PYTHONPATH=str(REPO))
        self.proc = None

    def start(self) -> None:
        log = open(self.root / "app.log", "a")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(self.csv), str(self.port)], cwd=REPO,
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.time()
        while time.time() - t0 < 180 and self.proc.poll() is None:
            try:
                urllib.request.urlopen(self.url, timeout=2)
                return
            except OSError:
                time.sleep(0.5)
        self.kill()
        pytest.fail("the app did not start:\n" + (self.root / "app.log").read_text()[-3000:])

    def kill(self) -> None:
        """SIGKILL: a crash, not a clean shutdown (answers must already be on disk)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=20)


@pytest.fixture
def server(tmp_path):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")
    real = make_world(tmp_path / "real", patients=10, size=64, seed=0)
    fake = make_world(tmp_path / "gen_secret_name", patients=6, size=48, seed=1)
    tell = PngImagePlugin.PngInfo()  # a tell-tale that must not reach the reader
    tell.add_text("Software", "FAKE-GENERATOR synthetic")
    for png in (fake.parent / "images").glob("*.png"):
        Image.open(png).save(png, pnginfo=tell)
    srv = Server(tmp_path, real)
    srv.fake = fake
    srv.start()
    yield srv
    srv.kill()


def _plan(home: Path, study_id: str) -> dict[str, list[str]]:
    """Each reader's calls in their own order: the truth, except ann misses the last synthetic image (sorted by
    id) and bob misses real #3 and synthetic #3 and #4, the callback test's pattern (7/8 and 5/8, kappa 7/15)."""
    with sqlite3.connect(home / "reader_studies" / "studies.sqlite") as con:
        truth = dict(con.execute("SELECT item_id, truth FROM items WHERE study_id = ?", (study_id,)).fetchall())
        orders = dict(con.execute("SELECT name, item_order FROM readers WHERE study_id = ?", (study_id,)).fetchall())
    real = sorted(i for i, t in truth.items() if t == "real")
    syn = sorted(i for i, t in truth.items() if t == "synthetic")
    flip = {"real": "synthetic", "synthetic": "real"}
    wrong = {"ann": {syn[3]}, "bob": {real[2], syn[2], syn[3]}}
    import json

    return {who: [flip[truth[i]] if i in wrong[who] else truth[i] for i in json.loads(orders[who])]
            for who in ("ann", "bob")}


def _tab(page, url: str) -> None:
    """Open the app and its Reader study tab (Gradio renders a tab's content once it is first shown)."""
    page.goto(url)
    page.wait_for_selector("#generate-btn", timeout=120_000)
    page.get_by_role("tab", name="Reader study").click()
    page.wait_for_selector("#rs-create", timeout=30_000)


def _open_reader(page, url: str, code: str, expect: str) -> None:
    _tab(page, url)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page.locator("#rs-code").locator("input, textarea").first.fill(code)
    page.click("#rs-open")
    try:
        page.wait_for_function(f"document.querySelector('#rs-progress').innerText.includes({expect!r})",
                               timeout=120_000)  # a loaded 2-core machine after a restart
    except PlaywrightTimeout:
        shown = page.evaluate("document.querySelector('#rs-progress').innerText")
        raise AssertionError(f"reader page never showed {expect!r}; it shows {shown!r}") from None
    page.wait_for_selector("#rs-image img", timeout=30_000)


def _chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the served image is not a PNG"
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return out


class Served:
    """Every image a reader's page shows, fetched again over HTTP from the URL in the page (Gradio's file route),
    and what must not appear in the URL or the page: source paths, file names, set names, labels, the truth."""

    def __init__(self, home: Path, study_id: str, synthetic_root: Path):
        with sqlite3.connect(home / "reader_studies" / "studies.sqlite") as con:
            rows = con.execute("SELECT source, model, source_path FROM items WHERE study_id = ?",
                               (study_id,)).fetchall()
        # the app's header names the reference (real) set in local mode: the same for every image, so it is not
        # in this list; the synthetic sets, every image's own path, file name and source set are
        self.secrets = {"gen_secret_name", "FAKE-GENERATOR", str(synthetic_root)}
        for source, model, path in rows:
            self.secrets |= {str(source), str(Path(path).parent), Path(path).name, Path(path).stem}
            self.secrets |= {model} if model else set()
        self.url_secrets = self.secrets | {"real", "synthetic", "gen-A", *PATHOLOGIES}
        self.urls: list[str] = []
        self.sizes: set[tuple[int, int]] = set()

    def check_page(self, page, base: str) -> None:
        src = page.locator("#rs-image img").get_attribute("src")
        if self.urls and src == self.urls[-1]:
            return
        assert [w for w in self.url_secrets if w.lower() in src.lower()] == [], src
        html = page.content()
        assert [html[max(0, html.find(w) - 200):html.find(w) + 100] for w in self.secrets if w in html] == []
        tag = page.locator("#rs-image img").evaluate("e => e.outerHTML")
        assert [w for w in self.url_secrets if w.lower() in tag.replace(src, "").lower()] == [], tag
        data = urllib.request.urlopen(urllib.parse.urljoin(base, src), timeout=30).read()
        chunks = _chunks(data)
        assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}, chunks  # no tEXt/iTXt/zTXt/tIME/eXIf/iCCP
        img = Image.open(io.BytesIO(data))
        assert not img.getexif() and not {k for k in img.info if k not in ("dpi",)}, img.info
        assert [w for w in self.secrets if w.encode() in data] == []
        self.sizes.add(img.size)
        self.urls.append(src)


def _blank(page) -> bool:
    return page.evaluate("document.querySelectorAll('#rs-call input:checked, #rs-confidence input:checked').length") == 0


def _read(page, calls: list[str], start: int, stop: int, served: Served, base: str) -> None:
    for k in range(start, stop):
        if served.urls:  # the new image has replaced the previous one in the page
            page.wait_for_function(f"document.querySelector('#rs-image img').getAttribute('src') != "
                                   f"{served.urls[-1]!r}", timeout=30_000)
        served.check_page(page, base)
        page.locator("#rs-progress").click()  # focus out of the code field: the keys are shortcuts
        page.keyboard.press("r" if calls[k] == "real" else "s")
        page.keyboard.press("3")
        page.keyboard.press("n")
        want = "Done" if k + 1 == len(calls) else f"Image {k + 2} of {len(calls)}"
        page.wait_for_function(f"document.querySelector('#rs-progress').innerText.includes({want!r})",
                               timeout=30_000)
        # the next image starts blank: no answer of the previous one is carried over
        assert _blank(page), f"answers of image {k + 1} still ticked on the next image"


def test_two_reader_study_survives_a_server_restart(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        lead = browser.new_page(viewport={"width": 1400, "height": 1000})
        _tab(lead, server.url)
        lead.locator("#rs-src label", has_text="server folder").click()
        lead.locator("#rs-folder").locator("input, textarea").first.fill(str(server.fake))
        lead.locator("#rs-models").locator("input, textarea").first.fill("gen-A")
        lead.locator("#rs-n input").fill("8")
        lead.locator("#rs-readers").locator("input, textarea").first.fill("ann,bob")
        lead.click("#rs-create")
        lead.wait_for_function("document.querySelector('#rs-created').innerText.includes('Reader codes')",
                               timeout=120_000)
        created = lead.locator("#rs-created").inner_text()
        codes = dict(re.findall(r"(ann|bob): ([A-Za-z0-9_-]{16,})", created))
        study_id = lead.locator("#rs-study-id").locator("input, textarea").first.input_value()
        assert set(codes) == {"ann", "bob"} and study_id in created
        lead.screenshot(path=str(ARTIFACTS / "ui_reader_setup.png"), full_page=True)
        plan = _plan(server.root / "home", study_id)

        # ann reads half in her own browser, with the keyboard; her page shows nothing of the source
        ann = browser.new_page(viewport={"width": 1400, "height": 1000})
        _open_reader(ann, server.url, codes["ann"], "Image 1 of 8")
        served = {who: Served(server.root / "home", study_id, server.fake.parent) for who in ("ann", "bob")}
        _read(ann, plan["ann"], 0, 4, served["ann"], server.url)
        ann.screenshot(path=str(ARTIFACTS / "ui_reader_reading.png"), full_page=True)

        server.kill()  # mid-study crash
        server.start()
        _open_reader(ann, server.url, codes["ann"], "Image 5 of 8 (4 answered")  # resumes, nothing lost
        _read(ann, plan["ann"], 4, 8, served["ann"], server.url)
        # bob opens his reader link: the Reader study tab with his code filled in and his first image shown
        link = server.url.rstrip("/") + f"/?reader={codes['bob']}"
        assert link in created
        bob = browser.new_page(viewport={"width": 1400, "height": 1000})
        bob.goto(link)
        bob.wait_for_function("(document.querySelector('#rs-progress') || {innerText: ''}).innerText"
                              ".includes('Image 1 of 8')", timeout=120_000)
        bob.wait_for_selector("#rs-image img", timeout=30_000)
        assert bob.locator("#rs-code").locator("input, textarea").first.input_value() == codes["bob"]
        _read(bob, plan["bob"], 0, 8, served["bob"], server.url)
        # every image each reader saw came over HTTP at one size (64 px study, enlarged for display), and
        # both readers were shown the same 8 images (their own order)
        for who in ("ann", "bob"):
            assert len(served[who].urls) == 8 and len(set(served[who].urls)) == 8, served[who].urls
        assert served["ann"].sizes == served["bob"].sizes and len(served["ann"].sizes) == 1
        assert set(served["ann"].urls) == set(served["bob"].urls)

        _tab(lead, server.url)
        lead.locator("#rs-study-id").locator("input, textarea").first.fill(study_id)
        lead.click("#rs-results-btn")
        lead.wait_for_function("(document.querySelector('#rs-accuracy') || {innerText: ''}).innerText"
                               ".includes('12/16')", timeout=60_000)
        acc = lead.locator("#rs-accuracy").inner_text()
        # Wilson 95% intervals and accuracies, hand-computed in tests/test_ui_reader_study.py
        for text in ("7/8", "0.875", "[0.529, 0.978]", "5/8", "0.625", "[0.306, 0.863]", "0.750", "[0.505, 0.898]",
                     format(18 / 256, ".3g")):
            assert text in acc, text
        assert format(7 / 15, ".3f") in lead.locator("#rs-kappa").inner_text()
        assert "ann 8/8" in lead.locator("#rs-results").inner_text()
        lead.wait_for_selector("#rs-roc .scatterlayer", timeout=30_000)  # the ROC figure, per reader and pooled
        legend = lead.locator("#rs-roc .legend").text_content()
        assert "pooled (AUC" in legend and "ann (AUC" in legend and "bob (AUC" in legend
        lead.screenshot(path=str(ARTIFACTS / "ui_reader_results.png"), full_page=True)
        browser.close()
