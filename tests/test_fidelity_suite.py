"""The fidelity suite end to end on the demo world: properties, per-pathology rows, CLI and CSV."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from evaluators.cli import main
from evaluators.demo_world import generate_demo_world
from evaluators.fidelity import RealSide, pathology_masks, run_fidelity
from evaluators.imagesets import load_image_set
from evaluators.pathologies import PATHOLOGIES


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    generate_demo_world(out, patients=160, seed=3, size=64)
    return out


def _halves(world):
    train = load_image_set(f"{world}@train")
    pids = sorted(set(train.patient_ids))
    first = set(pids[::2])
    mask = np.array([p in first for p in train.patient_ids])
    return train.subset(mask, name="A"), train.subset(~mask, name="B")


def _transformed(image_set, out_dir, fn, name):
    """Write a transformed copy of a set (same metadata) and load it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = image_set.table.copy()
    new_paths = []
    for i, path in enumerate(image_set.paths):
        img = Image.open(path).convert("L")
        dst = out_dir / f"{i:05d}.png"
        fn(img).save(dst)
        new_paths.append(dst.name)
    table["path"] = new_paths
    table.to_csv(out_dir / "metadata.csv", index=False)
    return load_image_set(out_dir, name=name)


def _fid(real, synthetic):
    return run_fidelity(real, synthetic, encoders=["pixels"], alignment=False, kid_subsets=10)["overall"]["pixels"]["FID"]


def test_identical_sets_score_perfectly(world):
    a, _ = _halves(world)
    m = run_fidelity(a, a, encoders=["pixels"], alignment=False, kid_subsets=10)["overall"]["pixels"]
    assert abs(m["FID"]) < 1e-6
    assert abs(m["KID"]) < 1e-3  # the unbiased MMD estimator is ~0, not exactly 0, for identical sets
    assert m["Precision"] == m["Recall"] == m["Coverage"] == 1.0
    assert m["n_real"] == m["n_synthetic"] == len(a)


@pytest.mark.slow
def test_disjoint_halves_beat_degraded_versions(world, tmp_path):
    a, b = _halves(world)
    base = _fid(a, b)
    blurred = _transformed(b, tmp_path / "blur", lambda im: im.filter(ImageFilter.GaussianBlur(2)), "blur")
    # A gamma (window) change: the pixels encoder normalises each image, so a linear one would be invisible to it.
    contrast = _transformed(b, tmp_path / "contrast", lambda im: im.point(lambda v: int(255 * (v / 255) ** 0.5)),
                            "contrast")
    assert base < _fid(a, blurred)
    assert base < _fid(a, contrast)
    # Pathology shift: only studies with a pleural effusion against a mixed half.
    eff = b.subset(b.labels[:, PATHOLOGIES.index("Pleural Effusion")] == 1, name="effusion only")
    normal = b.subset(b.labels[:, PATHOLOGIES.index("No Finding")] == 1, name="normal only")
    shifted = _fid(a, eff) if len(eff) >= len(normal) else _fid(a, normal)
    assert base < shifted


@pytest.mark.slow
def test_fid_grows_with_blur(world, tmp_path):
    a, b = _halves(world)
    fids = [_fid(a, b)]
    for radius in (1.5, 3.0, 6.0):
        blurred = _transformed(b, tmp_path / f"blur{radius}", lambda im, r=radius: im.filter(ImageFilter.GaussianBlur(r)),
                               f"blur{radius}")
        fids.append(_fid(a, blurred))
    assert all(x < y for x, y in itertools.pairwise(fids)), fids


def test_per_pathology_rows_and_skips(world):
    a, b = _halves(world)
    res = run_fidelity(a, b, encoders=["pixels"], per_pathology=True, alignment=False, kid_subsets=5, min_count=10)
    rows = {r["pathology"]: r for r in res["per_pathology"]}
    assert set(rows) == set(PATHOLOGIES)
    for p, r in rows.items():
        j = PATHOLOGIES.index(p)
        assert r["n_real"] == int((a.labels[:, j] == 1).sum())
        assert r["n_synthetic"] == int((b.labels[:, j] == 1).sum())
        if min(r["n_real"], r["n_synthetic"]) < 10:
            assert "minimum 10" in r["skipped"]
        else:
            assert "FID" in r and np.isfinite(r["FID"])
    assert any("skipped" in r for r in rows.values()) and any("FID" in r for r in rows.values())


def test_prompt_matching_mode(world):
    a, _ = _halves(world)
    side = RealSide(a)
    real_mask, synth_mask = pathology_masks(side, a, "Pleural Effusion", "prompts")
    prompts = np.array(a.prompts)
    # Real rows are de-duplicated by prompt; every matched synthetic prompt is one of them.
    assert len(set(prompts[real_mask])) == real_mask.sum()
    assert set(prompts[synth_mask]) <= set(prompts[real_mask])


def test_bootstrap_intervals(world):
    a, b = _halves(world)
    res = run_fidelity(a, b, encoders=["pixels"], alignment=False, kid_subsets=5, bootstrap=5)
    m = res["overall"]["pixels"]
    for key in ("FID", "KID", "Precision", "Recall", "Density", "Coverage"):
        low, high = m["ci95"][key]
        assert low <= high


