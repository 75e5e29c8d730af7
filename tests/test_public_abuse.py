"""The public app under abuse, driven through its API (gradio_client against a server on 127.0.0.1), not the page.

One public server on a tiny world (10 patients, 32 px, the ``pixels`` encoder) serves every test. Its
operator raised the bootstrap limit to 100,000 (``CHEXGEN_PUBLIC_MAX_BOOTSTRAP``), so a long job is easy
to start: the overall FID interval's bootstrap then runs for hours unless it is stopped.

Covered: a bootstrap of 10^6 is refused (widget bounds and the service's own check); a long job cancelled
through the API stops, is saved as ``partial`` and a second client's Generate is served within 5 s; a
client that disconnects (its process killed) has its job stopped; the per-job time limit stops a job;
quotas refuse the upload that would exceed them, a sweep removes expired folders and the startup sweep
orphaned uploads; xrv and Inception weight files carrying a pickle payload run nothing and give a
one-line error; no response of the public app names the install folder or CHEXGEN_HOME.
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexgen_ui.services import Studio, session_folder
from evaluators.errors import InputError
from evaluators.settings import chexgen_home, subdir
from tests.helpers_images import zip_with
from tests.ui_world import make_world

REPO = Path(__file__).resolve().parent.parent
ORACLE = "reference-oracle"
GENERATE_SRC = "generate N from a model"
UPLOAD_SRC = "upload (zip, or CSV + images)"
PROMPT = "Small left pleural effusion."
LONG_BOOT = 100_000


def _png(seed: int, size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from chexgen_ui.app import build_app

    saved = {k: os.environ.get(k) for k in ("CHEXGEN_PUBLIC_MAX_BOOTSTRAP",)}
    os.environ["CHEXGEN_PUBLIC_MAX_BOOTSTRAP"] = str(LONG_BOOT)  # the operator's override
    orphan = subdir("uploads") / "old-session" / "20250101-000000-deadbeef"  # left by a killed process
    orphan.mkdir(parents=True, exist_ok=True)
    (orphan / "x.png").write_bytes(_png(0))
    world = make_world(tmp_path_factory.mktemp("abuse_world"), patients=10, size=32)
    studio = Studio(f"{world}@train", public=True, encoder="pixels", device="cpu", umap=False,
                    store_path=tmp_path_factory.mktemp("abuse_store") / "results.sqlite")
    studio.index()
    studio.generate(ORACLE, PROMPT, n=1)  # loads the model and calibrates the threshold once
    demo = build_app(studio=studio)
    assert not orphan.exists()  # the startup sweep removed the orphaned upload
    demo.queue(max_size=8, default_concurrency_limit=2).launch(
        server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True, enable_monitoring=False)
    try:
        yield demo.local_url, studio
    finally:
        demo.close()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _client(url):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False)


def _long_job_args(boot: int = LONG_BOOT):
    # on_pp: source, files, folder, model, n, steps, bootstrap, min images per pathology
    return (GENERATE_SRC, None, "", ORACLE, 12, 1, boot, 1)


def _wait_for_bootstrap(job, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = job.status()
        if any("bootstrap" in (p.desc or "") for p in (st.progress_data or [])):
            return
        assert not job.done(), job.result()
        time.sleep(0.05)
    raise AssertionError("the job never reported bootstrap progress")


def _partial_rows(studio) -> list[dict]:
    store = studio.store()
    return [store.get(r["id"]) for r in store.runs(kind="fidelity") if r["status"] == "partial"]


def _wait_for_partial(studio, before: int, timeout: float) -> tuple[dict, float]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rows = _partial_rows(studio)
        if len(rows) > before:
            return rows[0], time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"no partial row within {timeout} s")


# ------------------------------------------------------------------------------------------ bounded work
def test_a_bootstrap_of_a_million_is_refused(server):
    url, studio = server
    with pytest.raises(Exception, match=str(LONG_BOOT)) as err:  # the widget's bound, checked by Gradio
        _client(url).predict(*_long_job_args(10**6), api_name="/on_pp")
    assert "Traceback" not in str(err.value)
    with pytest.raises(InputError, match=r"between 0 and 100000 .*CHEXGEN_PUBLIC_MAX_BOOTSTRAP"):
        studio.run_fidelity(None, bootstrap=10**6)  # the service checks again (a caller that skips the widget)
    with pytest.raises(InputError, match="Generation steps must be between 1 and 50"):
        studio.generate(ORACLE, PROMPT, n=1, steps=5000)
    with pytest.raises(InputError, match="Images per Generate click"):
        studio.generate(ORACLE, PROMPT, n=60)


def test_a_cancelled_long_job_stops_and_a_second_client_is_served_within_5_s(server):
    url, studio = server
    before = len(_partial_rows(studio))
    job = _client(url).submit(*_long_job_args(), api_name="/on_pp")
    _wait_for_bootstrap(job)
    t0 = time.monotonic()
    job.cancel()  # Gradio's /cancel, as the client library sends it
    out = _client(url).predict(ORACLE, PROMPT, 1, 0, 1, 0.0, api_name="/on_generate")
    served = time.monotonic() - t0
    assert any("1 image(s) from **reference-oracle**" in o for o in out if isinstance(o, str))
    assert served < 5.0, f"the second client waited {served:.1f} s"
    row, _ = _wait_for_partial(studio, before, timeout=5.0)
    assert row["result"]["error"] == "cancelled" and row["settings"]["bootstrap"] == LONG_BOOT


def test_the_job_of_a_client_that_disconnects_stops(server, tmp_path):
    url, studio = server
    before = len(_partial_rows(studio))
    script = tmp_path / "visitor.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from gradio_client import Client
        job = Client(sys.argv[1], verbose=False, download_files=False).submit(
            {_long_job_args()!r}[0], None, "", {ORACLE!r}, 12, 1, {LONG_BOOT}, 1, api_name="/on_pp")
        while not any("bootstrap" in (p.desc or "") for p in (job.status().progress_data or [])):
            time.sleep(0.05)
        print("running", flush=True)
        time.sleep(600)
    """))
    proc = subprocess.Popen([sys.executable, str(script), url], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout.readline().strip() == "running"
    finally:
        proc.kill()  # the visitor closes the tab: its connection drops
        proc.wait(30)
    row, _ = _wait_for_partial(studio, before, timeout=10.0)
    assert row["result"]["error"] == "client disconnected", row["result"]["error"]
    t0 = time.monotonic()
    _client(url).predict(ORACLE, PROMPT, 1, 0, 1, 0.0, api_name="/on_generate")  # the slot is free again
    assert time.monotonic() - t0 < 5.0


def test_the_per_job_time_limit_stops_a_job(server, monkeypatch):
    url, studio = server
    before = len(_partial_rows(studio))
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_JOB_SECONDS", "3")
    with pytest.raises(Exception, match="time limit of 3 s per job") as err:
        _client(url).predict(*_long_job_args(), api_name="/on_pp")
    assert "partial" in str(err.value)
    row, _ = _wait_for_partial(studio, before, timeout=5.0)
    assert row["result"]["error"] == "time limit of 3 s per job reached"


# ------------------------------------------------------------------------------------------ bounded disk
def test_quota_refuses_the_upload_that_would_exceed_it_and_a_sweep_removes_expired_folders(server, tmp_path,
                                                                                           monkeypatch):
    from gradio_client import handle_file

    url, studio = server
    monkeypatch.setattr(studio.quota, "session_bytes", 200_000)
    big = zip_with(tmp_path / "big.zip", {f"{i}.png": _png(i, size=128) for i in range(20)})  # ~330 kB expanded
    with pytest.raises(Exception, match="disk quota") as err:
        _client(url).predict(UPLOAD_SRC, [handle_file(str(big))], "", ORACLE, 12, 1, 0, 1, api_name="/on_pp")
    assert "Traceback" not in str(err.value)
    assert not [p for p in subdir("uploads").rglob("*.png")]  # nothing was extracted
    monkeypatch.setattr(studio.quota, "session_bytes", 10**9)
    monkeypatch.setattr(studio.quota, "total_bytes", 200_000)  # all visitors together
    with pytest.raises(InputError, match="disk space for visitors"):
        studio.synthetic_from_upload([str(big)], session="another")

    old = subdir("runs") / session_folder("someone") / "fidelity-20250101-000000-abcdef"
    new = subdir("runs") / session_folder("someone") / "fidelity-20990101-000000-abcdef"
    for folder in (old, new):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "fidelity.json").write_text("{}")
    day_ago = time.time() - 2 * 86400
    os.utime(old, (day_ago, day_ago))
    removed = studio.quota.sweep()
    assert old in removed and not old.exists() and new.exists()


