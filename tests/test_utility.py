"""Utility axis: metrics against scikit-learn, label masking, splits, training beats chance, resume = no kill."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from evaluators.errors import InputError, UnavailableError
from evaluators.pathologies import INDEX, PATHOLOGIES
from evaluators.utility.data import Preloaded, preload, split_train_val, targets
from evaluators.utility.evaluate import classification_metrics

# A pathology is a bright blob at its own place: learnable in seconds by a tiny CNN.
SPOTS = {"Cardiomegaly": (0.6, 0.5), "Pleural Effusion": (0.8, 0.2), "Pneumothorax": (0.2, 0.8)}
SIZE = 32


class ArraySet:
    """The ImageSet interface (table, labels, image(i), len) over in-memory arrays."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, table: pd.DataFrame):
        self.images, self.labels, self.table = images, labels, table

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> np.ndarray:
        return self.images[i]


def blob_set(n: int, seed: int, split: str = "train", first_patient: int = 0, size: int = SIZE) -> ArraySet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, size, size), np.float32)
    labels = np.zeros((n, len(PATHOLOGIES)), np.float32)
    for i in range(n):
        img = 0.3 + 0.1 * rng.standard_normal((size, size))
        for name, (cy, cx) in SPOTS.items():
            if rng.random() < 0.4:
                labels[i, INDEX[name]] = 1
                img += 0.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
        labels[i, INDEX["No Finding"]] = float(labels[i].sum() == 0)
        images[i] = np.clip(img, 0, 1)
    table = pd.DataFrame({"patient_id": [str(first_patient + i // 2) for i in range(n)], "split": split})
    return ArraySet(images, labels, table)


# ---------------------------------------------------------------- metrics


def _fixed_predictions(seed: int = 3, n: int = 120):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(PATHOLOGIES))) < 0.3).astype(np.float64)
    scores = np.clip(0.35 * y + 0.65 * rng.random(y.shape), 0, 1)
    scores[:5, 2] = scores[5:10, 2]  # ties
    y[:, INDEX["Fracture"]] = 0  # one outcome only: AUC undefined
    return y, scores


def test_metrics_match_sklearn_with_unannotated_and_single_outcome_classes():
    y, scores = _fixed_predictions()
    mask = np.ones_like(y)
    mask[:, INDEX["Lung Opacity"]] = 0  # a class the test set never annotates (as NIH for some labels)
    out = classification_metrics(y, scores, mask)

    cols = [j for j in range(len(PATHOLOGIES)) if j != INDEX["Lung Opacity"]]
    auc_cols = [j for j in cols if j != INDEX["Fracture"]]
    expected_auc = {PATHOLOGIES[j]: roc_auc_score(y[:, j], scores[:, j]) for j in auc_cols}
    assert out["per_class_auc"] == pytest.approx(expected_auc, abs=1e-12)
    assert out["macro_auc"] == pytest.approx(np.mean(list(expected_auc.values())), abs=1e-12)
    pred = (scores[:, cols] >= 0.5).astype(int)
    assert out["f1_micro"] == pytest.approx(f1_score(y[:, cols], pred, average="micro", zero_division=0))
    assert out["f1_macro"] == pytest.approx(f1_score(y[:, cols], pred, average="macro", zero_division=0))
    # CheXGenBench's accuracy: element-wise over the flattened label matrix
    assert out["accuracy"] == pytest.approx(accuracy_score(y[:, cols].ravel(), pred.ravel()))
    assert "Lung Opacity" in out["excluded"] and "not annotated" in out["excluded"]["Lung Opacity"]
    assert "AUC undefined" in out["excluded"]["Fracture"]
    assert "Fracture" in out["classes_evaluated"] and "Lung Opacity" not in out["classes_evaluated"]


def test_metrics_with_entry_masks_match_sklearn_on_kept_entries():
    y, scores = _fixed_predictions(seed=5)
    rng = np.random.default_rng(0)
    mask = (rng.random(y.shape) > 0.2).astype(np.float32)  # uncertain entries under the 'ignore' policy
    out = classification_metrics(y, scores, mask)
    keep = mask.astype(bool)
    pred = (scores >= 0.5).astype(int)
    for name, auc in out["per_class_auc"].items():
        j = INDEX[name]
        assert auc == pytest.approx(roc_auc_score(y[keep[:, j], j], scores[keep[:, j], j]), abs=1e-12)
    assert out["f1_micro"] == pytest.approx(f1_score(y[keep], pred[keep], zero_division=0))
    macro = np.mean([f1_score(y[keep[:, j], j], pred[keep[:, j], j], zero_division=0) for j in range(y.shape[1])])
    assert out["f1_macro"] == pytest.approx(macro)
    assert out["accuracy"] == pytest.approx(accuracy_score(y[keep], pred[keep]))


def test_perfect_and_inverted_scores():
    y, _ = _fixed_predictions()
    assert classification_metrics(y, y)["macro_auc"] == pytest.approx(1.0)
    assert classification_metrics(y, 1 - y)["macro_auc"] == pytest.approx(0.0)


# ---------------------------------------------------------------- targets and splits


def test_targets_mask_unannotated_columns_and_follow_policy():
    labels = np.zeros((4, len(PATHOLOGIES)), np.float32)
    labels[:, INDEX["Fracture"]] = np.nan  # never annotated by this set -> masked
    labels[0, INDEX["Edema"]] = -1.0  # uncertain
    labels[1, INDEX["Edema"]] = np.nan  # blank in an annotated column -> negative
    data = Preloaded("x", np.zeros((4, 8, 8), np.uint8), labels, np.arange(4).astype(str).astype(object),
                     np.full(4, "", object), np.broadcast_to(~np.isnan(labels).all(0), labels.shape).copy())
    for policy, uncertain_target, uncertain_mask in (("zeros", 0, 1), ("ones", 1, 1), ("ignore", 0, 0)):
        y, m = targets(data, policy)
        assert m[:, INDEX["Fracture"]].sum() == 0
        assert (y[0, INDEX["Edema"]], m[0, INDEX["Edema"]]) == (uncertain_target, uncertain_mask)
        assert (y[1, INDEX["Edema"]], m[1, INDEX["Edema"]]) == (0, 1)
        assert m[2:, :].sum() == 2 * (len(PATHOLOGIES) - 1)


def test_holdout_is_patient_disjoint_and_never_uses_test_rows():
    s = blob_set(60, 0)
    s.table.loc[50:, "split"] = "test"
    data = preload(s, SIZE, show_bar=False)
    tr, va, how = split_train_val(data, val_fraction=0.2, seed=1)
    assert "patient-disjoint" in how
    assert not set(tr) & set(va)
    assert not {*tr, *va} & set(range(50, 60))
    assert not set(data.groups[tr]) & set(data.groups[va])
    assert 6 <= len(va) <= 14


def test_valid_split_is_used_when_present():
    s = blob_set(30, 0)
    s.table.loc[:9, "split"] = "valid"
    tr, va, how = split_train_val(preload(s, SIZE, show_bar=False), val_fraction=0.5, seed=0)
    assert how == "valid split" and list(va) == list(range(10)) and list(tr) == list(range(10, 30))


# ---------------------------------------------------------------- training


TRAIN_KW = dict(model="test_resnet", image_size=SIZE, batch_size=16, seed=7, device="cpu", show_bars=False,
                patience=10)


def test_short_training_beats_chance_and_saves_a_loadable_classifier(tmp_path):
    from evaluators.utility import evaluate_classifier, train_classifier

    res = train_classifier([blob_set(128, 0)], epochs=4, out_dir=tmp_path / "m", **TRAIN_KW)
    assert res.weights == "random init" and res.epochs_run == 4 and res.n_train + res.n_val == 128
    assert (tmp_path / "m" / "model.safetensors").is_file()
    config = json.loads((tmp_path / "m" / "model.json").read_text())
    assert config["model"] == "test_resnet" and config["classes"] == list(PATHOLOGIES)
    out = evaluate_classifier(tmp_path / "m", blob_set(120, 1, "test", 10_000), device="cpu", show_bar=False)
    assert set(out["per_class_auc"]) == {*SPOTS, "No Finding"}
    assert out["macro_auc"] > 0.8, out["per_class_auc"]  # chance is 0.5


class Killed(RuntimeError):
    pass


def test_resume_after_kill_gives_the_same_result(tmp_path):
    from evaluators.utility import evaluate_classifier, train_classifier
    from evaluators.utility.checkpoint import CHECKPOINT_FILE

    train, test = blob_set(64, 0), blob_set(60, 1, "test", 10_000)
    whole = train_classifier([train], epochs=3, out_dir=tmp_path / "whole", **TRAIN_KW)

    def kill_after_epoch_1(event: dict) -> None:
        if event["stage"] == "epoch" and event["epoch"] == 1:
            raise Killed

    with pytest.raises(Killed):
        train_classifier([train], epochs=3, out_dir=tmp_path / "killed", progress=kill_after_epoch_1, **TRAIN_KW)
    assert (tmp_path / "killed" / CHECKPOINT_FILE).is_file()
    resumed = train_classifier([train], epochs=3, out_dir=tmp_path / "killed", **TRAIN_KW)
    assert resumed.resumed_from_epoch == 1 and whole.resumed_from_epoch == 0
    assert resumed.history == whole.history
    a = evaluate_classifier(tmp_path / "whole", test, device="cpu", show_bar=False)
    b = evaluate_classifier(tmp_path / "killed", test, device="cpu", show_bar=False)
    assert a["per_class_auc"] == b["per_class_auc"] and a["f1_micro"] == b["f1_micro"]

    # a finished run is not retrained; a different run in the same folder is refused
    again = train_classifier([train], epochs=3, out_dir=tmp_path / "killed", **TRAIN_KW)
    assert again.history == whole.history and again.resumed_from_epoch == 3
    with pytest.raises(InputError, match="different run"):
        train_classifier([train], epochs=3, out_dir=tmp_path / "killed", **{**TRAIN_KW, "seed": 8})


def test_run_utility_puts_real_synthetic_and_mixed_side_by_side(tmp_path):
    from evaluators.utility.run import format_table, run_utility, standard_settings

    sets = {"real": blob_set(64, 0), "synth": blob_set(64, 2, first_patient=5_000),
            "test": blob_set(40, 1, "test", 10_000)}
    report = run_utility(standard_settings(["real"], ["synth"]), "test", epochs=1, work_dir=tmp_path,
                         loader=sets.__getitem__, **{k: v for k, v in TRAIN_KW.items() if k != "patience"})
    assert list(report["settings"]) == ["real", "synthetic", "real+synthetic"]
    assert report["settings"]["real+synthetic"]["n_train"] + report["settings"]["real+synthetic"]["n_val"] == 128
    assert report["table"][0]["metric"] == "macro AUC"
    assert {r["metric"] for r in report["table"]} >= {"F1 micro", "F1 macro", "accuracy", "AUC Cardiomegaly"}
    assert report["weights"] == "random init" and report["model"] == "test_resnet"
    assert "| macro AUC |" in format_table(report)


def test_swap_setting_replaces_half_the_real_images_with_synthetic_ones(tmp_path):
    """CheXGenBench's "mixed": the real setting's size, half of its trainable images swapped for synthetic ones."""
    from evaluators.utility.run import SWAP, Swap, _swapped, run_utility, standard_settings

    real = blob_set(60, 0)
    real.table.loc[50:, "split"] = "test"  # test rows are never trained on, so never counted or kept
    sets = {"real": real, "synth": blob_set(40, 2, first_patient=5_000), "test": blob_set(40, 1, "test", 10_000)}
    settings = standard_settings(["real"], ["synth"], swap=True)
    assert isinstance(settings[SWAP], Swap) and list(settings) == ["real", "synthetic", "real+synthetic", "mixed"]
    from evaluators.utility.data import preload

    notes: list[str] = []
    parts = _swapped(settings[SWAP], lambda s: preload(sets[s], 32, name=s, show_bar=False), 0, notes)
    assert [len(p) for p in parts] == [25, 25] and {p.name for p in parts} == {"real", "synth"}
    assert notes == ["25 of 50 real training images swapped for 25 synthetic ones (seed 0)"]
    assert set(parts[1].groups.tolist()) <= set(preload(sets["synth"], 32, show_bar=False).groups.tolist())
    report = run_utility({SWAP: settings[SWAP]}, "test", epochs=1, work_dir=tmp_path, loader=sets.__getitem__,
                         **{k: v for k, v in TRAIN_KW.items() if k != "patience"})
    mixed = report["settings"][SWAP]
    assert mixed["n_train"] + mixed["n_val"] == 50 and mixed["train"] == ["real", "synth"]
    assert mixed["swap"].startswith("25 of 50") and report["table"][0]["metric"] == "macro AUC"


# ---------------------------------------------------------------- weights


def test_pretrained_weights_are_never_downloaded(monkeypatch):
    from evaluators.utility import models

    monkeypatch.setattr(models, "cached_pretrained_file", lambda name: None)
    with pytest.raises(UnavailableError, match="not in the local cache"):
        models.resolve_weights("resnet18", True)
    assert models.resolve_weights("resnet18", False) == (None, "random init")
    with pytest.raises(InputError, match="Unknown timm model"):
        models.resolve_weights("no_such_net", False)


def test_imagenet_weights_file_is_loaded_into_one_channel(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    from evaluators.utility.models import build_model, resolve_weights

    rgb = timm.create_model("test_resnet", pretrained=False)  # 3 channels, 1000 classes, as ImageNet weights
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(tmp_path / "w.safetensors"))
    path, desc = resolve_weights("test_resnet", str(tmp_path / "w.safetensors"))
    assert desc.startswith("imagenet")
    net = build_model("test_resnet", weights_file=path)
    first = "conv1.0.weight"
    assert torch.allclose(net.state_dict()[first], rgb.state_dict()[first].sum(1, keepdim=True))
    assert net.num_classes == len(PATHOLOGIES)


def test_evaluate_refuses_a_folder_without_a_model(tmp_path):
    from evaluators.utility import evaluate_classifier

    with pytest.raises(InputError, match="not a trained classifier"):
        evaluate_classifier(tmp_path, blob_set(4, 0), device="cpu")


# ---------------------------------------------------------------- command line


def _write_set(folder, image_set: ArraySet) -> str:
    from evaluators.imageio import save_png

    rows = []
    for i in range(len(image_set)):
        save_png(image_set.image(i), folder / "images" / f"{i}.png")
        rows.append({"path": f"images/{i}.png", "patient_id": image_set.table["patient_id"][i],
                     "split": image_set.table["split"][i],
                     **{p: image_set.labels[i, j] for j, p in enumerate(PATHOLOGIES)}})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return str(folder / "metadata.csv")


def test_cli_writes_the_side_by_side_report(tmp_path, capsys):
    from evaluators.cli import main

    real = blob_set(36, 0)
    real.table.loc[24:, "split"] = "test"
    real_csv = _write_set(tmp_path / "real", real)
    synth_csv = _write_set(tmp_path / "synth", blob_set(16, 3, split="", first_patient=900))
    out = tmp_path / "u.json"
    args = ["utility", "--train", real_csv, "--synthetic", synth_csv, "--test", f"{real_csv}@test",
            "--model", "test_resnet", "--image-size", "32", "--epochs", "1", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["settings"]["real"]["n_train"] + report["settings"]["real"]["n_val"] == 24  # test rows excluded
    assert report["settings"]["real"]["validation"].endswith("images)")  # patient-disjoint hold-out
    assert report["n_test"] == 12 and "| macro AUC |" in capsys.readouterr().out
    assert (tmp_path / "u_runs" / "real+synthetic" / "model.safetensors").is_file()

    assert main([*args[:5], "--test", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_paired_comparison_with_real_says_whether_the_test_set_tells_settings_apart():
    """Settings scored on one test set are compared on the same patient resamples: a model no better than chance
    is told apart from a good one; a model with the real one's scores differs by exactly 0; the replicates are
    dropped after pairing (not saved), and the side-by-side table carries the intervals."""
    from evaluators.utility.evaluate import classification_metrics
    from evaluators.utility.run import auc_line, paired_vs_real, side_by_side

    rng = np.random.default_rng(1)
    n, c = 300, len(PATHOLOGIES)
    y = (rng.random((n, c)) < 0.3).astype(np.float32)
    groups = np.repeat([f"patient:{i}" for i in range(100)], 3)
    good = 0.3 * y + 0.7 * rng.random((n, c))
    noise = rng.random((n, c))
    res = {name: {"metrics": classification_metrics(y, sc, groups=groups, n_boot=300)}
           for name, sc in (("real", good), ("synthetic", noise), ("copy", good.copy()))}
    lo, hi = res["real"]["metrics"]["macro_auc_ci95"]
    assert lo < res["real"]["metrics"]["macro_auc"] < hi and res["real"]["metrics"]["macro_auc_bootstrap"]["unit"] == "patient"
    paired = paired_vs_real(res)
    assert paired["synthetic"]["tells_apart"] and paired["synthetic"]["ci95"][1] < 0
    assert paired["copy"] == {"vs": "real", "macro_auc_diff": 0.0, "ci95": [0.0, 0.0], "tells_apart": False}
    assert all("_auc_replicates" not in r["metrics"] for r in res.values())
    rows = {r["metric"]: r for r in side_by_side(res, paired)}
    assert rows["macro AUC 95% CI low"]["real"] == lo and rows["macro AUC minus real"]["real"] is None
    assert rows["macro AUC minus real (paired 95% CI high)"]["synthetic"] == paired["synthetic"]["ci95"][1]
    line = auc_line(res, paired)
    assert "300 resamples of the test patients" in line and "synthetic minus real" in line
    assert "copy minus real +0.000 [+0.000, +0.000] (the test set cannot tell them apart)" in line


def test_per_class_auc_from_few_test_positives_says_so():
    """A per-class AUC on 2 positive test images (NIH sample's Pneumonia) read as 0.907 with nothing beside it; the
    row now names the count and calls it unreliable, below MIN_TEST_POSITIVES only."""
    from evaluators.utility.run import MIN_TEST_POSITIVES, side_by_side

    metrics = {"macro_auc": 0.7, "f1_micro": 0.4, "f1_macro": 0.1, "accuracy": 0.9,
               "per_class_auc": {"Pneumonia": 0.907, "Lung Opacity": 0.70},
               "positives": {"Pneumonia": 2, "Lung Opacity": MIN_TEST_POSITIVES}}
    rows = {r["metric"]: r for r in side_by_side({"real": {"metrics": metrics}, "synthetic": {"metrics": metrics}})}
    assert rows["AUC Pneumonia (2 test positives: unreliable)"]["real"] == 0.907
    assert "AUC Lung Opacity" in rows
