""""Search from this image" (evaluators.runs.neighbours and the ``neighbours`` command) on the app tests' tiny world
(85 patients, 102 training images, patient ids), where one training patient's second study is a near copy of
its first: a file copy of a training image finds that image first; a training image never finds itself, and
its own patient's near copy is listed and marked but left out of its copy score."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from evaluators.cli import main
from evaluators.errors import InputError
from evaluators.runs import RunContext, inspect
from evaluators.runs import neighbours as nb
from tests.ui_world import make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("nn_world")
    csv = make_world(root, patients=85)
    first = np.asarray(Image.open(root / "images/p000_s0.png"), dtype=np.float64)
    noise = np.random.default_rng(1).normal(0, 2.0, first.shape)
    Image.fromarray(np.clip(first + noise, 0, 255).astype(np.uint8)).save(root / "images/p000_s1.png")
    return csv


@pytest.fixture(scope="module")
def ctx(world):
    return RunContext(f"{world}@train", encoder="pixels", device="cpu")


def _row(ctx, name: str) -> int:
    return int(np.flatnonzero(ctx.index().meta["path"].astype(str).str.endswith(name))[0])


def test_a_file_copy_of_a_training_image_finds_it_first_and_is_memorised(ctx, tmp_path):
    row = _row(ctx, "p007_s1.png")
    path = ctx.index().meta["path"].iloc[row]
    Image.open(path).save(tmp_path / "suspect.png")
    s = nb.from_file(ctx, tmp_path / "suspect.png", k=4)
    assert s.kind == "file" and s.query == "file suspect.png"
    assert s.neighbours[0].row == row and s.neighbours[0].similarity > 0.999 and len(s.neighbours) == 4
    assert s.match_row == row and s.patient == "P007" and s.same_patient[0] is True
    assert s.decision == "memorised" and s.copy_score > s.threshold and s.summary.startswith("**Verdict: memorised")
    assert s.table()["same patient"].tolist()[0] == "yes"


def test_a_training_image_excludes_itself_and_marks_its_own_patient(ctx):
    row, twin = _row(ctx, "p000_s0.png"), _row(ctx, "p000_s1.png")
    s = nb.from_training_row(ctx, row, k=5)
    rows = [n.row for n in s.neighbours]
    assert row not in rows and len(rows) == 5
    assert rows[0] == twin and s.same_patient[0] is True  # the near copy of the same patient is listed, marked
    assert s.same_patient[1:] == [n.patient_id == "P000" for n in s.neighbours[1:]]
    assert s.excluded == [f"the query itself (training row {row})"] and "Left out: the query itself" in s.summary
    assert s.decision is None and "No memorisation verdict" in s.summary
    # its copy score is against other patients only (as in the leave-one-out calibration): not the twin
    assert s.match_row != twin and ctx.index().meta["patient_id"].iloc[s.match_row] != "P000"
    assert s.copy_score <= s.threshold and 0 < s.p_value <= 1
    cal = inspect.search(ctx).calibration
    assert np.isclose(s.copy_score, cal["scores"], atol=1e-6).any()  # the very score calibration computed for it


def test_search_key_names_images_as_the_app_does_and_refuses_bad_ones(ctx):
    assert nb.search_key(ctx, "ref:3").row == 3
    with pytest.raises(InputError, match="out of range"):
        nb.search_key(ctx, "ref:999")
    with pytest.raises(InputError, match="Generate images first"):
        nb.search_key(ctx, "gen:0", None)
    with pytest.raises(InputError, match="expected gen:N or ref:N"):
        nb.search_key(ctx, "star:x")


def test_cli_neighbours_writes_the_same_search(ctx, world, tmp_path, capsys):
    row = _row(ctx, "p000_s0.png")
    out = tmp_path / "nn.json"
    assert main(["neighbours", "--reference", f"{world}@train", "--encoder", "pixels", "--device", "cpu",
                 "--row", str(row), "--k", "3", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    api = nb.from_training_row(ctx, row, k=3)
    assert [n["row"] for n in data["neighbours"]] == [n.row for n in api.neighbours]
    assert data["neighbours"][0]["same_patient"] is True and data["copy_score"] == pytest.approx(api.copy_score)
    assert "training image p000_s0.png" in capsys.readouterr().out
    assert main(["neighbours", "--reference", f"{world}@train", "--encoder", "pixels", "--image",
                 str(tmp_path / "missing.png")]) == 2
