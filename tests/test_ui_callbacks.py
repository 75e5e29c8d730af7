"""The app's services and callbacks on a tiny world (fast; no browser).

The world is tests/ui_world.py's 85-patient (102 training images: enough to calibrate the copy check at 1%), 64-pixel set with a patient-disjoint split; the model is a
copier that returns training images, so memorisation checks must flag every image it makes.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexgen_ui import display, figures, tables
from chexgen_ui.display import window_level
from chexgen_ui.services import Studio, safe_extract_zip
from evaluators import catalogue
from evaluators.errors import InputError
from evaluators.labeler import label_report
from evaluators.leaderboard import run_choices
from evaluators.pathologies import INDEX, PATHOLOGIES
from evaluators.runs import embedding_map, inspect
from evaluators.runs.generate import example_prompts
from tests.helpers_images import zip_with
from tests.ui_world import COPIER, copier_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return copier_world(tmp_path_factory.mktemp("ui_world"), patients=85)


@pytest.fixture(scope="module")
def studio(world):
    """Index without the UMAP map (UMAP's first fit compiles with numba for ~30 s; see the slow map test)."""
    s = Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False)
    s.index()
    return s


@pytest.fixture(scope="module")
def generated(studio):
    return studio.generate(COPIER, "Small left pleural effusion.", n=3, seed=5)