def test_finished_uploads_are_deleted_and_utility_keeps_no_checkpoints(server, tmp_path):
    from gradio_client import handle_file

    url, studio = server
    up = zip_with(tmp_path / "ok.zip", {f"{i}.png": _png(i) for i in range(12)})
    out = _client(url).predict(UPLOAD_SRC, [handle_file(str(up))], "", ORACLE, 12, 1, 0, 1, api_name="/on_pp")
    assert out[0].startswith("Per-pathology fidelity done in ") and "encoders: pixels" in out[0]  # the status line
    assert out[1]["data"]  # the per-pathology table came back
    assert not [p for p in subdir("uploads").rglob("*.png")]  # the finished job's upload is gone
    assert studio.quota.usage() < 5_000_000


# ------------------------------------------------------------------------------------------ weights run nothing
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("encoder,env", [("xrv-densenet", "CHEXGEN_XRV_WEIGHTS"),
                                         ("inception", "CHEXGEN_INCEPTION_WEIGHTS")])
def test_a_weights_file_with_a_pickle_payload_runs_nothing_and_gives_one_line(encoder, env, tmp_path, monkeypatch,
                                                                              capsys):
    if encoder == "xrv-densenet":
        pytest.importorskip("torchxrayvision")
        from evaluators.encoders.xrv import FILENAME
    else:
        pytest.importorskip("torch_fidelity")
        from evaluators.encoders.inception import FILENAME
    marker = tmp_path / "pwned"
    weights = tmp_path / "w" / FILENAME
    weights.parent.mkdir()
    import torch

    torch.save({"state_dict": _Payload(marker)}, weights)
    with open(tmp_path / "plain.pkl", "wb") as fh:  # the payload is real: plain pickle runs it
        pickle.dump(_Payload(tmp_path / "control"), fh)
    with open(tmp_path / "plain.pkl", "rb") as fh:
        pickle.load(fh)  # proves the payload works
    assert (tmp_path / "control").exists()

    real = make_world(tmp_path / "real", patients=4, size=32)
    from evaluators.cli import main

    monkeypatch.setenv(env, str(weights))
    code = main(["fidelity", "--real", str(real), "--synthetic", str(real), "--encoder", encoder, "--no-alignment",
                 "--device", "cpu", "--no-store", "--out", str(tmp_path / "r.json")])  # the CLI, in this process
    err = capsys.readouterr().err
    assert not marker.exists()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert FILENAME in lines[0] and "safetensors" in lines[0]