def test_cli_writes_json_and_chexgenbench_csv(world, tmp_path, capsys):
    out, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    code = main(["fidelity", "--real", f"{world}@train", "--synthetic", f"{world}@test", "--encoder", "pixels",
                 "--per-pathology", "--kid-subsets", "5", "--no-alignment", "--out", str(out), "--csv", str(out_csv)])
    assert code == 0
    res = json.loads(out.read_text())
    assert set(res["overall"]["pixels"]) >= {"FID", "KID", "KID_std", "Precision", "Recall", "Density", "Coverage",
                                            "n_real", "n_synthetic"}
    assert {r["pathology"] for r in res["per_pathology"]} == set(PATHOLOGIES)
    assert res["encoders"]["pixels"]["name"] == "pixels"
    rows = list(csv.DictReader(out_csv.open()))
    assert rows[0]["Pathology"] == "All" and "FID (pixels)" in rows[0] and "Precision" in rows[0]
    assert {r["Pathology"] for r in rows[1:]} == set(PATHOLOGIES)
    printed = capsys.readouterr().out
    assert "skipped" in printed and "FID" in printed
    from evaluators.store import ResultsStore

    run = ResultsStore().runs(kind="fidelity")[0]
    assert run["synthetic"] == f"{world}@test" and run["metrics"]["FID (pixels)"] == res["overall"]["pixels"]["FID"]


def test_cli_unknown_encoder_is_a_clear_error(world, tmp_path, capsys):
    code = main(["fidelity", "--real", f"{world}@train", "--synthetic", f"{world}@test", "--encoder", "nope",
                 "--out", str(tmp_path / "r.json")])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_cli_encoder_dtype_reaches_the_encoder(world, tmp_path, capsys, monkeypatch):
    """--encoder-dtype loads the encoder in that precision; half precision on a CPU is a clear error, not a crash."""
    import evaluators.encoders as registry

    seen = []
    load = registry.load_encoder

    def spy(name, **kw):
        seen.append(kw.get("dtype"))
        return load(name, **kw)

    monkeypatch.setattr(registry, "load_encoder", spy)
    args = ["fidelity", "--real", f"{world}@train", "--synthetic", f"{world}@test", "--encoder", "pixels",
            "--no-alignment", "--kid-subsets", "5", "--no-store", "--device", "cpu", "--out", str(tmp_path / "r.json")]
    assert main([*args, "--encoder-dtype", "float32"]) == 0 and seen == ["float32"]
    args[args.index("pixels")] = "demo"  # pixels has no network, so it has no precision to refuse
    assert main([*args, "--encoder-dtype", "float16"]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA device" in err and "Traceback" not in err


def test_summary_explains_an_undefined_alignment_auc():
    """A synthetic set whose labels never vary (one prompt's images) has no AUC: say why instead of 'None'."""
    from evaluators.fidelity import format_summary

    base = {"overall": {}, "per_pathology": []}
    undefined = format_summary({**base, "alignment": {"available": True, "classifier": "demo", "macro_AUC": None}})
    assert "macro AUC n/a (no label has both positive and negative" in undefined and "None" not in undefined
    assert "macro AUC 0.750" in format_summary({**base, "alignment": {"available": True, "classifier": "demo",
                                                                      "macro_AUC": 0.75}})


def test_alignment_uses_the_demo_classifier_only_on_the_demo_world(world, tmp_path):
    """The demo classifier was trained on demo-world phantoms: its AUC is alignment on the demo world, and on any other
    reference it is withheld with the reason (here torchxrayvision's DenseNet is made unavailable, as offline)."""
    from evaluators.encoders import load_encoder
    from evaluators.errors import UnavailableError
    from evaluators.fidelity import format_summary

    def load(name, **kw):
        if name == "xrv-densenet":
            raise UnavailableError("xrv-densenet: its weights are not on this machine (stand-in for the test)")
        return load_encoder(name, **kw)

    a, b = _halves(world)
    kw = {"encoders": ["demo"], "kid_subsets": 5, "load_encoder": load}
    on_demo = run_fidelity(a, b, **kw)["alignment"]
    assert on_demo["available"] and on_demo["classifier"] == "demo" and 0.5 < on_demo["macro_AUC"] <= 1.0
    elsewhere = _transformed(a, tmp_path / "not_demo", lambda img: img, "A copied out of the world")
    res = run_fidelity(elsewhere, b, **kw)
    al = res["alignment"]
    assert not al["available"] and "demo-world phantoms" in al["reason"] and "stand-in for the test" in al["reason"]
    assert "alignment: not computed (the demo classifier was trained on demo-world phantoms" in format_summary(res)


def test_small_sample_and_unlabelled_notes_on_per_pathology_rows():
    """Real folders of radiographs often carry no labels (every row skipped as '0 synthetic images', which read as a
    failed load) and pathologies with a few dozen images give FIDs below the feature dimension (biased by n): both
    are said once in the run's notes, from the result alone."""
    from evaluators.fidelity import pathology_note_lines

    result = {"encoders": {"demo": {"dim": 256}}, "synthetic": {"labels_source": "metadata"},
              "per_pathology": [{"pathology": "Edema", "encoder": "demo", "n_real": 53, "n_synthetic": 18, "FID": 2.2},
                                {"pathology": "No Finding", "encoder": "demo", "n_real": 900, "n_synthetic": 300,
                                 "FID": 1.0},
                                {"pathology": "Fracture", "encoder": "demo", "n_real": 0, "n_synthetic": 0,
                                 "skipped": "only 0 real image(s)"}]}
    lines = pathology_note_lines(result)
    assert len(lines) == 1 and "FID on 1 per-pathology row(s)" in lines[0] and "256" in lines[0]
    unlabelled = {"synthetic": {"labels_source": "none"}, "per_pathology": result["per_pathology"][2:]}
    assert any("has no labels or prompts" in line for line in pathology_note_lines(unlabelled))
    assert pathology_note_lines({"per_pathology": []}) == []