def _png_bytes(seed: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    arr = (np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------- viewing
def test_window_level_maps_window_to_full_range_and_zoom_crops_centre():
    x = np.linspace(0, 1, 101, dtype=np.float32)[None, :].repeat(4, axis=0)
    full = window_level(x, 0.5, 1.0, min_size=1)
    assert full[0, 0] == 0 and full[0, -1] == 255 and full[0, 50] in (127, 128)
    narrow = window_level(x, 0.5, 0.5, min_size=1)
    assert (narrow[0, :25] == 0).all() and (narrow[0, 76:] == 255).all()  # outside the window: clipped
    assert narrow[0, 50] in (127, 128)
    img = np.zeros((40, 40), np.float32)
    img[10:30, 10:30] = 1.0  # bright centre square, half the width
    zoomed = window_level(img, 0.5, 1.0, zoom=2.0, min_size=1)
    assert zoomed.shape == (40, 40) and zoomed.mean() > 240  # the crop is the bright centre only
    assert window_level(img, min_size=512).shape == (512, 512)  # small images are enlarged for display


# ---------------------------------------------------------------------------------------- uploads


@pytest.mark.parametrize("bad,words", [
    ({"../evil.png": b"x"}, "'..'"),
    ({"/abs/evil.png": b"x"}, "absolute"),
    ({"a/../../evil.png": b"x"}, "'..'"),
])
def test_safe_extract_refuses_escaping_paths(tmp_path, bad, words):
    z = zip_with(tmp_path / "bad.zip", {"ok.png": _png_bytes(0), **bad})
    with pytest.raises(InputError, match=words):
        safe_extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    assert not (tmp_path / "evil.png").exists()


def test_safe_extract_refuses_symlinks_too_many_files_and_bombs(tmp_path):
    with pytest.raises(InputError, match="symbolic link"):
        safe_extract_zip(zip_with(tmp_path / "l.zip", {"a.png": b"x"}, symlink="link.png"), tmp_path / "o1")
    with pytest.raises(InputError, match="holds 3 files; the limit is 2"):
        safe_extract_zip(zip_with(tmp_path / "n.zip", {f"{i}.png": b"x" for i in range(3)}), tmp_path / "o2", max_files=2)
    with pytest.raises(InputError, match="expands to"):
        safe_extract_zip(zip_with(tmp_path / "b.zip", {"big.png": b"\0" * 5000}), tmp_path / "o3", max_bytes=1000)
    with pytest.raises(InputError, match="not a zip"):
        (tmp_path / "fake.zip").write_bytes(b"not a zip")
        safe_extract_zip(tmp_path / "fake.zip", tmp_path / "o4")


def test_upload_zip_with_csv_becomes_an_image_set(studio, tmp_path):
    csv = "img_savename,prompt\n" + "\n".join(f"s/{i}.png,Small right pleural effusion." for i in range(3))
    z = zip_with(tmp_path / "syn.zip", {**{f"s/{i}.png": _png_bytes(i) for i in range(3)}, "prompts.csv": csv.encode()})
    syn = studio.synthetic_from_upload([str(z)])
    assert len(syn) == 3
    assert syn.prompts == ["Small right pleural effusion."] * 3
    assert (syn.labels[:, INDEX["Pleural Effusion"]] == 1).all()  # labels read from the prompts


def test_upload_rejects_other_files_and_public_mode_refuses_server_paths(world, tmp_path):
    (tmp_path / "x.exe").write_bytes(b"MZ")
    s = Studio(f"{world}@train", encoder="pixels", device="cpu")
    with pytest.raises(InputError, match="not an image or CSV"):
        s.synthetic_from_upload([str(tmp_path / "x.exe")])
    with pytest.raises(InputError, match="Upload"):
        s.synthetic_from_upload([])
    public = Studio(f"{world}@train", public=True, encoder="pixels", device="cpu")
    with pytest.raises(InputError, match="public mode"):
        public.synthetic_from_folder(str(world.parent))


# ---------------------------------------------------------------------------------------- prompts and models
def test_example_prompts_are_positive_for_the_pathology(studio, world):
    prompts = example_prompts(studio.ctx, "Cardiomegaly", n_reference=3)
    assert len(prompts) >= 2
    assert label_report(prompts[0])[INDEX["Cardiomegaly"]] == 1  # the composed example says it
    table = pd.read_csv(world)
    real = set(table.loc[table["Cardiomegaly"] == 1, "prompt"])
    assert all(p in real for p in prompts[1:])  # the rest are real reference reports with the label


def test_model_choices_label_unavailable_models_and_generation_refuses_them(studio):
    rows = {r["name"]: r for r in catalogue.models()}
    labels = dict((v, k) for k, v in catalogue.model_choices())
    for name, r in rows.items():
        assert labels[name].endswith("(unavailable)") == (not r["available"])
    assert labels[COPIER] == COPIER
    missing = [n for n, r in rows.items() if not r["available"]]
    if missing:
        assert "unavailable" in catalogue.model_status(missing[0])
        with pytest.raises(Exception, match="unavailable"):
            studio.generate(missing[0], "Normal chest.", n=1)


# ---------------------------------------------------------------------------------------- generate & inspect
def test_generated_copies_are_flagged_and_neighbours_are_the_copied_patients(studio, generated):
    assert len(generated) == 3
    assert generated.threshold is not None
    assert generated.flags.all()  # a copier is memorisation by definition
    assert (generated.copy_score > generated.threshold).all()
    train = studio.reference_set()
    for i, seed in enumerate(generated.seeds):
        copied = train.table.iloc[seed % len(train)]
        assert generated.neighbours[i][0].patient_id == copied["patient_id"]
    assert generated.umap is None  # this index has no map
    assert generated.reid == [None] * 3 or all(0 <= r <= 1 for r in generated.reid)
    table = inspect.neighbour_table(generated, 0)
    assert list(table.columns) == ["rank", "similarity", "patient", "labels", "report"]
    assert table["similarity"].is_monotonic_decreasing and len(table) == 5
    verdict = inspect.verdict_text(studio.ctx, generated, 0)
    assert verdict.startswith("**Verdict: memorised.**")  # one decision, then its evidence
    assert sum(f"Verdict: {d}." in verdict for d in ("memorised", "same patient", "new", "unknown")) == 1
    assert "p-value" in verdict and "leave-one-out over the training index" in verdict  # how the threshold was set
    assert "re-ID" in verdict
    panel = inspect.evidence_image(studio.ctx, generated, 0)  # synthetic | training aligned | overlay | difference
    assert panel.dtype == np.uint8 and panel.shape[1] == 4 * panel.shape[0] and panel.shape[2] == 3


def test_calibration_is_leave_one_out_over_the_training_patients_and_is_cached(studio):
    cal = inspect.calibration(studio.ctx)
    cached = list(studio.index().dir.glob("calibration-*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["threshold"] == cal["threshold"]
    assert cal["n"] == cal["n_queries"] == 102 and cal["patient_ids_used"] is True  # 51 patients x 2 studies
    assert cal["source"].startswith("leave-one-out over the training index") and cal["match"] == "registered"
    fresh = Studio(studio.reference, encoder="pixels", device="cpu", umap=False)
    mtime = cached[0].stat().st_mtime_ns
    assert inspect.calibration(fresh.ctx)["threshold"] == cal["threshold"] and cached[0].stat().st_mtime_ns == mtime


def test_app_and_cli_privacy_agree(studio, world, tmp_path):
    """The Generate tab's verdict, the Batch tab and the privacy CLI are one engine: same threshold, same flags."""
    from evaluators.privacy.suite import run_privacy

    copies = tmp_path / "copies"
    copies.mkdir()
    gen = studio.generate(COPIER, "Small left pleural effusion.", n=4, seed=2)
    for i, img in enumerate(gen.images):
        Image.fromarray(display.to_uint8(img)).save(copies / f"c{i}.png")
    cli = run_privacy(f"{world}@train", copies, encoder="pixels", reid=None)
    app = studio.run_privacy(studio.synthetic_from_folder(str(copies)))
    assert cli["calibration"]["threshold"] == pytest.approx(inspect.calibration(studio.ctx)["threshold"])
    cli_flags = [s["flagged"] for s in cli["samples"]]
    assert cli_flags == [s["flagged"] for s in app.result["samples"]] == [True] * 4
    cli_scores = [s["match"]["copy_score"] for s in cli["samples"]]
    np.testing.assert_allclose(cli_scores, [s["match"]["copy_score"] for s in app.result["samples"]])
    # PNG round trip (8-bit) moves the copy score a little; the verdict is the same
    np.testing.assert_allclose(cli_scores, gen.copy_score, atol=0.02)


def test_export_zip_holds_pngs_and_metadata(studio, generated, tmp_path):
    path = studio.export_zip(generated, tmp_path)
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        meta = pd.read_csv(io.BytesIO(zf.read("metadata.csv")))
        first = np.asarray(Image.open(io.BytesIO(zf.read(meta["img_savename"][0]))))
    assert len([n for n in names if n.endswith(".png")]) == 3
    assert list(meta["seed"]) == generated.seeds and (meta["prompt"] == "Small left pleural effusion.").all()
    assert meta["memorisation_flag"].all() and (meta["verdict"] == "memorised").all()
    np.testing.assert_allclose(first / 255.0, generated.images[0], atol=1 / 255)


@pytest.mark.slow
def test_map_points_and_figure(world):
    studio = Studio(f"{world}@train", encoder="pixels", device="cpu")
    generated = studio.generate(COPIER, "Small left pleural effusion.", n=3, seed=5)
    assert generated.umap.shape == (3, 2)
    pts = embedding_map.map_points(studio.ctx)
    assert len(pts) == len(studio.index()) == 102
    # a copy lands on the map next to the training image it copies
    own = pts.loc[5, ["x", "y"]].to_numpy(float)
    spread = np.ptp(pts[["x", "y"]].to_numpy(float), axis=0).max()
    assert np.linalg.norm(generated.umap[0] - own) < 0.1 * spread
    fig = figures.umap_figure(pts, generated.umap, ["a", "b", "c"])
    gen_trace = [t for t in fig.data if t.name.startswith("generated")]
    assert len(gen_trace) == 1 and list(gen_trace[0].customdata) == ["gen:0", "gen:1", "gen:2"]
    ref_keys = [k for t in fig.data if not t.name.startswith("generated") for k in t.customdata]
    assert sorted(int(k.split(":")[1]) for k in ref_keys) == list(range(102))  # every reference row once
    img, caption = embedding_map.reference_image(studio.ctx, 3)
    assert img.shape == (64, 64) and 0.0 <= img.min() <= img.max() <= 1.0 and "patient" in caption  # tab: uint8
    with pytest.raises(InputError, match="out of range"):
        embedding_map.reference_image(studio.ctx, 999)


def test_map_caption_of_a_reference_without_reports(tmp_path):
    """A real reference set often has no report (the NIH sample): the caption says so instead of 'nan', and names
    the file a clinician can look up."""
    from types import SimpleNamespace

    import pandas as pd
    from PIL import Image

    path = tmp_path / "00000011_000.png"
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(path)
    meta = pd.DataFrame({"path": [str(path)], "patient_id": ["11"], "prompt": [float("nan")]})
    labels = np.full((1, 14), np.nan, np.float32)
    index = SimpleNamespace(meta=meta, labels=labels)
    ctx = SimpleNamespace(index=lambda: _Sized(index, 1))
    _, caption = embedding_map.reference_image(ctx, 0)
    assert "nan" not in caption and "no report" in caption and "00000011_000.png" in caption


class _Sized:
    def __init__(self, inner, n):
        self._inner, self._n = inner, n

    def __len__(self):
        return self._n

    def __getattr__(self, name):
        return getattr(self._inner, name)


# ---------------------------------------------------------------------------------------- privacy
def test_privacy_run_flags_every_copy_and_is_stored(studio):
    syn = studio.synthetic_from_model(COPIER, 12, seed=0)
    run = studio.run_privacy(syn, model=COPIER)
    mem = run.result["memorisation"]
    assert mem["n"] == 12 and mem["n_flagged"] == 12  # a copier copies
    assert run.result["summary"]["distinct_train_images_flagged"] == 12  # seeds 0..11 copy 12 training images
    assert run.result["summary"]["excess_over_expected"] == pytest.approx(100.0)  # 100% flagged vs 1% expected
    assert list(run.per_pathology["pathology"]) == list(PATHOLOGIES)
    assert run.per_pathology.loc[run.per_pathology["n"] > 0, "fraction_flagged"].eq(1.0).all()
    stored = studio.store().get(run.run_id)
    assert stored["kind"] == "privacy" and stored["metrics"]["fraction_flagged"] == 1.0
    assert run.json_path.is_file()


# ---------------------------------------------------------------------------------------- fidelity, store, leaderboard
def test_leaderboard_lists_store_runs_and_compares_two(world, tmp_path):
    s = Studio(f"{world}@train", encoder="pixels", device="cpu", store_path=tmp_path / "r.sqlite")
    store = s.store()
    a = store.save("fidelity", {"overall": {"pixels": {"FID": 1.5, "KID": 0.01}}, "settings": {"bootstrap": 0}},
                   model="m1", synthetic="set-a")
    b = store.save("fidelity", {"overall": {"pixels": {"FID": 0.5, "KID": float("nan")}}, "settings": {"bootstrap": 9}},
                   model="m2", synthetic="set-b")
    board = s.leaderboard()
    assert list(board["id"]) == [b, a] and list(board["model"]) == ["m2", "m1"]
    assert list(board["FID (pixels)"]) == [0.5, 1.5]
    assert board["KID (pixels)"].isna().iloc[0]  # NaN stays missing, not 0
    assert "bootstrap=9" in board["settings"].iloc[0]
    side = s.compare_runs(a, b).set_index("field")
    assert side.loc["FID (pixels)", f"run {a}"] == 1.5 and side.loc["FID (pixels)", f"run {b}"] == 0.5
    assert side.loc["model", f"run {b}"] == "m2"
    with pytest.raises(InputError, match="No run"):
        s.compare_runs(a, 10_000)
    assert len(figures.leaderboard_figure(board).data) >= 1
    # the side-by-side pickers: the newest pair of runs of one kind (B the newer), named, newest first
    c = store.save("privacy", {"summary": {"fraction_flagged": 0.1}}, model="m3", synthetic="set-c")
    choices, pick_a, pick_b = run_choices(s.leaderboard())
    assert [v for _, v in choices] == [c, b, a] and choices[0][0].startswith(f"#{c} privacy · m3 · ")
    assert (pick_a, pick_b) == (a, b)  # the privacy run has no earlier privacy run to compare with
    d = store.save("privacy", {"summary": {"fraction_flagged": 0.2}}, model="m4", synthetic="set-d")
    assert run_choices(s.leaderboard())[1:] == (c, d)
    assert run_choices(s.leaderboard("utility")) == ([], None, None)
    only = s.leaderboard()
    assert run_choices(only[only["id"].isin([a, c])])[1:] == (None, c)  # no pair: the newest, A empty


def test_leaderboard_names_the_reference_and_what_numbers_are_not_valid_for(tmp_path):
    """Runs against different references must not read as one ranking, and demo-encoder numbers on real images say
    they are not comparable with RadDino ones, on the leaderboard row itself."""
    from evaluators.leaderboard import leaderboard
    from evaluators.store import ResultsStore

    store = ResultsStore(tmp_path / "r.sqlite")
    e = store.save("fidelity", {"overall": {"demo": {"FID": 2.0}}}, model="m5", synthetic="real-nih",
                   reference=str(tmp_path / "nih") + "@train")
    f = store.save("fidelity", {"overall": {"demo": {"FID": 0.9}}}, model="m6", synthetic="d", reference="demo@train")
    g = store.save("fidelity", {"overall": {"pixels": {"FID": 0.9}}}, model="m7", synthetic="x",
                   reference=str(tmp_path / "nih") + "@train")
    h = store.save("utility", {"summary": {}}, model="demo", synthetic="demo-n40", reference=str(tmp_path / "nih"))
    board = leaderboard(store).set_index("id")
    assert board.loc[e, "reference"].endswith("nih@train") and "not the demo world" in board.loc[e, "notes"]
    assert "phantoms" in board.loc[h, "notes"] and "encoder" not in board.loc[h, "notes"]  # the demo model
    assert board.loc[f, "notes"] == "" and board.loc[g, "notes"] == ""  # the demo world / not the demo encoder


@pytest.mark.slow
def test_fidelity_run_from_model_saved_and_compared(studio):
    syn = studio.synthetic_from_model(COPIER, 12, seed=0)
    assert len(syn) == 12 and syn.labels_source == "metadata"
    run = studio.run_fidelity(syn, model=COPIER, min_count=2, kid_subsets=5)  # PRDC still needs k + 1 = 6
    for row in run.result["per_pathology"]:
        if min(row["n_real"], row["n_synthetic"]) < 6:
            assert "needs k+1" in row["skipped"]
    assert len(run.per_pathology) == len(PATHOLOGIES) * len(run.result["overall"])  # per encoder (radiomics: FRD)
    assert list(run.per_pathology.columns[:2]) == ["pathology", "skipped"]  # the reason is on screen, not at the end
    assert run.csv_path.is_file() and run.json_path.is_file()
    assert list(run.counts["n_real"]) == sorted(run.counts["n_real"])  # rarest first
    run2 = studio.run_fidelity(syn, model="again", per_pathology=False, kid_subsets=5)
    board = studio.leaderboard()
    assert {run.run_id, run2.run_id} <= set(board["id"])
    assert "FID (pixels)" in board.columns
    side = studio.compare_runs(run.run_id, run2.run_id)
    fid = side[side["field"] == "FID (pixels)"].iloc[0]
    assert fid[f"run {run.run_id}"] == pytest.approx(fid[f"run {run2.run_id}"])  # same set, same FID
    with pytest.raises(InputError, match="No run"):
        studio.compare_runs(run.run_id, 10_000)
    evaluated = (run.per_pathology["skipped"] == "").any()
    fig = figures.fidelity_bars(run.per_pathology, result=run.result)
    assert (len(fig.data) > 0) == evaluated
    assert evaluated or any("enough images" in a.text for a in fig.layout.annotations)


def test_fidelity_status_line_names_encoders_comparability_and_what_is_unavailable(studio):
    """The Per-pathology tab's status line, from the result alone: images, each encoder and its preprocessing, the
    run id; an optional encoder that did not load (radiomics: FRD), with its reason (that note used to be a list that
    the summary and the Batch line called .items() on, or was overwritten by the comparability notes); the demo
    encoder on images that are not the demo world; MS-SSIM's availability."""
    pytest.importorskip("radiomics")  # the default encoders add radiomics off the demo world when it is installed
    from evaluators.domain import DEMO_ENCODER_NOTE
    from evaluators.errors import UnavailableError
    from evaluators.fidelity import format_summary, run_fidelity

    def load(name):
        if name in ("radiomics", "inception"):
            raise UnavailableError(f"{name} encoder: refused for this test")
        return studio.ctx.load_encoder(name)

    syn = studio.synthetic_from_model(COPIER, 12, seed=0)
    kw = {"per_pathology": True, "min_count": 2, "kid_subsets": 5, "alignment": False, "load_encoder": load}
    result = run_fidelity(studio.index(), syn, **kw)
    assert result["encoders_skipped"]["radiomics"] == "radiomics encoder: refused for this test"
    assert "note: radiomics skipped: radiomics encoder: refused for this test" in format_summary(result)
    line = tables.fidelity_status_line(result, 7, "Per-pathology fidelity")
    assert line.startswith("Per-pathology fidelity done in ") and "12 synthetic vs 102 reference images" in line
    assert "encoders: pixels (clean preprocessing)" in line and "saved as run #7." in line
    assert "radiomics not used: radiomics encoder: refused for this test." in line
    ms = result["Intra-prompt MS-SSIM"]
    assert (f"Intra-prompt MS-SSIM unavailable: {ms['reason']}." if not ms["available"] else "Intra-prompt MS-SSIM ") \
        in line
    demo = run_fidelity(studio.index(), syn, encoders=["demo"], **kw)  # this world has no demo-world marker
    line = tables.fidelity_status_line(demo, None, "Per-pathology fidelity")
    assert "encoders: demo (clean preprocessing)" in line and f"Encoder note (demo): results {DEMO_ENCODER_NOTE}." in line
    assert "not comparable with RadDino" in line and "saved as run" not in line


# ---------------------------------------------------------------------------------------- the Blocks
def test_build_app_public_mode_hides_server_folder(studio, world):
    import gradio as gr

    from chexgen_ui.app import build_app

    def radios(demo):
        return [c for c in demo.blocks.values() if isinstance(c, gr.Radio)]

    local = build_app(studio=studio)
    assert any("server folder or CSV" in [ch[1] for ch in r.choices] for r in radios(local))
    public = build_app(studio=Studio(f"{world}@train", public=True, encoder="pixels", device="cpu"), public=True)
    assert all("server folder or CSV" not in [ch[1] for ch in r.choices] for r in radios(public))


def test_user_errors_become_gradio_errors():
    import gradio as gr

    from chexgen_ui.widgets import _user_errors

    @_user_errors
    def bad():
        raise InputError("the CSV has no 'prompt' column")

    with pytest.raises(gr.Error, match="no 'prompt' column") as err:
        bad()
    assert err.value.duration is None  # stays on the page until closed (a faded toast left only an "Error" badge)


def test_leaderboard_figure_shows_every_kind_of_run():
    """Privacy runs list many numbers; the fidelity and utility runs beside them must still get bars."""
    privacy = {f"privacy metric {j}": 0.1 * j for j in range(20)} | {"n": 32, "reid_available": 1.0}
    board = pd.DataFrame([
        {"id": 3, "kind": "privacy", "model": "m", **privacy},
        {"id": 2, "kind": "fidelity", "model": "m", "FID (demo)": 1.5, "KID (demo)": 0.01},
        {"id": 1, "kind": "utility", "model": "m", "AUC (real)": 0.8, "AUC (synthetic)": 0.7},
    ])
    names = [t.name for t in figures.leaderboard_figure(board).data]
    assert len(names) == 16
    assert {"FID (demo)", "KID (demo)", "AUC (real)", "AUC (synthetic)", "privacy metric 0"} <= set(names)
    assert "n" not in names and "reid_available" not in names  # counts and flags are not metrics


# ---------------------------------------------------------------------------------------- re-ID on a non-demo reference
@pytest.mark.slow
def test_reid_outside_the_demo_world_is_unavailable_until_trained_on_the_reference(world):
    """The tiny world is not the demo world: no demo-model numbers; training in the app makes one, with its AUC."""
    s = Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False)
    status = s.reid_status()
    assert status.startswith("re-ID: unavailable") and "train-reid" in status and s.ctx.reid_choice().model is None
    seen = []
    result = s.train_reid(epochs=1, pairs_per_epoch=64, batch_size=16,
                          progress=lambda done, total, desc: seen.append((done, total)))
    assert seen and seen[-1][0] == seen[-1][1]  # progress reached the end
    choice = s.ctx.reid_choice()
    assert choice.available and choice.name == "trained on this set"
    assert choice.auc == pytest.approx(result["val_auc"])
    assert f"verification AUC {choice.auc_text}" in s.reid_status()
    gen = s.generate(COPIER, "Small left pleural effusion.", n=2, seed=1)
    verdict = inspect.verdict_text(s.ctx, gen, 0)
    assert "Verdict: memorised." in verdict and f"by trained on this set, verification AUC {choice.auc_text}" in verdict
    table = tables.privacy_image_table(s.run_privacy(s.synthetic_from_folder(str(world.parent / "images"))).result)
    assert {"verdict", "copy_score", "reid_score", "re-ID model (AUC)", "why"} <= set(table.columns)
    assert table["re-ID model (AUC)"].str.startswith("trained on this set (").all()


def test_display_tables_round_floats_and_leave_out_an_empty_reid_column():
    """The leaderboard shows 4 significant digits (the store keeps every digit); the privacy table has no re-ID
    column when re-ID was not computed (the status says why), and keeps it when it was."""
    import numpy as np
    import pandas as pd

    from chexgen_ui.tables import privacy_image_table, rounded

    board = pd.DataFrame({"id": [1, 2], "FID (demo)": [1.0839698301808927, np.nan], "model": ["a", "b"]})
    shown = rounded(board)
    assert shown["FID (demo)"][0] == 1.084 and np.isnan(shown["FID (demo)"][1]) and board["FID (demo)"][0] > 1.08396
    assert list(shown["id"]) == [1, 2] and list(shown["model"]) == ["a", "b"]
    smp = {"synthetic": "/x/a.png", "match": {"copy_score": 0.9, "path": "/t/b.png"}, "reid_score": None,
           "verdict": {"decision": "memorised", "reason": "r"}}
    assert "reid_score" not in privacy_image_table({"samples": [smp]}).columns
    scored = {**smp, "reid_score": 0.7, "reid_model": "m", "reid_auc_text": "0.9"}
    assert list(privacy_image_table({"samples": [scored, smp]})["reid_score"])[:1] == [0.7]


def test_public_app_says_re_id_is_unavailable_without_operator_instructions(tmp_path):
    """A visitor cannot provide a re-ID model: the public app says re-ID is unavailable here, without the operator's
    paths and commands that the local app (and the CLI) give."""
    fresh = copier_world(tmp_path / "w", patients=12)  # no re-ID model trained on it (other tests train on `world`)
    studio = Studio(f"{fresh}@train", encoder="pixels", device="cpu", umap=False)
    public = Studio(f"{fresh}@train", public=True, encoder="pixels", device="cpu", umap=False)
    assert not studio.ctx.reid_choice("auto").available  # not the demo world: no default re-ID model here
    assert "train-reid" in studio.reid_status() and "train-reid" in studio.reid_status(short=False)
    text = public.reid_status(short=True)
    assert text.startswith("re-ID: unavailable on this public app") and "train-reid" not in text
    assert "CHEXGEN_HOME" not in public.reid_status() and "weights" not in public.reid_status()


def test_privacy_of_an_unlabelled_folder_says_why_it_has_no_per_pathology_rates(studio, world, tmp_path):
    """An empty per-pathology table showed Gradio's placeholder headers "1 2 3"; it now holds one line saying why."""
    import shutil

    from evaluators.imagesets import load_image_set

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for p in load_image_set(f"{world}@test").paths[:3]:
        shutil.copy(p, folder)
    run = studio.run_privacy(load_image_set(folder))
    assert list(run.per_pathology.columns) == ["note"] and "no per-pathology rates" in run.per_pathology["note"][0]
    assert len(run.top) == 3  # the per-image verdicts are there
