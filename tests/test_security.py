"""Public-mode security: hostile uploads, per-session separation, queue/upload limits, ZeroGPU wrapper.

Covered elsewhere (not repeated here): ``safe_extract_zip`` on ``..``/absolute/symlink members and a small
bomb (tests/test_ui_callbacks.py), pickles carrying code refused without running them
(tests/test_checkpoints.py::test_pickle_with_code_is_refused_without_running_it), the 20000x20000 header
bomb in ``read_image`` (tests/test_imageio.py::test_header_bomb_png_is_refused), 16-bit PNG and truncated
JPEG decoding (tests/test_imageio.py), CSV columns and paths escaping the image root
(tests/test_imagesets.py), remote code behind CHEXGEN_ALLOW_REMOTE_CODE (tests/test_generators.py).
This file checks the same attacks through the public app's upload path.
"""

from __future__ import annotations

import importlib.machinery
import io
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chexgen_ui.services import PUBLIC_MAX_PIXELS, Limits, Studio, session_folder
from evaluators.errors import InputError
from evaluators.runs.generate import example_prompts
from evaluators.settings import subdir
from tests.helpers_images import png_with_claimed_size, random_png, zip_with
from tests.ui_world import make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("sec_world"), patients=10, size=32)


@pytest.fixture
def public(world):
    return Studio(f"{world}@train", public=True, encoder="pixels", device="cpu", umap=False)


