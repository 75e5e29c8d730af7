"""The app's Utility axis (chexgen_ui.utility_service) on the tiny UI world: side-by-side AUCs, the real
baseline trained once and reused, cancel leaves a partial store row, public caps.

Tiny settings (test_resnet, 32 px, 1 epoch) keep the whole file to seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from chexgen_ui import utility_service as us
from chexgen_ui.services import Studio
from evaluators.errors import InputError
from tests.ui_world import COPIER, copier_world

TINY = dict(model="test_resnet", epochs=1, image_size=32)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return copier_world(tmp_path_factory.mktemp("utility_world"))


@pytest.fixture(scope="module")
def studio(world, tmp_path_factory):
    return Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False,
                  store_path=tmp_path_factory.mktemp("store") / "results.sqlite")


@pytest.fixture(scope="module")
def synthetic(studio):
    return studio.synthetic_from_model(COPIER, 16, seed=0)  # copies of training images, reference prompts


@pytest.fixture(scope="module")
def first_run(studio, synthetic):
    return us.run_utility_job(studio, synthetic, source=COPIER, mixed=True, **TINY)


def test_table_puts_real_and_synthetic_aucs_side_by_side_and_is_saved(studio, synthetic, first_run):
    run = first_run
    assert list(run.table.columns) == ["metric", "real", "synthetic", "real+synthetic"]
    auc = run.table.set_index("metric").loc["macro AUC"]
    for col in ("real", "synthetic", "real+synthetic"):
        assert 0.0 <= auc[col] <= 1.0
    assert {"F1 micro", "F1 macro", "accuracy"} <= set(run.table["metric"])
    assert any(m.startswith("AUC ") for m in run.table["metric"])
    assert run.table.drop(columns="metric").map(lambda v: v is None or v != v or round(v, 4) == v).all().all()  # rounded (NaN: blank)
    res = run.result
    assert res["test"].endswith("@test") and res["n_test"] == 12  # 6 test patients x 2 studies
    assert res["per_setting"]["synthetic"]["n_train"] + res["per_setting"]["synthetic"]["n_val"] == len(synthetic)
    assert res["model"] == "test_resnet" and res["image_size"] == 32 and res["epochs"] == 1
    # the unrounded report value behind the table
    assert res["utility"]["real"]["auc_macro"] == pytest.approx(auc["real"], abs=5e-5)
    on_disk = json.loads(run.json_path.read_text())
    assert on_disk["table"][0]["metric"] == "macro AUC" and "--synthetic" in on_disk["cli"]
    row = studio.store().get(run.run_id)
    assert row["kind"] == "utility" and row["status"] == "complete" and row["model"] == COPIER
    assert row["metrics"]["AUC (synthetic)"] == pytest.approx(res["utility"]["synthetic"]["auc_macro"])
    board = studio.leaderboard("utility")
    assert run.run_id in set(board["id"]) and "AUC (real)" in board.columns
    assert not run.real_reused and res["per_setting"]["real"]["resumed_from_epoch"] == 0  # a new world: trained now
    text = us.summary(run)  # each macro AUC with its patient-bootstrap interval, each setting paired with real
    syn = res["per_setting"]["synthetic"]
    assert f"trained on {syn['n_train']} (+{syn['n_val']} held out for validation) synthetic image(s)" in text
    assert "(95% CI, 1000 resamples of the test patients)" in text and "synthetic minus real" in text
    assert set(res["paired"]) == {"synthetic", "real+synthetic"} and "_auc_replicates" not in json.dumps(on_disk)


def test_real_baseline_is_trained_once_and_reused(studio, synthetic, first_run):
    base = first_run.result["real_baseline"]["work_dir"]
    weights = f"{base}/real/model.safetensors"
    import os

    before = os.stat(weights).st_mtime_ns
    again = us.run_utility_job(studio, synthetic, source=COPIER, **TINY)
    assert again.real_reused and again.result["real_baseline"]["work_dir"] == base
    real = again.result["per_setting"]["real"]
    assert real["resumed_from_epoch"] == real["epochs_run"] == 1  # resumed a finished run: no epoch trained
    assert os.stat(weights).st_mtime_ns == before
    assert list(again.table.columns) == ["metric", "real", "synthetic"]  # no mixed setting this time
    # same baseline, same test set: the same real AUC; the synthetic setting trains again in its own folder
    assert again.result["utility"]["real"]["auc_macro"] == first_run.result["utility"]["real"]["auc_macro"]
    assert again.json_path.parent != first_run.json_path.parent
    # another image size is another baseline
    assert us.baseline_dir(studio.reference, model="test_resnet", epochs=1, image_size=48) != \
        us.baseline_dir(studio.reference, model="test_resnet", epochs=1, image_size=32)


class Cancelled(Exception):
    """Stands in for the app's JobCancelled (the store matches 'cancel' in the exception's name)."""


def test_cancel_stops_training_within_a_batch_and_leaves_a_partial_row(studio, synthetic):
    calls: list[tuple[int, int, str]] = []

    def report(done: int, total: int, desc: str = "") -> None:
        calls.append((done, total, desc))
        if "epoch" in desc:  # the first training batch: press Cancel
            raise Cancelled()

    with pytest.raises(Cancelled):  # epochs=2: a new baseline folder, so the real setting really trains
        us.run_utility_job(studio, synthetic, source="cancel-me", model="test_resnet", epochs=2, image_size=32,
                           progress=report)
    batches = [c for c in calls if "epoch" in c[2]]
    assert len(batches) == 1 and batches[0][0] == 1 and batches[0][1] > 1  # stopped at batch 1 of many
    base = us.baseline_dir(studio.reference, model="test_resnet", epochs=2, image_size=32)
    assert not (base / "real" / "checkpoint.safetensors").exists()  # no epoch finished
    rows = [r for r in studio.store().runs(kind="utility") if r["model"] == "cancel-me"]
    assert len(rows) == 1 and rows[0]["status"] == "partial"
    assert studio.store().get(rows[0]["id"])["result"]["error"] == "cancelled"


def test_progress_adapter_turns_engine_events_into_fractions():
    seen = []
    on = us.progress_adapter(lambda d, t, desc="": seen.append((d, t, desc)))
    on({"stage": "setting", "setting": "synthetic", "train": ["x"]})
    on({"stage": "batch", "epoch": 2, "epochs": 3, "step": 4, "steps": 5, "loss": 0.5})
    on({"stage": "preload", "set": "demo@test", "done": 10, "total": 20})
    assert seen[1][:2] == (9, 15) and "synthetic" in seen[1][2] and "epoch 2/3" in seen[1][2]
    assert seen[2][:2] == (10, 20)
    assert us.progress_adapter(None) is None


def test_public_mode_caps_epochs_image_size_and_models(world, monkeypatch):
    public = Studio(f"{world}@train", public=True, encoder="pixels", device="cpu")
    with pytest.raises(InputError, match=f"between 1 and {us.PUBLIC_MAX_EPOCHS}"):
        us.check_settings(public, model="resnet18", epochs=us.PUBLIC_MAX_EPOCHS + 1, image_size=64)
    with pytest.raises(InputError, match=f"and {us.PUBLIC_MAX_IMAGE_SIZE} pixels"):
        us.check_settings(public, model="resnet18", epochs=1, image_size=us.PUBLIC_MAX_IMAGE_SIZE + 1)
    with pytest.raises(InputError, match="not offered in this public app"):
        us.check_settings(public, model="vit_huge_patch14_224", epochs=1, image_size=64)
    assert us.check_settings(public, model="", epochs=3, image_size=64) == ("resnet18", 3, 64)  # CPU default
    monkeypatch.setenv("CHEXGEN_PUBLIC_MAX_UTILITY_EPOCHS", "2")
    with pytest.raises(InputError, match="between 1 and 2"):
        us.check_settings(public, model="resnet18", epochs=3, image_size=64)
    local = Studio(f"{world}@train", encoder="pixels", device="cpu")
    assert us.check_settings(local, model="test_resnet", epochs=50, image_size=256) == ("test_resnet", 50, 256)
    with pytest.raises(InputError, match="between 16 and"):
        us.check_settings(local, model=None, epochs=1, image_size=8)


def test_unlabelled_set_and_a_test_split_reference_are_refused_before_training(studio, world):
    class Unlabelled:
        name = "no-labels"
        labels = np.full((4, 14), np.nan, np.float32)

        def __len__(self):
            return 4

    with pytest.raises(InputError, match="no labels"):
        us.run_utility_job(studio, Unlabelled(), **TINY)
    from evaluators.imagesets import load_image_set

    held = load_image_set(f"{world}@test")  # labelled, but all of it a split that is never trained on
    with pytest.raises(InputError, match=r"valid/test split.*SET@train"):
        us.run_utility_job(studio, held, **TINY)
    with pytest.raises(InputError, match="test split"):
        us.split_specs(f"{world}@test")
    assert us.split_specs("demo@train") == ("demo@train", "demo@test")


def test_batch_tab_runs_the_utility_axis_end_to_end(studio, first_run):
    """The Batch suite callback with only Utility ticked: a table in the 'batch-utility' frame and a JSON file."""
    import gradio as gr

    from chexgen_ui.app import build_app

    demo = build_app(studio=studio)
    frames = [c for c in demo.blocks.values() if isinstance(c, gr.Dataframe) and c.elem_id == "batch-utility"]
    assert len(frames) == 1
    on_batch = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_batch")
    outs = list(on_batch("generate N from a model", None, "", COPIER, 16, 1, ["Utility"], 0, 10,
                         "test_resnet", 1, 32, False, progress=lambda *a, **k: None, request=None))
    status, *_, util, files = outs[-1]
    assert list(util.columns) == ["metric", "real", "synthetic"] and util["metric"].iloc[0] == "macro AUC"
    assert "Real baseline reused" in status and "saved as run #" in status  # first_run trained it already
    assert len(files) == 1 and files[0].endswith("utility.json")
    # an over-the-cap request becomes a page error, not a traceback
    with pytest.raises(gr.Error, match="between 16 and"):
        list(on_batch("generate N from a model", None, "", COPIER, 4, 1, ["Utility"], 0, 10, "test_resnet", 1, 8,
                      False, progress=lambda *a, **k: None, request=None))


def test_cli_reference_mode_runs_the_apps_job(studio, world, synthetic, first_run, tmp_path):
    """`utility --reference SET` is the app's job: the same baseline folder, settings, table and numbers."""
    from evaluators.cli import main as cli

    out = tmp_path / "utility.json"
    assert cli(["utility", "--reference", f"{world}@train", "--synthetic", str(synthetic.root / "metadata.csv"),
                "--model", "test_resnet", "--epochs", "1", "--image-size", "32", "--mixed", "--device", "cpu",
                "--no-store", "--out", str(out)]) == 0
    cli_res, app_res = json.loads(out.read_text()), json.loads(first_run.json_path.read_text())
    assert cli_res["real_baseline"]["work_dir"] == app_res["real_baseline"]["work_dir"]
    assert cli_res["real_baseline"]["reused"]  # trained by the app's run, reused by the CLI
    assert cli_res["settings"] == app_res["settings"]
    assert set(cli_res["utility"]) == set(app_res["utility"]) == {"real", "synthetic", "real+synthetic"}
    for setting, vals in app_res["utility"].items():  # same seed, same data: the same numbers
        assert cli_res["utility"][setting] == pytest.approx(vals, abs=1e-6)
    assert [r["metric"] for r in cli_res["table"]] == [r["metric"] for r in app_res["table"]]


def test_batch_keeps_fidelity_results_when_a_later_axis_cannot_run(studio, world, tmp_path):
    """A folder of real radiographs without labels: fidelity runs, utility cannot (no labels). The fidelity table
    stays on the page with 'Utility not run: why' instead of one page error replacing every result."""
    import shutil

    from chexgen_ui.app import build_app

    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for p in sorted(Path(world).parent.rglob("*.png"))[:12]:
        shutil.copy(p, folder / p.name)
    demo = build_app(studio=studio)
    on_batch = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_batch")
    outs = list(on_batch("server folder or CSV", None, str(folder), COPIER, 16, 1, ["Fidelity", "Utility"], 0, 3,
                         "test_resnet", 1, 32, False, progress=lambda *a, **k: None, request=None))
    status, overall, *_, util, files = outs[-1]
    assert overall is not None and len(overall) >= 1 and util is None
    assert "Fidelity done" in status and "Utility not run:" in status and "no labels" in status
    assert any(f.endswith("fidelity.json") for f in files)
