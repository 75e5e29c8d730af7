""""Search from this image" in the app, through its callbacks (no browser): from a generated image, from one of its
neighbours, following a result, going back, and from an Embedding map point. On the app tests' tiny world with the
copier model, generated image i copies training row (seed mod 102)."""

from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

from chexgen_ui.services import Studio
from evaluators.runs import inspect
from tests.ui_world import COPIER, copier_world


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from chexgen_ui.app import build_app

    world = copier_world(tmp_path_factory.mktemp("ui_search_world"), patients=85)
    studio = Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False)
    studio.index()
    gen = studio.generate(COPIER, "Small left pleural effusion.", n=3, seed=5)
    return build_app(studio=studio), studio, gen


def _fn(demo, name: str):
    return next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_search_from_a_generated_image_then_follow_a_chain_and_go_back(app):
    demo, studio, gen = app
    trail, rows, picked, trail_md, query, gallery, summary, table = _fn(demo, "on_search_selected")(gen, 0)
    assert trail == [("gen:0", "generated #0 (seed 5)")] and picked == -1 and trail_md.startswith("Trail (1)")
    assert rows[0] == 5 and list(table["row"]) == rows and len(rows) == 5  # the copied training image first
    assert summary.startswith("**Verdict: memorised.**") and summary == inspect.verdict_text(studio.ctx, gen, 0)  # one engine
    assert query.dtype == np.uint8 and len(gallery) == 5 and "SAME PATIENT" in gallery[0][1]

    # a neighbour becomes the query; the trail starts at the generated image
    trail2, rows2, *_, trail_md2, _, _, summary2, table2 = _fn(demo, "on_search_neighbour")(gen, 0, 0)
    assert [k for k, _ in trail2] == ["gen:0", "ref:5"] and 5 not in rows2  # the training image left itself out
    assert "generated #0 (seed 5) → **training image" in trail_md2
    assert "No memorisation verdict" in summary2 and "Left out: the query itself (training row 5)" in summary2
    assert list(table2["row"]) == rows2 and table2["same patient"].isin(["yes", ""]).all()

    trail3, rows3, *_ = _fn(demo, "on_follow")(gen, trail2, rows2, 1)  # follow the second result
    assert [k for k, _ in trail3] == ["gen:0", "ref:5", f"ref:{rows2[1]}"] and rows2[1] not in rows3
    back, rows_back, *_ = _fn(demo, "on_back")(gen, trail3)
    assert back == trail2 and rows_back == rows2
    with pytest.raises(gr.Error, match="Select one of the nearest training images"):
        _fn(demo, "on_follow")(gen, trail2, rows2, -1)
    with pytest.raises(gr.Error, match="first image of the trail"):
        _fn(demo, "on_back")(gen, trail2[:1])


def test_search_from_a_map_point(app):
    demo, _, gen = app
    trail, rows, *_ = _fn(demo, "on_search")(gen, "gen:1")
    assert trail[0][0] == "gen:1" and rows[0] == 6  # generated #1 has seed 6
    trail, rows, *_, summary, _ = _fn(demo, "on_search")(gen, "ref:6")
    assert "A training image" in summary and 6 not in rows and trail == [("ref:6", trail[0][1])] and trail[0][1].endswith("(row 6)")
    with pytest.raises(gr.Error, match="Click a point"):
        _fn(demo, "on_search")(gen, "")
    with pytest.raises(gr.Error, match="Generate images first"):
        _fn(demo, "on_search")(None, "gen:0")
