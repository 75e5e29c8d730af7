"""The embedding map coloured by the privacy job's C_T cells (evaluators.runs.ct_map): the map's cells are the cells
C_T scored, copies sit in negative cells, unscored cells say so; the CLI writes them and the app draws them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexgen_ui import display
from chexgen_ui.services import Studio
from evaluators.cli import main as cli
from evaluators.errors import InputError
from evaluators.metrics import copying
from evaluators.runs import ct_map
from tests.ui_world import COPIER, copier_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return copier_world(tmp_path_factory.mktemp("ctmap_world"), patients=85)


@pytest.fixture(scope="module")
def studio(world):
    return Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False)


@pytest.fixture(scope="module")
def copies(studio, tmp_path_factory):
    """48 copier images (training images of two prompts): one k-means cell gets more than 20 of them."""
    folder = tmp_path_factory.mktemp("ctmap_copies")
    for j, prompt in enumerate(("Small left pleural effusion.", "No acute cardiopulmonary process.")):
        gen = studio.generate(COPIER, prompt, n=24, seed=10 + j)
        for i, img in enumerate(gen.images):
            Image.fromarray(display.to_uint8(img)).save(folder / f"m{j}{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def run(studio, copies):
    return studio.run_privacy(studio.synthetic_from_folder(str(copies)), model="ctmap-copy")


def test_map_cells_are_the_cells_c_t_scored(studio, copies, run):
    from evaluators.features import extract_features
    from evaluators.privacy.data_copying import _unit, data_copying, heldout_features, train_features

    sec = json.loads(run.json_path.read_text())["data_copying"]["C_T"]
    assert sec["centres"]["dtype"] == "float32" and "base64" in sec["centres"]  # compact: no per-point train cells
    cells = studio.ct_cells(run_id=run.run_id)
    assert cells.source == f"privacy run #{run.run_id}"
    # same Z per cell, same synthetic cells as the privacy job's own result
    assert cells.cells["Z_U"].tolist() == [c["Z_U"] for c in sec["cells"]]
    assert cells.cells["scored"].tolist() == [c["included"] for c in sec["cells"]]
    assert cells.synthetic["cell"].tolist() == sec["synthetic_cell"]
    # the training cells the map recomputes from the stored centres are the ones C_T used: C_T recomputed from
    # them (held-out cells from the same centres) is the job's C_T to the last bit
    search = studio.ctx.search()
    train = train_features(studio.index())
    held = _unit(heldout_features(search)[0])
    syn = _unit(extract_features(sorted(map(str, copies.glob("*.png"))), studio.encoder()).features)
    centres = copying.decode_centres(sec["centres"])
    again = copying.c_t_from_cells(train, cells.train_cell, held, copying.assign_cells(held, centres), syn,
                                   np.asarray(sec["synthetic_cell"]), n_cells=sec["n_cells"])
    assert again["C_T"] == sec["C_T"] and [c["Z_U"] for c in again["cells"]] == [c["Z_U"] for c in sec["cells"]]
    # and they are scikit-learn's k-means cells of these features (the one clustering, not a second one)
    km = copying.kmeans_cells(train, sec["n_cells"], seed=sec["seed"])
    np.testing.assert_array_equal(cells.train_cell, km.labels_)
    # a fresh computation of C_T alone gives the same cells
    fresh = data_copying(search, extract_features(sorted(map(str, copies.glob("*.png"))), studio.encoder()).features,
                         only=("C_T",))
    assert set(fresh) == {"space", "heldout", "C_T"}
    assert fresh["C_T"]["C_T"] == sec["C_T"] and fresh["C_T"]["centres"] == sec["centres"]


def test_copies_sit_in_negative_cells_and_unscored_cells_say_so(studio, run):
    cells = studio.ct_cells()  # the newest privacy run on this reference
    ref, syn = ct_map.points(studio.ctx, cells, need_map=False)
    assert len(ref) == len(studio.index()) and len(syn) == 48
    scored_syn = syn[syn["scored"]]
    assert len(scored_syn) > 20 and (scored_syn["Z_U"] < -3).all()  # exact copies: far closer than held-out images
    assert cells.section["C_T"] < -3
    # every point carries its cell's Z and status; reference points of the copies' cells are red too
    per_cell = cells.cells.set_index("cell")
    assert (ref["Z_U"].to_numpy() == per_cell.loc[ref["cell"], "Z_U"].to_numpy()).all()
    unscored = cells.cells[~cells.cells["scored"]]
    assert len(unscored)  # this set leaves a cell with too few synthetic images
    for _, c in unscored.iterrows():
        assert c["cell_status"].startswith("not scored")
        assert "more than 20" in c["cell_status"] or "no " in c["cell_status"]
        assert (ref.loc[ref["cell"] == c["cell"], "scored"] == False).all()  # noqa: E712 - a numpy bool column
    assert "cells scored" in ct_map.summary_line(cells) and "copying" in ct_map.summary_line(cells)


def test_cells_are_refused_for_another_index_or_an_old_run(studio, run):
    data = json.loads(run.json_path.read_text())
    old = json.loads(json.dumps(data))
    del old["data_copying"]["C_T"]["centres"]
    with pytest.raises(InputError, match="before the C_T cell centres"):
        ct_map.from_result(studio.ctx, old, "run x")
    other = json.loads(json.dumps(data))
    other["data_copying"]["C_T"]["n_train"] = 5
    with pytest.raises(InputError, match="5 training images"):
        ct_map.from_result(studio.ctx, other, "run x")
    with pytest.raises(InputError, match="privacy run #999"):
        studio.ct_cells(run_id=999)


def test_cli_writes_the_cells(world, studio, copies, run, tmp_path, capsys):
    sec = json.loads(run.json_path.read_text())["data_copying"]["C_T"]
    want = studio.ct_cells(run_id=run.run_id)
    base = ["embedding-map", "--reference", f"{world}@train", "--encoder", "pixels", "--device", "cpu", "--no-umap"]
    for source in (["--privacy", str(run.json_path)], ["--run", str(run.run_id)], ["--synthetic", str(copies)]):
        out = tmp_path / "map.csv"
        assert cli([*base, "--colour", "ct-cell", *source, "--out", str(out)]) == 0
        df = pd.read_csv(out)
        ref, syn = df[df["kind"] == "reference"], df[df["kind"] == "synthetic"]
        assert ref["row"].tolist() == list(range(len(studio.index())))
        assert ref["cell"].tolist() == want.train_cell.tolist()
        assert syn["cell"].tolist() == sec["synthetic_cell"]
        z = {c["cell"]: c["Z_U"] for c in sec["cells"]}
        np.testing.assert_allclose(df["Z_U"], [z[c] for c in df["cell"]])
        assert (df["scored"] == df["cell"].map({c["cell"]: c["included"] for c in sec["cells"]})).all()
        assert df["x"].isna().all()  # --no-umap on an index without a map
    assert "cells scored" in capsys.readouterr().out
    out = tmp_path / "plain.csv"
    assert cli([*base, "--out", str(out)]) == 0 and "cell" not in pd.read_csv(out).columns
    assert cli([*base, "--colour", "ct-cell", "--out", str(out)]) == 2
    assert "--privacy RUN.json" in capsys.readouterr().err


def test_app_colours_the_map_by_cell(studio, run, monkeypatch):
    """The tab's callback draws the C_T colouring (the 2-D map is faked: fitting UMAP costs ~30 s of numba)."""
    from chexgen_ui.tabs import embedding_map as tab
    from evaluators.index import ReferenceIndex

    monkeypatch.setattr(ReferenceIndex, "has_umap", property(lambda self: True))
    monkeypatch.setattr(ReferenceIndex, "umap_coords", property(lambda self: np.asarray(self.normed)[:, :2]))
    monkeypatch.setattr(ReferenceIndex, "umap_transform",
                        lambda self, f: (f / np.linalg.norm(f, axis=1, keepdims=True))[:, :2])
    fig_json, status = tab.map_outputs(studio, None, tab.CT_CHOICE, run.run_id)
    fig = json.loads(fig_json)
    names = [t["name"] for t in fig["data"]]
    assert any(n.startswith("reference, cell scored") for n in names)
    assert any(n.startswith("reference, cell not scored") for n in names)
    assert any(n.startswith("synthetic, cell scored") for n in names)
    scored = next(t for t in fig["data"] if t["name"].startswith("synthetic, cell scored"))
    assert scored["marker"]["coloraxis"] == "coloraxis" and max(scored["marker"]["color"]) < 0
    grey = next(t for t in fig["data"] if t["name"].startswith("reference, cell not scored"))
    assert grey["marker"]["color"] == "#BBBBBB" and all("not scored" in h for h in grey["text"])
    axis = fig["layout"]["coloraxis"]
    assert axis["cmid"] == 0 and axis["cmin"] == -axis["cmax"]  # diverging, centred on Z = 0
    assert f"privacy run #{run.run_id}" in status and "cells scored" in status
    # the box left blank reaches the callback as 0 (Gradio's empty Number): the newest run, not 'no run #0'
    _, newest = tab.map_outputs(studio, None, tab.CT_CHOICE, 0)
    assert "privacy run #" in newest and "cells scored" in newest
    # pathology colouring is unchanged; without a privacy run the tab says what to run
    plain, _ = tab.map_outputs(studio, None, "pathology")
    assert "coloraxis" not in json.loads(plain)["layout"]


