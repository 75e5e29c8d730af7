"""Reader-study engine on a tiny demo world: balanced blinded sample, served bytes, reader isolation, answers
that survive a restart, CLI end to end with the results store."""

from __future__ import annotations

import io
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, PngImagePlugin

from evaluators.cli import main
from evaluators.demo_world import generate_demo_world
from evaluators.errors import InputError
from evaluators.imagesets import load_image_set
from evaluators.readerstudy.study import Reader, create_study, parse_mix, studies_dir, study_info
from evaluators.store import ResultsStore


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Real: a 10-patient world at 64 px. Synthetic: another world at 48 px, re-saved with tell-tale PNG text
    chunks and file names, so a leak would show in the served bytes."""
    root = tmp_path_factory.mktemp("readers")
    generate_demo_world(root / "real", patients=10, seed=3, size=64)
    generate_demo_world(root / "gen", patients=10, seed=4, size=48)
    gen = load_image_set(root / "gen")
    syn = root / "synthetic"
    syn.mkdir()
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", "FAKE-GENERATOR synthetic")
    table = gen.table.copy()
    names = []
    for j, p in enumerate(gen.paths):
        name = f"synthetic_fake_{j:03d}.png"
        Image.open(p).save(syn / name, pnginfo=info)
        names.append(name)
    table["path"] = names
    table.to_csv(syn / "metadata.csv", index=False)
    return {"real": root / "real", "synthetic": syn}


def _chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    out, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append(data[pos + 4:pos + 8])
        pos += 12 + length
    return out


def test_sample_is_balanced_blinded_and_served_at_one_size(sets):
    study = create_study(sets["real"], [sets["synthetic"]], n_images=12, readers=["ann", "bob"],
                         mix="Cardiomegaly=0.34", seed=1)
    assert study["size"] == 64 and "64x64" in study["notes"][0] and "48x48" in study["notes"][0]
    con = sqlite3.connect(studies_dir() / "studies.sqlite")
    truth = con.execute("SELECT truth, labels FROM items WHERE study_id = ?", (study["study_id"],)).fetchall()
    assert sorted(t for t, _ in truth) == ["real"] * 6 + ["synthetic"] * 6
    for side in ("real", "synthetic"):  # round(0.34 * 6) = 2 Cardiomegaly positives per side at least
        assert sum('"Cardiomegaly": 1' in lab for t, lab in truth if t == side) >= 2
    ann, bob = Reader(study["readers"]["ann"]), Reader(study["readers"]["bob"])
    assert sorted(ann.order) == sorted(bob.order) and ann.order != bob.order  # own shuffled order each
    leaks = [b"synthetic", b"fake", b"FAKE", b"real", b"demo", b"patient", b"tEXt", b"eXIf", b"48"]
    for item in ann.order:
        assert len(item) >= 16 and "fake" not in item and "real" not in item
        data = ann.image_png(item)
        assert _chunks(data) == [b"IHDR"] + [b"IDAT"] * (len(_chunks(data)) - 2) + [b"IEND"]
        assert not any(word in data for word in leaks[:-1])
        im = Image.open(io.BytesIO(data))
        assert im.size == (64, 64) and im.mode == "L" and not im.info
    files = list((studies_dir() / study["study_id"]).iterdir())
    assert len(files) == 12 and all(f.stem in ann.order for f in files)


def test_same_seed_same_sample(sets):
    a = create_study(sets["real"], [sets["synthetic"]], n_images=8, readers=1, seed=7)
    b = create_study(sets["real"], [sets["synthetic"]], n_images=8, readers=1, seed=7)
    con = sqlite3.connect(studies_dir() / "studies.sqlite")
    paths = [sorted(r[0] for r in con.execute("SELECT source_path FROM items WHERE study_id = ?", (s["study_id"],)))
             for s in (a, b)]
    assert paths[0] == paths[1]
    assert a["readers"]["reader 1"] != b["readers"]["reader 1"]  # codes are random, not seeded


def test_readers_reach_only_their_own_study_and_answers(sets):
    s1 = create_study(sets["real"], [sets["synthetic"]], n_images=4, readers=["ann", "bob"], seed=2)
    s2 = create_study(sets["real"], [sets["synthetic"]], n_images=4, readers=["cy"], seed=2)
    ann, bob, cy = Reader(s1["readers"]["ann"]), Reader(s1["readers"]["bob"]), Reader(s2["readers"]["cy"])
    ann.answer(ann.order[0], call="real", confidence=4)
    assert bob.answers() == {} and list(ann.answers()) == [ann.order[0]]
    with pytest.raises(InputError, match="not part of your study"):
        cy.image_png(ann.order[0])
    with pytest.raises(InputError, match="not part of your study"):
        cy.answer(ann.order[0], call="real")
    for bad in ("", "x" * 20, "' OR 1=1 --", s1["study_id"]):
        with pytest.raises(InputError, match="not known"):
            Reader(bad)
    with pytest.raises(InputError, match="1 to 5"):
        ann.answer(ann.order[0], confidence=7)
    with pytest.raises(InputError, match="Unknown pathology"):
        ann.answer(ann.order[0], findings=["Broken Heart"])


def test_answers_survive_a_restart_and_reading_resumes(sets):
    s = create_study(sets["real"], [sets["synthetic"]], n_images=6, readers=["ann"], seed=3)
    code = s["readers"]["ann"]
    first = Reader(code).order
    script = (f"from evaluators.readerstudy.study import Reader; r = Reader({code!r}); "
              "r.answer(r.order[0], call='synthetic', confidence=2); r.answer(r.order[0], quality=3); "
              "r.answer(r.order[1], findings=['edema'], comment='blurry')")
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)  # another process, then gone
    r = Reader(code)
    a = r.answers()
    assert a[first[0]]["call"] == "synthetic" and a[first[0]]["confidence"] == 2 and a[first[0]]["quality"] == 3
    assert a[first[1]]["findings"] == ["Edema"] and a[first[1]]["call"] is None
    assert r.next_item() == first[1] and r.progress() == (1, 6)


def test_bad_study_settings_are_input_errors(sets):
    with pytest.raises(InputError, match="even"):
        create_study(sets["real"], [sets["synthetic"]], n_images=5)
    with pytest.raises(InputError, match=r"has \d+ images"):
        create_study(sets["real"], [sets["synthetic"]], n_images=2000)
    with pytest.raises(InputError, match="0 unused images positive for Fracture"):
        create_study(sets["real"], [sets["synthetic"]], n_images=8, mix="Fracture=0.5")
    with pytest.raises(InputError, match="sum"):
        parse_mix("Edema=0.7,Cardiomegaly=0.7")
    with pytest.raises(InputError, match="Unknown question"):
        create_study(sets["real"], [sets["synthetic"]], n_images=4, questions=("mood",))


def test_cli_create_status_results_and_store(sets, tmp_path, capsys):
    rc = main(["reader-study", "create", "--reference", str(sets["real"]), "--synthetic", str(sets["synthetic"]),
               "--models", "tiny-gen", "--n-images", "8", "--readers", "ann,bob", "--seed", "5", "--name", "cli"])
    out = capsys.readouterr().out
    assert rc == 0
    study_id = out.split()[1]
    codes = dict(line.strip().split(": ") for line in out.splitlines() if line.startswith("  "))
    truth = dict(sqlite3.connect(studies_dir() / "studies.sqlite").execute(
        "SELECT item_id, truth FROM items WHERE study_id = ?", (study_id,)).fetchall())
    ann, bob = Reader(codes["ann"]), Reader(codes["bob"])
    for item in ann.order:  # ann always right, confidence 5; bob always says real, confidence 3
        ann.answer(item, call=truth[item], confidence=5, quality=4)
        bob.answer(item, call="real", confidence=3, quality=2)
    assert study_info(study_id)["progress"] == {"ann": 8, "bob": 8}
    assert main(["reader-study", "status", study_id]) == 0 and "ann: 8/8" in capsys.readouterr().out
    store_before = len(ResultsStore().runs(kind="reader-study"))
    assert main(["reader-study", "results", study_id, "--out", str(tmp_path / "res"), "--save"]) == 0
    out = capsys.readouterr().out
    assert "ann: accuracy 1.000" in out and "bob: accuracy 0.500" in out and "Wilson" in out
    answers = pd.read_csv(tmp_path / "res" / "answers.csv")
    assert len(answers) == 16 and set(answers["truth"]) == {"real", "synthetic"}
    runs = ResultsStore().runs(kind="reader-study")
    assert len(runs) == store_before + 1 and runs[0]["model"] == "tiny-gen"
    assert runs[0]["metrics"]["Reader accuracy"] == pytest.approx(12 / 16)
    assert runs[0]["metrics"]["Reader answers"] == 16
    assert main(["reader-study", "status", "nope-nope"]) == 2
    assert Path(tmp_path / "res" / "results.json").stat().st_size > 0
    assert np.isfinite(runs[0]["metrics"]["Reader AUC"])
    # ROC: ann's scores are 10 (synthetic) / 1 (real), bob's all 3 -> ann AUC 1, bob 0.5; pooled synthetic
    # {10 x4, 3 x4} vs real {1 x4, 3 x4}: 32 + 16 wins and 16 ties of 64 pairs -> 56/64
    assert runs[0]["metrics"]["Reader AUC"] == pytest.approx(56 / 64)
    roc = pd.read_csv(tmp_path / "res" / "roc.csv")
    assert set(roc["curve"]) == {"pooled", "reader", "synthetic set"}
    auc = roc.groupby("name")["auc"].first()
    assert (auc["ann"], auc["bob"], auc["pooled"]) == (1.0, 0.5, pytest.approx(56 / 64))
    pooled = roc[roc["curve"] == "pooled"]  # thresholds 10, 3, 1 after the (0, 0) start
    assert list(zip(pooled["fpr"], pooled["tpr"])) == [(0, 0), (0, 0.5), (0.5, 1), (1, 1)]
    stored = ResultsStore().get(runs[0]["id"])["result"]
    assert [(p["fpr"], p["tpr"]) for p in stored["roc"]] == [(0, 0), (0, 0.5), (0.5, 1), (1, 1)]
    assert stored["roc_per_reader"]["ann"]["auc"] == 1.0 and stored["roc_per_reader"]["bob"]["auc"] == 0.5
    assert stored["roc_per_reader"]["bob"]["points"] == [{"threshold": None, "fpr": 0.0, "tpr": 0.0},
                                                         {"threshold": 3.0, "fpr": 1.0, "tpr": 1.0}]


def test_center_square_keeps_proportions():
    from evaluators.readerstudy.study import center_square

    img = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    sq = center_square(img)
    assert sq.shape == (6, 6) and (sq == img[:, 2:8]).all()
    assert center_square(img.T).shape == (6, 6) and (center_square(img.T) == img.T[2:8, :]).all()


def test_two_synthetic_sets_share_the_synthetic_half_and_stay_apart(sets):
    s = create_study(sets["real"], [sets["synthetic"], sets["synthetic"]], n_images=10, readers=1, seed=4)
    rows = sqlite3.connect(studies_dir() / "studies.sqlite").execute(
        "SELECT source, model FROM items WHERE study_id = ? AND truth = 'synthetic'", (s["study_id"],)).fetchall()
    assert sorted(r[0] for r in rows) == ["synthetic (1)"] * 3 + ["synthetic (2)"] * 2
