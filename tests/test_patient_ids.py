"""evaluators.patient_ids: patient and study ids from the paths of the public layouts, and only from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from evaluators.imagesets import format_description, load_image_set, with_derived_patient_ids
from evaluators.patient_ids import LAYOUTS, MIN_FRACTION, UNMATCHED_PREFIX, derivation, enabled, match_layout
from tests.helpers_images import random_png

NIH = "derived from file names (NIH ChestX-ray14 layout)"
MIMIC = "derived from folder names (MIMIC-CXR layout)"
CHEXPERT = "derived from folder names (CheXpert layout)"


def _files(root, names):
    for i, n in enumerate(names):
        (root / n).parent.mkdir(parents=True, exist_ok=True)
        random_png(root / n, seed=i, size=8)
    return root


# ------------------------------------------------------------------------------------------------
# The patterns


def test_nih_names():
    d = match_layout(["/data/images/00000001_000.png", "00000001_001.png", "x/00012345_010.PNG",
                      "00030805_000.jpg"])
    assert d.source == NIH and d.n_matched == 4
    assert d.patient_ids == ["1", "1", "12345", "30805"]  # NIH's `Patient ID`: leading zeros dropped
    assert d.study_ids == ["00000001_000", "00000001_001", "00012345_010", "00030805_000"]


def test_mimic_paths():
    paths = ["/m/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg",
             "files/p10/p10000032/s53189527/2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab.jpg",
             "p19/p19999987/s58971208/fe1ef7b3-fa5e3b9a-2d1ee1b0-8e2dbc9d-0c8b1e2f.dcm"]
    d = match_layout(paths)
    assert d.source == MIMIC
    assert d.patient_ids == ["10000032", "10000032", "19999987"]  # MIMIC's subject_id
    assert d.study_ids == ["50414267", "53189527", "58971208"]


def test_chexpert_paths():
    paths = ["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
             "CheXpert-v1.0-small/train/patient00001/study2/view1_frontal.jpg",
             "CheXpert-v1.0-small/train/patient00001/study2/view2_lateral.jpg",
             "valid/patient64541/study1/view1_frontal.jpg"]
    d = match_layout(paths)
    assert d.source == CHEXPERT
    assert d.patient_ids == ["patient00001"] * 3 + ["patient64541"]
    # study numbers restart per patient, so a study id carries its patient
    assert d.study_ids == ["patient00001/study1", "patient00001/study2", "patient00001/study2", "patient64541/study1"]


@pytest.mark.parametrize("paths", [
    ["1_000.png", "2_000.png"],  # NIH-like numbers of the wrong width
    ["00000001_0000.png", "00000002_0000.png"],
    ["0000001_000.png", "0000002_000.png"],
    ["00000001-000.png", "00000002-000.png"],
    ["img_00000001_000.png", "img_00000002_000.png"],  # a prefix: not NIH's name
    ["00000001_000.dcm", "00000002_000.dcm"],  # NIH ships PNG (JPEG copies accepted), not DICOM
    ["00001.png", "00002.png", "20240101_120000.png"],  # numbered / timestamped files
    ["a3f9c1.png", "scan-final.jpg", "IMG_1234.jpeg"],  # random names
    ["files/p11/p10000032/s50414267/x.jpg"],  # MIMIC group folder is not the id's first two digits
    ["files/p10/p1000003/s50414267/x.jpg"],  # 7-digit subject
    ["files/p10/p10000032/50414267/x.jpg"],  # study folder without 's'
    ["train/patient0001/study1/view1_frontal.jpg"],  # 4-digit CheXpert patient
    ["train/patient00001/study1/frontal.jpg"],  # not CheXpert's view file name
    ["train/patient00001/view1_frontal.jpg"],  # no study folder
    [],
])
def test_names_that_are_not_a_layout(paths):
    assert match_layout(paths) is None


def test_mixed_folders_are_not_derived():
    nih = [f"{i:08d}_000.png" for i in range(1, 51)]
    chexpert = [f"train/patient{i:05d}/study1/view1_frontal.jpg" for i in range(1, 51)]
    assert match_layout(nih + chexpert) is None  # half and half: neither layout holds
    assert match_layout(nih[:45] + [f"other_{i}.png" for i in range(5)]) is None  # 90% < 95%


def test_nearly_all_matching_derives_and_names_the_rest():
    names = [f"{i:08d}_000.png" for i in range(1, 96)] + [f"scan_{i}.png" for i in range(5)]
    d = match_layout(names)
    assert MIN_FRACTION == 0.95 and d.n_matched == 95
    assert d.patient_ids[:2] == ["1", "2"]
    # the others are each their own patient (the calibration needs every id), and the note says so
    assert d.patient_ids[95:] == [UNMATCHED_PREFIX + f"scan_{i}.png" for i in range(5)]
    assert d.study_ids[95:] == [None] * 5
    assert "5 image(s) not named this way count as one patient each" in d.note()


def test_every_layout_has_a_source_and_example():
    assert [lay.name for lay in LAYOUTS] == ["NIH ChestX-ray14", "MIMIC-CXR", "CheXpert"]
    for lay in LAYOUTS:  # each example's path matches its own layout
        path = lay.example.split(" = ")[0].replace("<dicom_id>", "abc")
        d = match_layout([path])
        assert d is not None and d.layout is lay, lay.name


# ------------------------------------------------------------------------------------------------
# The loader


def test_a_folder_of_nih_files_gets_patient_ids(tmp_path):
    _files(tmp_path, ["00000001_000.png", "00000001_001.png", "00000002_000.png"])
    s = load_image_set(tmp_path)
    assert s.patient_ids == ["1", "1", "2"] and s.table["study_id"].tolist() == [
        "00000001_000", "00000001_001", "00000002_000"]
    d = s.describe()
    assert d["n_patients"] == 2 and d["patient_ids_source"] == NIH == s.patient_ids_source
    text = format_description(d)
    assert f"patient ids: {NIH}" in text and "CHEXGEN_DERIVE_PATIENT_IDS=0" in text
    # a subset keeps where its ids came from
    assert s.subset([0, 2]).patient_ids_source == NIH


def test_a_column_wins_and_a_blank_column_is_derived(tmp_path):
    _files(tmp_path, ["p10/p10000032/s50414267/a.jpg", "p10/p10000032/s50000001/b.jpg"])
    given = pd.DataFrame({"path": ["p10/p10000032/s50414267/a.jpg", "p10/p10000032/s50000001/b.jpg"],
                          "patientID": ["A", "B"], "study_id": ["x", "y"]})
    given.to_csv(tmp_path / "given.csv", index=False)
    s = load_image_set(tmp_path / "given.csv")
    assert s.patient_ids == ["A", "B"] and s.patient_ids_source == "column"
    assert s.describe()["patient_ids_source"] == "column"
    # a blank patient column is derived; a study column that is given is kept
    given.assign(patientID="").to_csv(tmp_path / "blank.csv", index=False)
    s = load_image_set(tmp_path / "blank.csv")
    assert s.patient_ids == ["10000032", "10000032"] and s.patient_ids_source == MIMIC
    assert s.table["study_id"].tolist() == ["x", "y"]
    # a partly filled column is the user's: nothing derived
    given.assign(patientID=["A", ""]).to_csv(tmp_path / "partial.csv", index=False)
    s = load_image_set(tmp_path / "partial.csv")
    assert s.patient_ids == ["A", None] and s.patient_ids_source == "column"


def test_derivation_can_be_turned_off(tmp_path, monkeypatch):
    _files(tmp_path, ["00000001_000.png", "00000002_000.png"])
    off = load_image_set(tmp_path, derive_patient_ids=False)
    assert off.patient_ids == [None, None] and off.describe()["patient_ids_source"] == "none"
    assert "patients: unknown" in format_description(off.describe())
    monkeypatch.setenv("CHEXGEN_DERIVE_PATIENT_IDS", "0")
    assert not enabled() and load_image_set(tmp_path).patient_ids == [None, None]
    assert load_image_set(tmp_path, derive_patient_ids=True).patient_ids == ["1", "2"]  # explicit wins
    monkeypatch.delenv("CHEXGEN_DERIVE_PATIENT_IDS")
    assert enabled()
    with derivation(False):
        assert load_image_set(tmp_path).patient_ids == [None, None]
    assert load_image_set(tmp_path).patient_ids == ["1", "2"]


def test_random_names_get_no_ids(tmp_path):
    _files(tmp_path, ["a.png", "b.png", "00000001_000.png"])  # 1 of 3 NIH-named
    s = load_image_set(tmp_path)
    assert s.patient_ids == [None] * 3 and s.patient_ids_source == "none"
    assert not any("derived" in n for n in s.notes)


def test_blanked_ids_can_be_derived_again(tmp_path):
    """What the privacy benchmark does: a set with its id column blanked, then derived from its file names."""
    _files(tmp_path, ["00000003_000.png", "00000003_001.png"])
    s = load_image_set(tmp_path)
    blank = s.subset(np.arange(len(s)))
    blank.table["patient_id"] = None
    again = with_derived_patient_ids(blank)
    assert again.patient_ids == ["3", "3"] and blank.patient_ids == [None, None]  # the input is not changed


def test_derived_ids_get_their_own_index_key(tmp_path):
    from evaluators.encoders import load_encoder
    from evaluators.index import index_key

    _files(tmp_path, ["00000001_000.png", "00000001_001.png", "00000002_000.png"])
    enc = load_encoder("pixels")
    derived = load_image_set(tmp_path)
    none = load_image_set(tmp_path, derive_patient_ids=False)
    assert index_key(derived, enc) != index_key(none, enc)


def test_cli_inspect_set_flag(tmp_path, capsys):
    from evaluators.cli import main

    _files(tmp_path, ["00000001_000.png", "00000002_000.png"])
    assert main(["inspect-set", str(tmp_path)]) == 0
    assert f"patient ids: {NIH}" in capsys.readouterr().out
    assert main(["inspect-set", str(tmp_path), "--no-derive-patient-ids"]) == 0
    out = capsys.readouterr().out
    assert "patient ids: none" in out and "patients: unknown" in out


def test_nih_sample_names_give_its_patient_ids(nih_sample):
    """The shared NIH sample's file names carry the patient of its labels.csv column, for every image."""
    with_column = load_image_set(nih_sample)
    from_names = load_image_set(nih_sample / "images")
    assert from_names.patient_ids_source == NIH and with_column.patient_ids_source == "column"
    by_name = dict(zip(from_names.paths, from_names.patient_ids))
    assert [by_name[p] for p in with_column.paths] == with_column.patient_ids


