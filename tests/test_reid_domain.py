"""Re-ID and the demo encoder honest about their domain; one verdict per image; CheXGenBench's patientID column.

The demo re-ID model (trained on demo-world phantoms) must never give a number on a set that is not the demo
world; every re-ID figure carries its model and that model's verification AUC on the training set's patients.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from evaluators.demo_world import MARKER, generate_demo_world
from evaluators.domain import DEMO_ENCODER_NOTE, demo_world_info, is_demo_world
from evaluators.imagesets import load_image_set
from evaluators.privacy.reid_choice import choose_reid
from evaluators.privacy.suite import format_summary, run_privacy
from evaluators.privacy.verdict import MEMORISED, MIN_REID_AUC, NEW, SAME_PATIENT, UNKNOWN, count, decide


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """A 90-patient demo world, and the same images copied to a plain folder (not the demo world: no marker)."""
    root = tmp_path_factory.mktemp("reid_domain")
    world = root / "world"
    generate_demo_world(world, patients=90, seed=3, size=64)
    plain = root / "plain"
    shutil.copytree(world / "images", plain / "images")
    shutil.copy(world / "metadata.csv", plain / "metadata.csv")
    return {"world": world, "plain": plain, "root": root}


# ---------------------------------------------------------------------------------------- the domain marker
def test_demo_world_is_known_by_its_marker_not_its_pixels(worlds, tmp_path):
    world, plain = worlds["world"], worlds["plain"]
    info = demo_world_info(world)
    assert info["version"] >= 1 and info["seed"] == 3 and info["patients"] == 90
    assert is_demo_world(load_image_set(f"{world}@train")) and is_demo_world("demo@train")
    assert not is_demo_world(plain) and not is_demo_world(load_image_set(plain))  # same pixels, no marker
    # an edited metadata.csv is no longer trusted as the demo world
    edited = tmp_path / "edited"
    shutil.copytree(world, edited)
    assert is_demo_world(edited)
    with open(edited / "metadata.csv", "a") as fh:
        fh.write("\n")
    assert not is_demo_world(edited)
    # a set that mixes in images from elsewhere is not the demo world either
    ws = load_image_set(world)
    ps = load_image_set(plain)
    mixed = ws.subset(np.arange(len(ws)) < 5)
    mixed.table.loc[0, "path"] = ps.paths[0]
    assert is_demo_world(ws) and not is_demo_world(mixed)


def test_nih_sample_is_not_the_demo_world(nih_sample):
    assert not is_demo_world(load_image_set(nih_sample)) and not (nih_sample / MARKER).exists()


# ---------------------------------------------------------------------------------------- choosing the model
def test_demo_reid_never_scores_real_radiographs(nih_sample):
    nih = load_image_set(f"{nih_sample}@train")
    for requested in ("auto", "demo"):
        choice = choose_reid(requested, nih, spec=f"{nih_sample}@train", device="cpu")
        assert not choice.available and choice.model is None and choice.auc is None
        assert "train-reid" in choice.reason and "ResNet-50_epoch11_data_handling_RPN.pth" in choice.reason
    assert "demo-world phantoms" in choose_reid("demo", nih, device="cpu").reason
    assert "once the set has patient ids" not in choose_reid("auto", nih, device="cpu").reason  # NIH has them
    no_ids = nih.subset(np.arange(len(nih)), name="no ids")
    no_ids.table["patient_id"] = None
    reason = choose_reid("auto", no_ids, device="cpu").reason
    assert "train-reid" in reason and "once the set has patient ids" in reason  # training it would fail without


def test_demo_reid_is_the_default_on_the_demo_world_with_its_auc(worlds):
    choice = choose_reid("auto", load_image_set(f"{worlds['world']}@train"), device="cpu")
    assert choice.available and choice.name == "demo" and choice.chosen_by == "default for demo-world sets"
    assert choice.auc > 0.85  # measured now on this world's patients (the model was trained on another world)
    assert "measured on this training set" in choice.auc_source
    assert "verification AUC" in choice.label() and choice.auc_text in choice.label()


def _reid_figures(obj, where="result"):
    """Every (place, dict) in a JSON tree that holds a re-ID number."""
    out = []
    if isinstance(obj, dict):
        keys = [k for k, v in obj.items() if "reid" in k.lower() and isinstance(v, float) and np.isfinite(v)
                and k not in ("reid_threshold", "reid_auc")]  # NaN: no figure (re-ID unavailable)
        if keys:
            out.append((where, obj))
        for k, v in obj.items():
            out += _reid_figures(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _reid_figures(v, f"{where}[{i}]")
    return out


def test_privacy_on_a_non_demo_set_reports_reid_unavailable_then_uses_a_model_trained_on_it(worlds, capsys):
    from evaluators.cli import main
    from evaluators.privacy.reid import train_reid, trained_path_for

    plain = worlds["plain"]
    train, syn = f"{plain}@train", f"{plain}@test"
    for reid in ("auto", "demo"):
        r = run_privacy(train, syn, encoder="demo", reid=reid)
        assert r["summary"]["reid_available"] is False and r["reid"]["available"] is False
        assert all(s["reid_score"] is None for s in r["samples"]) and not _reid_figures(r)
        assert "train-reid" in r["summary"]["reid_note"]
        # the demo encoder on images that are not the demo world: said in the summary and the JSON
        assert r["summary"]["encoder_note"] == DEMO_ENCODER_NOTE == r["encoder"]["comparability"]
        assert "not comparable with RadDino" in format_summary(r)
    # train-reid's default output is where the default choice looks
    train_set = load_image_set(train)
    meta = train_reid(train_set, epochs=1, pairs_per_epoch=64, batch_size=16, device="cpu")
    assert meta["out"] == str(trained_path_for(train_set))
    r = run_privacy(train, syn, encoder="demo")
    s = r["summary"]
    assert s["reid_available"] and s["reid_model"] == "trained on this set" == r["reid"]["model"]
    assert s["reid_auc"] == pytest.approx(meta["val_auc"]) and "held-out patients" in s["reid_auc_source"]
    figures = _reid_figures(r)
    assert figures and len(figures) >= len(r["samples"])
    for where, d in figures:  # every re-ID number travels with its model and AUC
        assert d["reid_model"] == "trained on this set" and d["reid_auc"] == s["reid_auc"], where
    rc = main(["privacy", "--train", train, "--synthetic", syn, "--encoder", "demo", "--out",
               str(worlds["root"] / "p.json")])
    printed = capsys.readouterr().out
    assert rc == 0 and "re-ID by trained on this set (verification AUC" in printed
    assert json.loads((worlds["root"] / "p.json").read_text())["reid"]["auc"] == pytest.approx(meta["val_auc"])


def test_every_verdict_is_one_decision_with_its_reason(worlds):
    r = run_privacy(f"{worlds['world']}@train", f"{worlds['world']}@test", encoder="demo")
    assert r["reid"]["model"] == "demo" and r["summary"]["reid_model"] == "demo"
    assert "encoder_note" not in r["summary"]  # the demo encoder on the demo world is in its domain
    for smp in r["samples"]:
        v = smp["verdict"]
        assert v["decision"] in (MEMORISED, SAME_PATIENT, NEW) and v["reason"]
        assert (v["decision"] == MEMORISED) == smp["flagged"]
    assert sum(r["summary"]["verdicts"].values()) == len(r["samples"])
    # "same patient" needs a re-ID score above what new patients reach against their matched training image
    rc = r["reid"]["verdict_calibration"]
    assert rc["available"] and rc["threshold"] >= 0.5 and rc["n"] > 10
    assert r["summary"]["reid_verdict_threshold"] == rc["threshold"]
    # these test-split images are new patients (the calibration's own held-out images): rarely "same patient"
    assert r["summary"]["verdicts"][SAME_PATIENT] <= max(1, 0.05 * len(r["samples"]))
    assert "same patient: re-ID >" in format_summary(r)


# ---------------------------------------------------------------------------------------- the decision rule
def test_decide_memorised_wins_over_reid():
    v = decide(copy_score=0.95, threshold=0.8, reid_score=0.1, reid_model="m", reid_auc=0.95)
    assert v.decision == MEMORISED and "0.950" in v.reason and "0.800" in v.reason
    # another study of a training patient also scores above the threshold (37-40% of them on the NIH sample)
    assert "another radiograph of its patient" in v.reason
    assert decide(copy_score=0.5, threshold=0.8, flagged=True).decision == MEMORISED  # the search's flag decides


def test_decide_same_patient_needs_a_trusted_reid_model():
    kw = dict(copy_score=0.5, threshold=0.8, copy_p_value=0.4, reid_score=0.9, reid_model="m")
    assert decide(**kw, reid_auc=0.9).decision == SAME_PATIENT
    assert decide(**kw, reid_auc=0.9).reid_used
    unknown = decide(**kw, reid_auc=None)
    assert unknown.decision == NEW and not unknown.reid_used and "unknown" in unknown.reason
    weak = decide(**kw, reid_auc=MIN_REID_AUC - 0.01)
    assert weak.decision == NEW and "below" in weak.reason
    assert "p = 0.4" in unknown.reason


def test_decide_same_patient_needs_a_calibrated_reid_threshold():
    kw = dict(copy_score=0.5, threshold=0.8, reid_score=0.85, reid_model="m", reid_auc=0.9)
    assert decide(**kw, reid_threshold=0.8).decision == SAME_PATIENT
    assert decide(**kw, reid_threshold=0.9).decision == NEW  # below what new patients reach
    none = decide(**kw, reid_threshold=None)
    assert none.decision == NEW and not none.reid_used and "no re-ID threshold calibrated" in none.reason


def test_decide_new_and_unknown():
    v = decide(copy_score=0.5, threshold=0.8, reid_score=0.2, reid_model="m", reid_auc=0.9)
    assert v.decision == NEW and v.reid_used
    assert decide(copy_score=0.5, threshold=0.8).decision == NEW  # no re-ID: rests on the copy check
    assert "re-ID not available" in decide(copy_score=0.5, threshold=0.8).reason
    assert decide(copy_score=0.5, threshold=None).decision == UNKNOWN  # no copy check: no claim
    assert decide(copy_score=float("nan"), threshold=0.8).decision == UNKNOWN
    assert count([decide(copy_score=0.9, threshold=0.8), {"decision": NEW}]) == {
        MEMORISED: 1, SAME_PATIENT: 0, NEW: 1, UNKNOWN: 0}


# ---------------------------------------------------------------------------------------- patient ids
def test_chexgenbench_patientID_column_is_read(tmp_path):
    from PIL import Image

    (tmp_path / "files").mkdir()
    rows = []
    for i in range(4):
        name = f"files/img{i}.png"
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / name)
        rows.append({"path": name, "annotated_prompt": "No acute process.", "patientID": f"1000{i // 2}",
                     "studyID": f"5000{i}", "chexpert_labels": "{'No Finding': 1}", "split": "train"})
    pd.DataFrame(rows).to_csv(tmp_path / "mimic.csv", index=False)
    s = load_image_set(tmp_path / "mimic.csv")
    assert s.patient_ids == ["10000", "10000", "10001", "10001"]
    assert s.table["study_id"].astype(str).tolist() == ["50000", "50001", "50002", "50003"]
    assert not any("patientID" in n for n in s.notes)
    assert s.describe()["n_patients"] == 2


def test_demo_world_models_say_so_on_a_real_reference(nih_sample, monkeypatch):
    """The demo generator / oracle / copycat judged against real radiographs: their 'new' verdicts and fidelity are
    about phantoms, and the Generate and Batch tabs say so; on the demo world, and for other models, nothing."""
    from evaluators.generators.trained_on import demo_model_note

    nih = f"{nih_sample}@train"
    for model in ("demo", "reference-oracle", "copycat"):
        note = demo_model_note(model, nih)
        assert note and "phantoms" in note and "no evidence about memorisation" in note
        assert demo_model_note(model, "demo@train") is None
    assert demo_model_note("sana-0.6b", nih) is None and demo_model_note(None, nih) is None
    monkeypatch.setenv("CHEXGEN_COPYCAT_SOURCE", nih)  # a copycat of the real set is a valid worst case there
    assert demo_model_note("copycat", nih) is None