def test_app_without_a_privacy_run_says_what_to_run(world, monkeypatch, tmp_path):
    from chexgen_ui.tabs import embedding_map as tab
    from evaluators.index import ReferenceIndex

    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))  # an empty results store
    monkeypatch.setattr(ReferenceIndex, "has_umap", property(lambda self: True))
    monkeypatch.setattr(ReferenceIndex, "umap_coords", property(lambda self: np.asarray(self.normed)[:, :2]))
    s = Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False)
    fig_json, status = tab.map_outputs(s, None, tab.CT_CHOICE)
    assert "not available" in status and "Batch suite" in status and "python -m evaluators privacy" in status
    assert json.loads(fig_json)["data"]  # the pathology map is still drawn


def test_assign_cells_is_the_exact_nearest_centre_whatever_the_blocks():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3000, 16)).astype(np.float32)
    km = copying.kmeans_cells(x, 7, seed=1)
    centres = copying.decode_centres(copying.encode_centres(km.cluster_centers_))
    assert centres.dtype == np.float32 and np.array_equal(centres, km.cluster_centers_.astype(np.float32))
    got = copying.assign_cells(x, centres, block_rows=128)
    brute = np.argmin(((x.astype(np.float64)[:, None, :] - centres.astype(np.float64)[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(got, brute)
    np.testing.assert_array_equal(got, copying.assign_cells(x[::-1], centres, block_rows=999)[::-1])
    # a point on a tie between two identical centres goes to the first; an exact centre to itself
    twin = np.stack([centres[0], centres[0], centres[1]])
    np.testing.assert_array_equal(copying.assign_cells(twin, twin), [0, 0, 2])
    with pytest.raises(InputError, match="do not fit"):
        copying.assign_cells(x, centres[:, :3])
    with pytest.raises(InputError, match="cannot be read"):
        copying.decode_centres({"shape": [2, 2], "base64": "AAAA"})


# ------------------------------------------------------------------------------------------ the tab's clicks
@pytest.fixture
def fake_map(monkeypatch):
    """A 2-D map without fitting UMAP (~30 s of numba): the first two normalised feature dimensions."""
    from evaluators.index import ReferenceIndex

    monkeypatch.setattr(ReferenceIndex, "has_umap", property(lambda self: True))
    monkeypatch.setattr(ReferenceIndex, "umap_coords", property(lambda self: np.asarray(self.normed)[:, :2]))
    monkeypatch.setattr(ReferenceIndex, "umap_transform",
                        lambda self, f: (f / np.linalg.norm(f, axis=1, keepdims=True))[:, :2])


@pytest.fixture(scope="module")
def demo(studio):
    from chexgen_ui.app import build_app

    return build_app(studio=studio)


def _fn(app, name: str):
    return next(f.fn for f in app.fns.values() if getattr(f.fn, "__name__", "") == name)


def _click(key: str):
    from types import SimpleNamespace

    return SimpleNamespace(key=key, _data={"key": key})


def _shown(fig: dict) -> dict:
    """What the map shows per point: customdata key -> (cell, scored, Z or None, x, y, hover)."""
    import base64
    import re

    def arr(v):
        if isinstance(v, dict) and "bdata" in v:
            return np.frombuffer(base64.b64decode(v["bdata"]), dtype=v["dtype"])
        return np.asarray(v, dtype=float)

    out = {}
    for t in fig["data"]:
        if not str(t["customdata"][0]).startswith(("ref:", "set:")):
            continue  # the Generate tab's stars
        scored = " cell scored " in f" {t['name']} "
        z = arr(t["marker"]["color"]) if scored else [None] * len(t["customdata"])
        for key, x, y, zz, text in zip(t["customdata"], arr(t["x"]), arr(t["y"]), z, t["text"]):
            cell = int(re.match(r"cell (\d+) ", text).group(1))
            out[key] = (cell, scored, zz, float(x), float(y), text)
    return out


def test_a_set_star_shows_its_image_and_searches_from_it(demo, studio, copies, run, fake_map):
    """A star of the privacy run's synthetic set shows that image; *Search from this point* lists its nearest
    training images (the engine's file search), and a trail through it follows and goes back."""
    import gradio as gr

    from evaluators.imageio import read_image
    from evaluators.runs import neighbours

    fig_json, _, synthetic = _fn(demo, "on_map")(None, "C_T cell (data copying)", run.run_id)
    stars = [k for t in json.loads(fig_json)["data"] for k in t["customdata"] if str(k).startswith("set:")]
    assert len(stars) == 48 and synthetic.source == f"privacy run #{run.run_id}"
    key = stars[5]
    i = int(key[4:])
    path = synthetic.table["path"].iloc[i]
    img, caption = _fn(demo, "on_point")(None, synthetic, _click(key))
    np.testing.assert_array_equal(img, display.window_level(read_image(path), min_size=300))  # enlarged to 300 px
    assert max(img.shape[:2]) == 300
    cell = int(synthetic.table["cell"].iloc[i])
    assert caption.startswith(f"synthetic image #{i} of privacy run #{run.run_id}") and f"cell {cell}" in caption
    # the click remembers the star with its run; the search is the engine's search of that file
    remembered = _fn(demo, "on_key")(synthetic, _click(key))
    assert remembered == f"set:{i}@privacy run #{run.run_id}"
    trail, rows, *_, gallery, summary, _ = _fn(demo, "on_search")(None, remembered, synthetic)
    want = neighbours.from_file(studio.ctx, path, k=5)
    assert rows == [nb.row for nb in want.neighbours] and summary == want.summary and len(gallery) == 5
    assert trail == [(remembered, f"synthetic #{i} of privacy run #{run.run_id} ({Path(path).name})")]
    assert "Verdict: memorised" in summary  # a copier image: its source is the nearest training image
    trail2, *_ = _fn(demo, "on_follow")(None, trail, rows, 0, synthetic)
    assert [k for k, _ in trail2] == [remembered, f"ref:{rows[0]}"]
    back, rows_back, *_ = _fn(demo, "on_back")(None, trail2, synthetic)
    assert back == trail and rows_back == rows
    # a redraw with another run's cells, or without C_T colouring, never swaps in another image
    other = ct_map.SetImages("privacy run #999", "other", synthetic.table)
    with pytest.raises(gr.Error, match=f"set of privacy run #{run.run_id}.*colour the map by privacy run"):
        _fn(demo, "on_back")(None, trail2, other)
    _, _, none = _fn(demo, "on_map")(None, "pathology", None)
    assert none is None
    with pytest.raises(gr.Error, match="no longer holds"):
        _fn(demo, "on_point")(None, none, _click(key))


def test_public_mode_keeps_the_set_paths_on_the_server(studio, copies, run, fake_map):
    """Public mode: the map, its status, the caption and the search name no server folder; the set's paths stay
    in the session state (a gr.State: Gradio keeps its value on the server), unscrubbed, so the click works."""
    import gradio as gr

    from chexgen_ui.app import build_app

    public = build_app(studio=Studio(studio.reference, public=True, encoder="pixels", device="cpu", umap=False))
    outputs = next(f for f in public.fns.values() if getattr(f.fn, "__name__", "") == "on_map").outputs
    assert isinstance(outputs[2], gr.State)
    fig_json, status, synthetic = _fn(public, "on_map")(None, "C_T cell (data copying)", run.run_id)
    assert synthetic.table["path"].tolist() == sorted(str(p) for p in copies.glob("*.png"))  # not scrubbed
    key = next(k for t in json.loads(fig_json)["data"] for k in t["customdata"] if str(k).startswith("set:"))
    _, caption = _fn(public, "on_point")(None, synthetic, _click(key))
    remembered = _fn(public, "on_key")(synthetic, _click(key))
    *_, trail_md, _, _, summary, table = _fn(public, "on_search")(None, remembered, synthetic)
    shown = [fig_json, status, caption, trail_md, summary, table.to_csv()]
    for text in shown:
        assert str(copies) not in text and str(Path(studio.reference.split("@")[0]).parent) not in text
    assert Path(synthetic.table["path"].iloc[0]).name in fig_json  # the hover names the file, not its folder


def test_generate_redraws_the_map_as_its_colour_radio_says(demo, studio, run, fake_map):
    """Generate redraws the map with the new stars in the radio's colouring (C_T cells stay C_T cells)."""
    gen_fn = _fn(demo, "on_generate")
    args = (COPIER, "Small left pleural effusion.", 2, 3, 1, 7.5)
    out = gen_fn(*args, "C_T cell (data copying)", run.run_id)
    fig = json.loads(out[4])
    assert "coloraxis" in fig["layout"] and f"privacy run #{run.run_id}" in out[5] and "cells scored" in out[5]
    assert any(t["name"] == "generated (2)" for t in fig["data"]) and out[6].source == f"privacy run #{run.run_id}"
    assert out[0].umap.shape == (2, 2)
    plain = gen_fn(*args, "pathology", None)
    assert "coloraxis" not in json.loads(plain[4])["layout"] and plain[6] is None
    assert "cells scored" not in plain[5]
    assert len(gen_fn(*args)) == 7  # the API's old six inputs still work: the colour defaults to pathology


def test_cli_csv_is_what_the_app_shows(world, studio, run, fake_map, tmp_path):
    """`embedding-map --colour ct-cell --run ID` and the app's map of the same run: the same points, each with the
    same cell, scored flag, Z and position."""
    out = tmp_path / "map.csv"
    assert cli(["embedding-map", "--reference", f"{world}@train", "--encoder", "pixels", "--device", "cpu",
                "--no-umap", "--colour", "ct-cell", "--run", str(run.run_id), "--out", str(out)]) == 0
    csv = pd.read_csv(out)
    from chexgen_ui.tabs import embedding_map as tab

    shown = _shown(json.loads(tab.map_outputs(studio, None, tab.CT_CHOICE, run.run_id)[0]))
    keys = [f"{'ref' if k == 'reference' else 'set'}:{r}" for k, r in zip(csv["kind"], csv["row"])]
    assert sorted(keys) == sorted(shown) and (csv["kind"] == "synthetic").sum() == 48
    for key, row in zip(keys, csv.itertuples()):
        cell, scored, z, x, y, hover = shown[key]
        assert (cell, scored) == (row.cell, row.scored), key
        assert (x, y) == pytest.approx((row.x, row.y), abs=1e-6)
        if scored:
            assert z == pytest.approx(row.Z_U, abs=1e-9)
        else:
            assert row.cell_status in hover
            assert pd.isna(row.Z_U) or f"Z {row.Z_U:.2f} not counted" in hover
    assert csv["scored"].any() and not csv["scored"].all()  # both kinds of point were compared