def _png(seed: int = 0, size: int = 16, mode: str = "L") -> bytes:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size)) * (65535 if mode == "I;16" else 255)).astype(np.uint16 if mode == "I;16" else np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()




def _session_uploads(session: str) -> list[Path]:
    root = subdir("uploads") / session_folder(session)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# ------------------------------------------------------------------------------------------ limits
def test_public_limits_come_from_the_environment(monkeypatch):
    assert Limits.for_mode(False).max_pixels is None  # local: only the engine's own guard
    lim = Limits.for_mode(True)
    assert lim.max_pixels == PUBLIC_MAX_PIXELS == 4096 * 4096
    assert lim.max_files < Limits.for_mode(False).max_files and lim.max_bytes < Limits.for_mode(False).max_bytes
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_FILES", "7")
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_PIXELS", "1000")
    assert Limits.for_mode(True).max_files == 7 and Limits.for_mode(True).max_pixels == 1000
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_BYTES", "lots")
    with pytest.raises(InputError, match="CHEXGEN_PUBLIC_MAX_BYTES"):
        Limits.for_mode(True)


def test_launch_options_bound_the_queue_and_upload_size_in_public_mode(monkeypatch):
    from chexgen_ui.main import is_public, launch_options, parse_args

    q, launch = launch_options(True)
    assert q["max_size"] == 16 and q["default_concurrency_limit"] == 2
    assert launch["max_file_size"] == "200mb" and launch["enable_monitoring"] is False
    q, launch = launch_options(False)
    assert q["max_size"] is None and launch["max_file_size"] == "2gb"
    # downloads (Generate's zip, Batch's CSV/JSON) are served from CHEXGEN_HOME's exports/ and runs/ only
    from evaluators.settings import chexgen_home, subdir

    assert launch["allowed_paths"] == [str(subdir("exports")), str(subdir("runs"))]
    assert str(chexgen_home()) not in launch["allowed_paths"]
    monkeypatch.setenv("CHEXGEN_QUEUE_MAX_SIZE", "3")
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_FILE_SIZE", "50mb")
    q, launch = launch_options(True)
    assert q["max_size"] == 3 and launch["max_file_size"] == "50mb"
    monkeypatch.setenv("CHEXGEN_QUEUE_MAX_SIZE", "-1")
    with pytest.raises(InputError, match="CHEXGEN_QUEUE_MAX_SIZE"):
        launch_options(True)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not is_public(parse_args([])) and is_public(parse_args(["--public"]))
    monkeypatch.setenv("SPACE_ID", "someone/chexgen-studio")  # on a Space public mode is automatic
    assert is_public(parse_args([]))


# ------------------------------------------------------------------------------------------ hostile zips
@pytest.mark.parametrize("members,symlink,words", [
    ({"../evil.png": b"x"}, None, "'..'"),
    ({"/tmp/evil.png": b"x"}, None, "absolute"),
    ({"C:/evil.png": b"x"}, None, "absolute"),
    ({}, "link.png", "symbolic link"),
])
def test_public_upload_refuses_escaping_members_and_leaves_nothing(public, tmp_path, members, symlink, words):
    z = zip_with(tmp_path / "bad.zip", {"ok.png": _png(0), **members}, symlink=symlink)
    with pytest.raises(InputError, match=words):
        public.synthetic_from_upload([str(z)], session="attacker")
    assert _session_uploads("attacker") == []  # the refused upload's folder is removed
    assert not (tmp_path / "evil.png").exists() and not Path("/tmp/evil.png").exists()


def test_one_gigabyte_zip_bomb_is_refused_before_anything_is_written(public, tmp_path):
    """1 GiB of zeros (about 1 MB compressed, streamed in 4 MiB chunks) against the public 512 MiB limit."""
    bomb = tmp_path / "bomb.zip"
    info = zipfile.ZipInfo("zeros.png")
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(bomb, "w", compresslevel=1) as zf, zf.open(info, "w", force_zip64=True) as f:
        chunk = bytes(4 << 20)
        for _ in range(256):
            f.write(chunk)
    assert bomb.stat().st_size < 5_000_000
    with zipfile.ZipFile(bomb) as zf:
        assert zf.infolist()[0].file_size == 1 << 30
    with pytest.raises(InputError, match=r"expands to 1074 MB; the limit is 537 MB"):
        public.synthetic_from_upload([str(bomb)], session="bomber")
    assert _session_uploads("bomber") == []


def test_public_upload_counts_files_and_bytes_of_plain_uploads(world, tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_FILES", "2")
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_BYTES", "100000")
    s = Studio(f"{world}@train", public=True, encoder="pixels", device="cpu")
    files = [random_png(tmp_path / f"{i}.png", seed=i) for i in range(3)]
    with pytest.raises(InputError, match="3 files uploaded; the limit is 2"):
        s.synthetic_from_upload(files)
    with pytest.raises(InputError, match="holds 3 files; the limit is 2"):
        s.synthetic_from_upload([zip_with(tmp_path / "three.zip", {f"{i}.png": _png(i) for i in range(3)})])
    big = tmp_path / "big.png"
    big.write_bytes(_png(0) + bytes(200_000))  # a PNG with trailing junk: 200 kB on the wire
    with pytest.raises(InputError, match="limit is 0 MB"):
        s.synthetic_from_upload([big])
    assert len(s.synthetic_from_upload(files[:2])) == 2  # within the limits it loads


# ------------------------------------------------------------------------------------------ image headers
@pytest.mark.parametrize("as_zip", [True, False])
def test_public_upload_refuses_huge_images_by_header(public, world, tmp_path, as_zip):
    huge = png_with_claimed_size(tmp_path / "huge.png", 20000, 20000)  # 400 M pixels, 70 bytes on disk
    big = png_with_claimed_size(tmp_path / "big.png", 5000, 5000)  # 25 M: under the engine's 67 M, over 16.7 M
    ok = random_png(tmp_path / "ok.png")
    for bad, words in ((huge, "400,000,000"), (big, "5000x5000")):
        upload = [str(zip_with(tmp_path / "u.zip", {"ok.png": ok.read_bytes(), bad.name: bad.read_bytes()}))] \
            if as_zip else [str(ok), str(bad)]
        with pytest.raises(InputError, match=words) as err:
            public.synthetic_from_upload(upload, session="s1")
        assert bad.name in str(err.value)
    assert "CHEXGEN_PUBLIC_MAX_PIXELS" in str(err.value)
    assert _session_uploads("s1") == []
    # local mode leaves the 25 M image to the engine's limit (it is fake, but the upload is accepted)
    local = Studio(f"{world}@train", encoder="pixels", device="cpu")
    assert len(local.synthetic_from_upload([str(ok), str(big)])) == 2


def test_16bit_png_upload_keeps_its_depth_and_truncated_jpeg_is_named(public, tmp_path):
    z = zip_with(tmp_path / "d.zip", {"a.png": _png(1, size=32, mode="I;16"), "b.png": _png(2)})
    s = public.synthetic_from_upload([str(z)], session="s2")
    img = s.image(0)
    raw = np.asarray(Image.open(io.BytesIO(_png(1, size=32, mode="I;16"))), dtype=np.float64) / 65535
    assert np.allclose(img, raw, atol=1e-6)  # 16 bits kept, not squashed to 8
    assert len(np.unique(img)) > 256
    jpg = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(jpg, "JPEG", quality=90)
    cut = zip_with(tmp_path / "cut.zip", {"ok.png": _png(3), "cut.jpg": jpg.getvalue()[: len(jpg.getvalue()) * 6 // 10]})
    s = public.synthetic_from_upload([str(cut)], session="s2")
    with pytest.raises(InputError, match=r"cut\.jpg.*truncated"):
        [s.image(i) for i in range(len(s))]


# ------------------------------------------------------------------------------------------ CSVs in uploads
@pytest.mark.parametrize("csv,words", [
    ("path,prompt\n../../outside.png,Small effusion.\n", "outside the images root"),
    ("path,prompt\n/etc/hostname,Small effusion.\n", "outside the images root"),
    ("picture,prompt\na.png,Small effusion.\n", "no image column"),  # misnamed path column
    ("path,prompt\nmissing.png,Small effusion.\n", "missing.png"),
])
def test_upload_csv_problems_are_input_errors(public, tmp_path, csv, words):
    (tmp_path / "outside.png").write_bytes(_png(9))
    z = zip_with(tmp_path / "c.zip", {"a.png": _png(0), "metadata.csv": csv.encode()})
    with pytest.raises(InputError, match=words):
        public.synthetic_from_upload([str(z)], session="csv")


def test_upload_csv_with_extra_columns_and_an_unknown_pathology_label(public, tmp_path):
    csv = "path,prompt,scanner,Pneumonitis\na.png,Small right pleural effusion.,X1,1\n"
    z = zip_with(tmp_path / "e.zip", {"a.png": _png(0), "metadata.csv": csv.encode()})
    s = public.synthetic_from_upload([str(z)], session="csv")
    assert len(s) == 1 and s.prompts == ["Small right pleural effusion."]
    assert s.labels.shape[1] == 14  # an unknown pathology column is not a 15th label
    with pytest.raises(InputError, match="Pneumonitis"):
        example_prompts(public.ctx, "Pneumonitis")


def test_public_mode_refuses_server_paths_and_oversized_generate_jobs(public):
    with pytest.raises(InputError, match="public mode"):
        public.synthetic_from_folder("/etc")
    with pytest.raises(InputError, match="between 1 and 256"):
        public.synthetic_from_model("reference-oracle", 1000)


# ------------------------------------------------------------------------------------------ sessions
def test_public_leaderboard_shows_own_and_shared_runs_only(world, tmp_path):
    store_path = tmp_path / "results.sqlite"
    pub = Studio(f"{world}@train", public=True, encoder="pixels", device="cpu", store_path=store_path)
    store = pub.store()
    shared = store.save("fidelity", {"overall": {"pixels": {"FID": 1.0}}}, model="shared")
    mine = store.save("fidelity", {"overall": {"pixels": {"FID": 2.0}}}, model="mine", session="alice")
    theirs = store.save("fidelity", {"overall": {"pixels": {"FID": 3.0}}}, model="theirs", session="bob")
    assert set(pub.leaderboard(session="alice")["id"]) == {shared, mine}
    assert set(pub.leaderboard(session="bob")["id"]) == {shared, theirs}
    assert set(pub.leaderboard()["id"]) == {shared}  # no session: shared runs only
    assert len(pub.compare_runs(shared, mine, session="alice")) > 0
    with pytest.raises(InputError, match=f"No run with id {theirs}"):
        pub.compare_runs(mine, theirs, session="alice")
    local = Studio(f"{world}@train", encoder="pixels", device="cpu", store_path=store_path)
    assert set(local.leaderboard()["id"]) == {shared, mine, theirs}


def test_uploads_land_in_per_session_folders(public, tmp_path):
    z = zip_with(tmp_path / "ok.zip", {"a.png": _png(0), "b.png": _png(1)})
    a = public.synthetic_from_upload([str(z)], session="alice")
    b = public.synthetic_from_upload([str(z)], session="bob")
    root = subdir("uploads")
    assert Path(a.paths[0]).is_relative_to(root / "alice") and Path(b.paths[0]).is_relative_to(root / "bob")
    for hostile in ("..", "../../etc", "/etc", "."):  # a hostile session id cannot leave the uploads folder
        name = session_folder(hostile)
        assert name not in ("", ".", "..") and "/" not in name and (root / name).resolve().parent == root.resolve()


# ------------------------------------------------------------------------------------------ ZeroGPU and token
def test_gpu_decorator_is_a_no_op_off_zero_gpu_and_wraps_on_it(monkeypatch):
    from evaluators import space

    def work(x):
        return x + 1

    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert space.gpu(30)(work) is work
    calls = []
    fake = types.ModuleType("spaces")
    fake.__spec__ = importlib.machinery.ModuleSpec("spaces", None)

    def GPU(fn, duration=None):
        calls.append(duration)
        return lambda *a, **k: ("on gpu", fn(*a, **k))

    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert space.gpu(30)(work) is work  # the package alone is not enough: the Space must say ZeroGPU
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert space.zero_gpu()
    assert space.gpu(45)(work)(1) == ("on gpu", 2) and calls == [45]
    monkeypatch.delitem(sys.modules, "spaces")
    if importlib.util.find_spec("spaces") is None:  # the variable without the package: unchanged
        assert space.gpu(45)(work) is work


def test_hf_token_comes_from_the_environment(monkeypatch):
    from evaluators.space import hf_token, is_space

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    assert hf_token() is None
    monkeypatch.setenv("HF_TOKEN", " hf_abc ")
    assert hf_token() == "hf_abc"
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert not is_space()


def test_public_scrub_of_an_app_path_leaves_markdown_intact():
    """'<app>/assets/...' was read by the page's Markdown as an HTML tag: 'demo is available (trained demo model in'
    and nothing after it. The placeholder has no angle brackets, and the rest of the line survives."""
    from chexgen_ui.public_paths import scrub
    from evaluators.settings import repo_root

    text = f"**demo** is available (trained demo model in {repo_root()}/assets/demo_generator)."
    out = scrub(text)
    assert "<" not in out and ">" not in out and str(repo_root()) not in out
    assert out.endswith("APP_DIR/assets/demo_generator).")