def test_commands_with_the_flag_load_without_derivation(tmp_path):
    """privacy, privacy-protocol and train-reid load their sets inside the handler: the flag holds there."""
    import argparse

    from evaluators.cli.args import add_derive_argument, honours_derive_flag

    _files(tmp_path, ["00000001_000.png", "00000002_000.png"])
    seen = []
    handler = honours_derive_flag(lambda args: seen.append(load_image_set(tmp_path).patient_ids) or 0)
    p = argparse.ArgumentParser()
    add_derive_argument(p)
    assert handler(p.parse_args(["--no-derive-patient-ids"])) == 0 and handler(p.parse_args([])) == 0
    assert seen == [[None, None], ["1", "2"]]
    assert load_image_set(tmp_path).patient_ids == ["1", "2"]  # off only inside the command


def test_the_app_lines_say_where_ids_came_from(tmp_path, monkeypatch):
    from chexgen_ui.tables import privacy_verdict_line
    from evaluators.runs import RunContext
    from evaluators.runs.summary import reference_summary

    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    _files(tmp_path / "set", ["00000001_000.png", "00000001_001.png", "00000002_000.png"])
    lines = reference_summary(RunContext(str(tmp_path / "set"), encoder="pixels"))
    assert f"patients: 2 (patient ids: {NIH})" in lines[1]
    assert f"Training patient ids: {NIH}." in privacy_verdict_line({"summary": {"patient_ids_source": NIH}})