def test_xrv_from_its_cache_folder_with_a_payload_runs_nothing(tmp_path, monkeypatch):
    pytest.importorskip("torchxrayvision")
    import torch

    from evaluators.encoders import load_encoder
    from evaluators.encoders.xrv import FILENAME

    marker = tmp_path / "pwned"
    cache = tmp_path / ".torchxrayvision" / "models_data"
    cache.mkdir(parents=True)
    torch.save(_Payload(marker), cache / FILENAME)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CHEXGEN_XRV_WEIGHTS", raising=False)
    with pytest.raises(InputError) as err:
        load_encoder("xrv-densenet")
    assert not marker.exists()
    assert "\n" not in str(err.value) and "posix.system" in str(err.value) and "safetensors" in str(err.value)


# ------------------------------------------------------------------------------------------ no server paths
def test_no_response_names_the_install_folder_or_chexgen_home(server, tmp_path):
    import httpx
    from gradio_client import handle_file

    url, _ = server
    needles = [str(REPO), str(chexgen_home()), str(chexgen_home().resolve())]
    client = _client(url)
    texts = [httpx.get(url + "config").text, httpx.get(url + "gradio_api/info").text,
             str(client.predict(api_name="/on_setup")), str(client.predict("demo", api_name="/on_model")),
             str(client.predict("", api_name="/on_board")),
             str(client.predict(ORACLE, PROMPT, 1, 0, 1, 0.0, api_name="/on_generate")[1:3])]
    # hostile uploads: a 300-character member name, a member whose bytes fail their CRC, a truncated PNG
    long_name = zip_with(tmp_path / "long.zip", {"a" * 300 + ".png": _png(0), "b.png": _png(1)})
    crc = tmp_path / "crc.zip"
    with zipfile.ZipFile(crc, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("a.png", _png(2))
        zf.writestr("b.png", _png(3))
    raw = bytearray(crc.read_bytes())
    at = bytes(raw).find(_png(2)) + 40
    raw[at] ^= 0xFF
    crc.write_bytes(bytes(raw))
    cut = zip_with(tmp_path / "cut.zip", {f"{i}.png": _png(i) for i in range(6)} | {"cut.png": _png(9)[:60]})
    missing = zip_with(tmp_path / "missing.zip", {"a.png": _png(0), "metadata.csv": b"path,prompt\nnope.png,x\n"})
    errors = []
    for bad in (long_name, crc, cut, missing):
        with pytest.raises(Exception) as err:
            client.predict(UPLOAD_SRC, [handle_file(str(bad))], "", ORACLE, 12, 1, 0, 1, api_name="/on_pp")
        errors.append(str(err.value))
    for e in errors:
        for word in ("Traceback", "Errno", "CRC", "--skip-bad", "skip_bad"):
            assert word not in e, e
    assert "name is longer than 200 characters" in errors[0]
    assert "damaged" in errors[1] and "a.png" in errors[1]
    for text in texts + errors:
        for needle in needles:
            assert needle not in text, (needle, text[:300])


def test_xrv_released_file_and_its_safetensors_copy_give_the_same_encoder(tmp_path, monkeypatch):
    pytest.importorskip("torchxrayvision")
    import torch

    from evaluators.checkpoints import save_state_dict
    from evaluators.encoders import load_encoder
    from tests import tiny_models as T

    released = T.make_tiny_xrv(tmp_path / "xrv")  # a pickled full DenseNet, as torchxrayvision ships it
    monkeypatch.setenv("CHEXGEN_XRV_WEIGHTS", str(released))
    a = load_encoder("xrv-densenet")
    converted = save_state_dict(a.model.state_dict(), tmp_path / "xrv.safetensors")
    monkeypatch.setenv("CHEXGEN_XRV_WEIGHTS", str(converted))
    b = load_encoder("xrv-densenet")
    batch = torch.rand(2, 1, 224, 224) * 2048 - 1024
    with torch.no_grad():
        assert torch.equal(a.model(batch), b.model(batch))
    assert b.pathologies == a.pathologies and len(a.pathologies) == 18
