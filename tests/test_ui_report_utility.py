"""The app's Report utility (chexgen_ui.report_utility_service) on the tiny UI world: real, synthetic and the
most-frequent-report baseline side by side, the real-trained generator trained once and reused, saved to the store,
bad input refused. A tiny captioner (timm test_resnet, 32 px, 1 epoch) replaces the built-in one through an entry
file, as a user would."""

from __future__ import annotations

import json

import pytest

from chexgen_ui import report_utility_service as rs
from chexgen_ui.services import Studio
from evaluators.errors import InputError
from evaluators.reportgen import registry
from tests.ui_world import COPIER, copier_world


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    world = copier_world(tmp_path_factory.mktemp("report_world"))
    return Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False,
                  store_path=tmp_path_factory.mktemp("store") / "results.sqlite")


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory):
    f = tmp_path_factory.mktemp("models") / "tiny.toml"
    f.write_text('[[model]]\nname = "captioner"\nencoder = "test_resnet"\nimage_size = 32\nd_model = 32\n'
                 'layers = 1\nheads = 2\nff = 64\nmax_len = 48\nbatch_size = 16\n')
    mp = pytest.MonkeyPatch()
    mp.setenv(registry.ENV, str(f))
    yield f
    mp.undo()


def test_report_job_side_by_side_saved_and_baseline_reused(studio, tiny_captioner):
    synthetic = studio.synthetic_from_model(COPIER, 12, seed=0)
    first = rs.run_report_job(studio, synthetic, epochs=1, source=COPIER, meteor=False)
    assert list(first.table.columns) == ["metric", "real", "synthetic", "most frequent report"]
    f1 = first.table.set_index("metric").loc["clinical F1 macro"]
    assert all(0.0 <= f1[c] <= 1.0 for c in ("real", "synthetic", "most frequent report"))
    res = first.result
    assert res["per_setting"]["synthetic"]["n_train"] + res["per_setting"]["synthetic"]["n_val"] == len(synthetic)
    assert "--synthetic" in json.loads(first.json_path.read_text())["cli"]
    row = studio.store().get(first.run_id)
    assert row["kind"] == "report-utility" and "clinical F1 macro (synthetic)" in row["metrics"]
    second = rs.run_report_job(studio, synthetic, epochs=1, source=COPIER, meteor=False)
    real = second.result["per_setting"]["real"]
    assert real["resumed_from_epoch"] == real["epochs_run"] == 1  # not retrained
    assert second.result["report_utility"]["real"] == res["report_utility"]["real"]
    assert "Clinical F1 macro" in rs.summary(second)
    assert "Clinical F1 micro, 95% CI: synthetic minus real" in rs.summary(second)  # paired with the cached real


def test_report_job_refuses_bad_epochs_and_sets_without_prompts(studio, tiny_captioner):
    synthetic = studio.synthetic_from_model(COPIER, 4, seed=1)
    with pytest.raises(InputError, match="epochs"):
        rs.run_report_job(studio, synthetic, epochs=0)
    synthetic.table["prompt"] = ""
    with pytest.raises(InputError, match="prompt"):
        rs.run_report_job(studio, synthetic, epochs=1)
