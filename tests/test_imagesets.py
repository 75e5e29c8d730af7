"""evaluators.imagesets: every accepted source to one canonical table; every bad input named."""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pandas as pd
import pytest

from evaluators.errors import BadFile, InputError
from evaluators.imagesets import (
    BASE_COLUMNS,
    TABLE_COLUMNS,
    ImageSet,
    load_image_set,
    parse_chexpert_dict,
    parse_set_spec,
)
from evaluators.pathologies import INDEX, PATHOLOGIES
from tests.helpers_images import gray_png, png_with_claimed_size, random_png, truncated_copy


def _pngs(folder, names):
    for i, n in enumerate(names):
        random_png(folder / n, seed=i, size=8)


def _csv(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _error(fn, *words) -> str:
    with pytest.raises(InputError) as info:
        fn()
    msg = str(info.value)
    for w in words:
        assert str(w) in msg, msg
    return msg


@pytest.fixture
def fake_labeler(monkeypatch):
    """A stand-in rule labeler: 'cardio' in the text -> Cardiomegaly 1, else 0."""
    mod = types.ModuleType("evaluators.labeler")
    calls = []

    def label_reports(texts):
        texts = list(texts)
        calls.append(texts)
        out = np.full((len(texts), len(PATHOLOGIES)), np.nan, np.float32)
        out[:, INDEX["Cardiomegaly"]] = ["cardio" in t.lower() for t in texts]
        return out

    mod.label_reports = label_reports
    monkeypatch.setitem(sys.modules, "evaluators.labeler", mod)
    return calls


# ------------------------------------------------------------------------------------------------
# Folders


def test_folder_is_recursive_sorted_and_sniffs_extensionless(tmp_path):
    _pngs(tmp_path, ["b.png", "a/z.jpg", "a/c.PNG", "noext"])
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.png").write_bytes(b"ignored")
    (tmp_path / "textfile").write_text("not an image, no extension")
    s = load_image_set(tmp_path)
    rel = [os.path.relpath(p, tmp_path) for p in s.paths]
    assert rel == ["a/c.PNG", "a/z.jpg", "b.png", "noext"]
    assert all(os.path.isabs(p) for p in s.paths)
    assert s.source_format == "folder" and s.labels_source == "none" and not s.has_labels
    assert list(s.table.columns[: len(TABLE_COLUMNS)]) == list(TABLE_COLUMNS)
    assert s.labels.shape == (4, 14) and np.isnan(s.labels).all()
    assert s.image(0).dtype == np.float32
    _error(lambda: load_image_set(f"{tmp_path}@test"), "no metadata.csv", "test")


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    _error(lambda: load_image_set(tmp_path / "empty"), "No images", "empty")
    (tmp_path / "images_real").mkdir()
    _error(lambda: load_image_set(str(tmp_path / "images_reel")), "does not exist", "images_real")


def test_folder_with_metadata_labels_and_splits(tmp_path):
    _pngs(tmp_path, [f"img{i}.png" for i in range(4)])
    rows = []
    for i in range(4):
        row = {"path": f"img{i}.png", "prompt": f"report {i}", "patient_id": f"p{i // 2}", "study_id": f"s{i}",
               "view": "PA", "split": ["train", "train", "test", "val"][i], "site": "A"}
        row.update({p: "" for p in PATHOLOGIES})
        row["Cardiomegaly"] = ["1", "0", "-1", ""][i]
        row["Pleural Effusion"] = "1.0"
        rows.append(row)
    _csv(tmp_path / "metadata.csv", rows)
    s = load_image_set(tmp_path)
    assert len(s) == 4 and s.labels_source == "metadata" and s.has_labels
    cm = s.labels[:, INDEX["Cardiomegaly"]]
    np.testing.assert_array_equal(cm[:3], [1, 0, -1])
    assert np.isnan(cm[3])
    assert s.patient_ids == ["p0", "p0", "p1", "p1"] and s.prompts[2] == "report 2"
    assert s.table["site"].tolist() == ["A"] * 4  # extra columns are kept
    np.testing.assert_array_equal(s.binary_labels("zeros")[:, INDEX["Cardiomegaly"]], [1, 0, 0, 0])
    np.testing.assert_array_equal(s.binary_labels("ones")[:, INDEX["Cardiomegaly"]], [1, 0, 1, 0])
    test = load_image_set(f"{tmp_path}@test")
    assert len(test) == 1 and test.paths == [str(tmp_path / "img2.png")]
    assert len(s.split("valid")) == 1  # 'val' and 'valid' are the same split
    _error(lambda: s.split("holdout"), "holdout", "train", "test", "val")
    d = s.describe()
    assert d["splits"] == {"train": 2, "test": 1, "val": 1}
    assert d["labels"]["Cardiomegaly"] == {"positive": 1, "negative": 1, "uncertain": 1, "blank": 1}
    assert d["labels"]["Pleural Effusion"]["positive"] == 4 and d["n_patients"] == 2
    assert d["positives_by_split"]["train"]["Cardiomegaly"] == 1


def test_subset_and_metadata_round_trip(tmp_path):
    _pngs(tmp_path / "imgs", ["a.png", "b.png", "c.png"])
    rows = [{"path": f"imgs/{n}.png", "prompt": f"p {n}", "Edema": v} for n, v in zip("abc", ["1", "0", ""])]
    _csv(tmp_path / "meta.csv", rows)
    s = load_image_set(tmp_path / "meta.csv")
    assert s.source_format == "metadata" and s.name == "meta"
    sub = s.subset(np.array([True, False, True]))
    assert [os.path.basename(p) for p in sub.paths] == ["a.png", "c.png"]
    assert s.subset([2]).prompts == ["p c"] and len(s.subset(slice(0, 2))) == 2
    out = s.to_metadata_csv(tmp_path / "copy.csv")
    assert pd.read_csv(out)["path"].tolist() == ["imgs/a.png", "imgs/b.png", "imgs/c.png"]
    back = load_image_set(out)
    assert back.paths == s.paths and back.prompts == s.prompts
    np.testing.assert_array_equal(np.nan_to_num(back.labels, nan=9), np.nan_to_num(s.labels, nan=9))


# ------------------------------------------------------------------------------------------------
# CheXGenBench synthetic CSV, prompt labels


def test_chexgenbench_synthetic_csv_with_prompt_labeler(tmp_path, fake_labeler):
    out = tmp_path / "gen"
    _pngs(out, ["0.png", "1.png", "2.png"])
    _pngs(out, ["3.png"])
    csv = _csv(tmp_path / "synthetic.csv", {"prompt": ["Cardiomegaly.", "Normal chest.", "", "Cardiomegaly."],
                                            "img_savename": ["0.png", "1.png", "2.png", "3.png"]})
    s = load_image_set(csv, images_root=out)
    assert s.source_format == "chexgenbench-synthetic" and s.labels_source == "prompt-labeler"
    assert s.root == out.resolve() and s.paths[0] == str(out / "0.png")
    cm = s.labels[:, INDEX["Cardiomegaly"]]
    assert cm[0] == 1 and cm[1] == 0 and np.isnan(cm[2]) and cm[3] == 1  # a blank prompt stays unlabelled
    assert fake_labeler == [["Cardiomegaly.", "Normal chest."]]  # each distinct prompt labelled once
    assert "img_savename" in s.table.columns


def test_images_next_to_the_csv_are_found(tmp_path):
    _pngs(tmp_path, ["0.png"])
    s = load_image_set(_csv(tmp_path / "synthetic.csv", {"prompt": ["x"], "img_savename": ["0.png"]}))
    assert s.paths == [str(tmp_path / "0.png")]


def test_without_labeler_labels_are_blank(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "evaluators.labeler", None)  # import fails
    _pngs(tmp_path, ["0.png"])
    s = load_image_set(_csv(tmp_path / "s.csv", {"prompt": ["Cardiomegaly."], "img_savename": ["0.png"]}))
    assert s.labels_source == "none" and np.isnan(s.labels).all()
    assert any("labeler" in n for n in s.notes)


def test_real_labeler_when_present(tmp_path):
    pytest.importorskip("evaluators.labeler")
    _pngs(tmp_path, ["0.png", "1.png"])
    s = load_image_set(_csv(tmp_path / "s.csv", {"prompt": ["Large pleural effusion.", "No pleural effusion."],
                                                 "img_savename": ["0.png", "1.png"]}))
    assert s.labels_source == "prompt-labeler"
    np.testing.assert_array_equal(s.labels[:, INDEX["Pleural Effusion"]], [1, 0])


# ------------------------------------------------------------------------------------------------
# MIMIC-CXR LLaVA-Rad CSV


def test_llavarad_dict_strings(tmp_path):
    _pngs(tmp_path / "files", ["a.jpg", "b.jpg", "c.jpg"])
    csv = _csv(tmp_path / "annotations.csv", {
        "path": ["files/a.jpg", "files/b.jpg", "files/c.jpg"],
        "annotated_prompt": ["Cardiomegaly, possible edema.", "No acute findings.", "Effusion."],
        "chexpert_labels": ["{'Cardiomegaly': 1.0, 'Edema': -1.0, 'Pleural Effusion': nan}",
                            "{'No Finding': 1.0}", "{\"Pleural Effusion\": 1, \"Atelectasis\": 0.0}"],
        "split": ["train", "test", "test"],
    })
    s = load_image_set(csv)
    assert s.source_format == "mimic-llavarad" and s.labels_source == "metadata"
    assert s.prompts[0] == "Cardiomegaly, possible edema."
    L = s.labels
    assert L[0, INDEX["Cardiomegaly"]] == 1 and L[0, INDEX["Edema"]] == -1
    assert np.isnan(L[0, INDEX["Pleural Effusion"]]) and np.isnan(L[0, INDEX["Atelectasis"]])
    assert L[1, INDEX["No Finding"]] == 1 and np.isnan(L[1]).sum() == 13
    assert L[2, INDEX["Pleural Effusion"]] == 1 and L[2, INDEX["Atelectasis"]] == 0
    assert len(load_image_set(csv, split="test")) == 2
    assert s.name == tmp_path.name  # a generically named CSV is named after its folder


def test_chexpert_dict_parser_is_literal_only():
    v = parse_chexpert_dict("{'Atelectasis': 1.0, 'Cardiomegaly': -1.0, 'Edema': 0}")
    assert (v[INDEX["Atelectasis"]], v[INDEX["Cardiomegaly"]], v[INDEX["Edema"]]) == (1, -1, 0)
    assert np.isnan(parse_chexpert_dict("")).all() and np.isnan(parse_chexpert_dict("{}")).all()
    marker = "chexgen_should_not_exist"
    _error(lambda: parse_chexpert_dict(f"__import__('os').system('touch {marker}')"), "not a label dict")
    assert not os.path.exists(marker)
    _error(lambda: parse_chexpert_dict("[1, 0]"), "not a dict")
    _error(lambda: parse_chexpert_dict("{'Cardiomegaly': 2}"), "Cardiomegaly", "2")
    _error(lambda: parse_chexpert_dict("{'Emphysema': 1}"), "Emphysema")


def test_bad_dict_cell_names_row_and_column(tmp_path):
    _pngs(tmp_path, ["a.png", "b.png"])
    csv = _csv(tmp_path / "a.csv", {"path": ["a.png", "b.png"], "annotated_prompt": ["x", "y"],
                                    "chexpert_labels": ["{'Edema': 1}", "{'Edema': 1"]})
    _error(lambda: load_image_set(csv), "a.csv", "row 3", "chexpert_labels", "skip_bad")
    s = load_image_set(csv, skip_bad=True)
    assert len(s) == 1 and len(s.skipped) == 1 and "row 3" in s.skipped[0].reason


# ------------------------------------------------------------------------------------------------
# NIH ChestX-ray14


def _nih_has(nih_sample):
    """Counter of rows whose NIH findings include any of the given names (computed from the CSV directly)."""
    raw = pd.read_csv(nih_sample / "labels.csv")
    return lambda *names: raw["finding_labels"].map(lambda s: bool(set(s.split("|")) & set(names)))


@pytest.mark.parametrize("as_csv", [False, True])
def test_nih_sample_as_folder_and_csv(nih_sample, as_csv):
    s = load_image_set(nih_sample / "labels.csv" if as_csv else nih_sample)
    has = _nih_has(nih_sample)
    assert len(s) == 1000 and s.source_format == "nih" and s.labels_source == "metadata"
    assert s.root == nih_sample / "images"
    assert len(set(s.patient_ids)) == 264
    d = s.describe()
    assert d["labels"]["Pleural Effusion"]["positive"] == 170
    assert d["labels"]["Lung Lesion"]["positive"] == int(has("Mass", "Nodule").sum())
    assert d["labels"]["Lung Opacity"]["positive"] == int(has("Infiltration").sum()) == 162
    assert d["labels"]["No Finding"]["positive"] == 499
    assert d["labels"]["Support Devices"]["blank"] == 1000  # NIH never annotates it
    assert d["splits"] == {"train": 600, "valid": 200, "test": 200}
    assert s.table["view"].value_counts().to_dict() == {"PA": 637, "AP": 363}
    assert all(os.path.isfile(p) for p in s.paths[:20])
    test = load_image_set(f"{nih_sample / 'labels.csv' if as_csv else nih_sample}@test")
    assert len(test) == 200 and set(test.table["split"]) == {"test"}


def test_nih_original_headers(tmp_path):
    _pngs(tmp_path, ["00000001_000.png", "00000002_000.png"])
    csv = _csv(tmp_path / "Data_Entry_2017.csv", {
        "Image Index": ["00000001_000.png", "00000002_000.png"],
        "Finding Labels": ["Effusion|Mass|Hernia", "No Finding"],
        "Patient ID": [1, 2], "View Position": ["PA", "AP"],
    })
    s = load_image_set(csv)
    assert s.source_format == "nih" and s.patient_ids == ["1", "2"] and s.table["view"].tolist() == ["PA", "AP"]
    L = s.labels
    assert L[0, INDEX["Pleural Effusion"]] == 1 and L[0, INDEX["Lung Lesion"]] == 1 and L[0, INDEX["No Finding"]] == 0
    assert L[1, INDEX["No Finding"]] == 1 and L[1, INDEX["Cardiomegaly"]] == 0
    bad = _csv(tmp_path / "bad.csv", {"filename": ["00000001_000.png"], "finding_labels": ["Effusion|Unicorn"]})
    _error(lambda: load_image_set(bad), "bad.csv", "row 2", "Unicorn")


# ------------------------------------------------------------------------------------------------
# Columns and values


def test_misnamed_path_column_suggests_the_name(tmp_path):
    _pngs(tmp_path, ["0.png"])
    csv = _csv(tmp_path / "s.csv", {"prompt": ["x"], "img_save_name": ["0.png"]})
    _error(lambda: load_image_set(csv), "s.csv", "'img_save_name'", "did you mean 'img_savename'")


def test_look_alike_label_column_is_kept_and_noted(tmp_path):
    _pngs(tmp_path, ["0.png"])
    s = load_image_set(_csv(tmp_path / "m.csv", {"path": ["0.png"], "Cardiomegally": ["1"], "Edema": ["0"]}))
    assert s.table["Cardiomegally"].tolist() == ["1"] and np.isnan(s.labels[0, INDEX["Cardiomegaly"]])
    assert any("Cardiomegally" in n and "'Cardiomegaly'" in n for n in s.notes)


def test_bad_label_value_names_column_and_row(tmp_path):
    _pngs(tmp_path, ["0.png", "1.png", "2.png"])
    csv = _csv(tmp_path / "m.csv", {"path": ["0.png", "1.png", "2.png"], "Edema": ["1", "maybe", "2"]})
    _error(lambda: load_image_set(csv), "m.csv", "row 3", "'Edema'", "'maybe'", "1 more")
    s = load_image_set(csv, skip_bad=True)
    assert len(s) == 1 and [b.reason.split(":")[0] for b in s.skipped] == ["row 3", "row 4"]
    assert all(isinstance(b, BadFile) for b in s.skipped)


def test_empty_header_only_binary_and_unreadable_csvs(tmp_path):
    (tmp_path / "zero.csv").write_bytes(b"")
    _error(lambda: load_image_set(tmp_path / "zero.csv"), "zero.csv", "empty")
    (tmp_path / "header.csv").write_text("path,prompt\n")
    _error(lambda: load_image_set(tmp_path / "header.csv"), "header.csv", "no rows")
    (tmp_path / "junk.csv").write_bytes(bytes(range(256)) * 20)
    _error(lambda: load_image_set(tmp_path / "junk.csv"), "junk.csv", "binary")
    (tmp_path / "latin.csv").write_bytes("path,prompt\na.png,caf\xe9\n".encode("latin-1"))
    _error(lambda: load_image_set(tmp_path / "latin.csv"), "latin.csv", "UTF-8")
    (tmp_path / "quote.csv").write_text('path,prompt\na.png,"unterminated\n')
    _error(lambda: load_image_set(tmp_path / "quote.csv"), "quote.csv")
    gray_png(tmp_path / "pic.csv")
    _error(lambda: load_image_set(tmp_path / "pic.csv"), "pic.csv", "is an image")


def test_row_limit(tmp_path, monkeypatch):
    _pngs(tmp_path, ["0.png", "1.png", "2.png"])
    csv = _csv(tmp_path / "m.csv", {"path": ["0.png", "1.png", "2.png"]})
    _error(lambda: load_image_set(csv, max_rows=2), "m.csv", "more than 2 rows")
    monkeypatch.setenv("CHEXGEN_MAX_ROWS", "2")
    _error(lambda: load_image_set(csv), "CHEXGEN_MAX_ROWS")
    assert len(load_image_set(csv, max_rows=3)) == 3


# ------------------------------------------------------------------------------------------------
# Paths


def test_duplicate_paths_name_path_and_rows(tmp_path):
    _pngs(tmp_path, ["a.png", "b.png"])
    csv = _csv(tmp_path / "m.csv", {"path": ["a.png", "b.png", "./a.png"]})
    _error(lambda: load_image_set(csv), "m.csv", "row 4", "duplicate", "'./a.png'", "row 2")
    s = load_image_set(csv, skip_bad=True)
    assert len(s) == 2 and "duplicate" in s.skipped[0].reason


def test_paths_escaping_the_root(tmp_path):
    root = tmp_path / "root"
    _pngs(root, ["ok.png"])
    outside = random_png(tmp_path / "secret.png")
    os.symlink(outside, root / "link.png")
    for bad in ["../secret.png", str(outside), "link.png"]:
        csv = _csv(root / "m.csv", {"path": ["ok.png", bad]})
        _error(lambda csv=csv: load_image_set(csv), "m.csv", "row 3", repr(bad), "outside the images root")
    s = load_image_set(csv, skip_bad=True)
    assert s.paths == [str(root / "ok.png")] and "outside" in s.skipped[0].reason
    # a folder scan refuses the symlink too, and an images root that contains the target accepts it
    _error(lambda: load_image_set(root), "link.png", "outside")
    assert len(load_image_set(_csv(root / "m.csv", {"path": ["root/ok.png", "secret.png"]}), images_root=tmp_path)) == 2


def test_missing_images(tmp_path):
    _pngs(tmp_path, ["a.png"])
    csv = _csv(tmp_path / "m.csv", {"path": ["a.png", "gone.png"]})
    _error(lambda: load_image_set(csv), "m.csv", "row 3", "'gone.png'", "missing")
    s = load_image_set(csv, skip_bad=True)
    assert len(s) == 1 and s.skipped[0].path == str(tmp_path / "gone.png")
    all_missing = _csv(tmp_path / "n.csv", {"path": ["x/1.png", "x/2.png"]})
    _error(lambda: load_image_set(all_missing), "n.csv", "None of the 2 images", "images_root")


def test_bad_image_files_found_by_verify_or_lazily(tmp_path):
    good = random_png(tmp_path / "good.png", size=16)
    truncated_copy(good, tmp_path / "cut.png", 0.5)
    (tmp_path / "text.png").write_text("not an image")
    png_with_claimed_size(tmp_path / "bomb.png", 20000, 20000)
    (tmp_path / "zero.png").write_bytes(b"")
    # zero-byte files are found without decoding
    _error(lambda: load_image_set(tmp_path), "zero.png", "empty")
    s = load_image_set(tmp_path, skip_bad=True)
    assert [os.path.basename(b.path) for b in s.skipped] == ["zero.png"] and len(s) == 4
    # the others only when read: lazily, naming the file ...
    names = [os.path.basename(p) for p in s.paths]
    _error(lambda: s.image(names.index("cut.png")), "cut.png", "truncated")
    _error(lambda: s.image(names.index("bomb.png")), "bomb.png", "400,000,000")
    # ... or all at once with verify_images
    _error(lambda: load_image_set(tmp_path, skip_bad=False, verify_images=True), "zero.png")
    v = load_image_set(tmp_path, skip_bad=True, verify_images=True)
    assert [os.path.basename(p) for p in v.paths] == ["good.png"]
    assert sorted(os.path.basename(b.path) for b in v.skipped) == ["bomb.png", "cut.png", "text.png", "zero.png"]
    bad_csv = _csv(tmp_path / "m.csv", {"path": ["good.png", "cut.png"]})
    _error(lambda: load_image_set(bad_csv, verify_images=True), "cut.png", "truncated", "skip_bad")


# ------------------------------------------------------------------------------------------------
# Specs, demo, CLI


def test_parse_set_spec(tmp_path):
    assert parse_set_spec("data/set.csv@test") == ("data/set.csv", "test")
    assert parse_set_spec("demo@train") == ("demo", "train")
    assert parse_set_spec("folder") == ("folder", None)
    assert parse_set_spec(tmp_path) == (str(tmp_path), None)
    odd = tmp_path / "run@2"
    odd.mkdir()
    assert parse_set_spec(str(odd)) == (str(odd), None)  # an existing path with '@' is a path
    assert parse_set_spec("a@b/c") == ("a@b/c", None)


def test_demo_world(tmp_path, monkeypatch):
    demo = tmp_path / "demo_world"
    _pngs(demo / "images", ["0.png", "1.png"])
    rows = [{"path": f"images/{i}.png", "prompt": "Cardiomegaly.", "patient_id": "p", "study_id": "s",
             "view": "PA", "split": s, **{p: "0" for p in PATHOLOGIES}} for i, s in enumerate(["train", "test"])]
    _csv(demo / "metadata.csv", rows)
    mod = types.ModuleType("evaluators.demo_world")
    mod.ensure_demo_world = lambda: demo
    monkeypatch.setitem(sys.modules, "evaluators.demo_world", mod)
    s = load_image_set("demo")
    assert len(s) == 2 and s.labels_source == "metadata" and s.name == "demo_world"
    assert load_image_set("demo@test").paths == [str(demo / "images" / "1.png")]
    monkeypatch.setitem(sys.modules, "evaluators.demo_world", None)
    _error(lambda: load_image_set("demo"), "demo world")


def test_image_set_from_a_table():
    s = ImageSet(pd.DataFrame({"path": ["/x/a.png"], "Edema": [1.0]}), name="t")
    assert list(s.table.columns) == list(TABLE_COLUMNS) and s.prompts == [""]
    assert s.patient_ids == [None] and s.labels[0, INDEX["Edema"]] == 1 and s.has_labels is False
    assert set(BASE_COLUMNS) < set(s.table.columns)


def test_inspect_set_cli(tmp_path, capsys):
    from evaluators.cli import main

    _pngs(tmp_path, ["a.png"])
    (tmp_path / "zero.png").write_bytes(b"")
    _csv(tmp_path / "metadata.csv", {"path": ["a.png", "zero.png"], "Edema": ["1", "0"], "split": ["test", "test"]})
    assert main(["inspect-set", str(tmp_path)]) == 2
    assert "zero.png" in capsys.readouterr().err
    assert main(["inspect-set", str(tmp_path), "--skip-bad", "--verify"]) == 0
    out = capsys.readouterr().out
    assert "images: 1" in out and "skipped 1 file" in out and "zero.png" in out
    edema = next(line for line in out.splitlines() if line.startswith("Edema"))
    assert edema.split()[1:3] == ["1", "0"]


def test_a_folder_uses_its_only_csv_as_metadata_and_says_so(tmp_path):
    """A folder of images with prompts in e.g. prompts.csv: the prompts are read (they were silently ignored);
    several CSVs, or one that lists no images, are not used and a note says so."""
    from evaluators.imagesets import load_image_set

    folder = tmp_path / "syn"
    _pngs(folder, ["a.png", "b.png"])
    _csv(folder / "prompts.csv", [{"path": "a.png", "prompt": "Cardiomegaly."},
                                  {"path": "b.png", "prompt": "Small left pleural effusion."}])
    s = load_image_set(folder)
    assert s.prompts == ["Cardiomegaly.", "Small left pleural effusion."] and s.labels_source == "prompt-labeler"
    assert any("read prompts.csv, the folder's only CSV" in n for n in s.notes)
    _csv(folder / "scores.csv", [{"model": "x", "FID": 1.0}])
    two = load_image_set(folder)
    assert two.labels_source == "none" and len(two) == 2
    assert any("2 CSV files (prompts.csv, scores.csv)" in n and "pass the one" in n for n in two.notes)
    (folder / "prompts.csv").unlink()
    other = load_image_set(folder)  # only an unrelated CSV: a plain folder, and why the CSV was not used
    assert other.labels_source == "none" and len(other) == 2
    assert any(n.startswith("scores.csv in the folder was not used as its metadata") for n in other.notes)
