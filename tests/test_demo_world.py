"""The demo world: determinism, metadata, prevalence, where each finding shows, re-identifiability, CLI."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from evaluators.cli import main as cli_main
from evaluators.demo_anatomy import Pose, render_layers, sample_study_params
from evaluators.demo_world import (
    PREVALENCE,
    WORLD_VERSION,
    ensure_demo_world,
    generate_demo_world,
    render_for_labels,
    render_study,
    sample_labels,
    sample_patient,
)
from evaluators.errors import InputError
from evaluators.pathologies import INDEX, N_LABELS, PATHOLOGIES


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _labels(*names: str) -> np.ndarray:
    lab = np.zeros(N_LABELS, np.float32)
    for n in names:
        lab[INDEX[n]] = 1
    if not names:
        lab[INDEX["No Finding"]] = 1
    return lab


def _still(rng: np.random.Generator, view: str = "PA"):
    """Study parameters without pose jitter, so masks line up with anatomy rows."""
    params = sample_study_params(rng, view)
    params.pose = Pose()
    return params


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    generate_demo_world(out, patients=12, seed=5, size=64)
    return out


def test_same_seed_same_bytes_different_seed_differs(world, tmp_path):
    again = generate_demo_world(tmp_path / "a", patients=12, seed=5, size=64).parent
    assert _digest(again) == _digest(world)
    other = generate_demo_world(tmp_path / "b", patients=12, seed=6, size=64).parent
    assert (other / "metadata.csv").read_bytes() != (world / "metadata.csv").read_bytes()


# Output of each WORLD_VERSION: the 12-patient fixture world (pixels + metadata) and every finding drawn once.
PINNED_OUTPUT = {1: "e4c8bb0f4827460a1c777d74f1b44cb283d1f7540d55254254d1b9c4a8eb5882"}


def test_world_output_is_pinned_to_its_version(world):
    """Cached worlds are keyed by WORLD_VERSION: a change to what the generator draws must bump it."""
    from PIL import Image

    h = hashlib.sha256((world / "metadata.csv").read_bytes())
    for p in sorted((world / "images").glob("*.png")):
        h.update(np.asarray(Image.open(p)).tobytes())
    for i in range(N_LABELS):  # most findings are absent from a 12-patient world
        lab = np.zeros(N_LABELS, np.float32)
        lab[i] = 1
        h.update(np.round(render_for_labels(lab, seed=i, size=64) * 255).astype(np.uint8).tobytes())
    assert h.hexdigest() == PINNED_OUTPUT.get(WORLD_VERSION), (
        "the demo world's output changed: bump evaluators.demo_world.WORLD_VERSION (so cached worlds are rebuilt) "
        f"and pin {h.hexdigest()} for it here")


def test_workers_do_not_change_output(world, tmp_path):
    par = generate_demo_world(tmp_path / "p", patients=12, seed=5, size=64, workers=2).parent
    assert _digest(par) == _digest(world)


def test_metadata_columns_splits_and_pngs(world):
    from PIL import Image

    with open(world / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == ["path", "prompt", "patient_id", "study_id", "view", "split", *PATHOLOGIES]
    split_of: dict[str, set[str]] = {}
    for r in rows:
        split_of.setdefault(r["patient_id"], set()).add(r["split"])
        assert r["view"] in ("AP", "PA") and r["prompt"].strip()
        assert all(r[p] in ("1", "0", "-1", "") for p in PATHOLOGIES)
        with Image.open(world / r["path"]) as im:
            assert im.mode == "L" and im.size == (64, 64)
            assert not im.info.get("timestamp") and "tIME" not in im.info
    assert len(split_of) == 12 and all(len(s) == 1 for s in split_of.values())  # split by patient
    assert {next(iter(s)) for s in split_of.values()} <= {"train", "valid", "test"}
    assert len({r["study_id"] for r in rows}) == len(rows)
    assert 12 <= len(rows) <= 48


def test_prevalence_and_label_rules():
    rng = np.random.default_rng(0)
    labels = np.stack([sample_labels(rng) for _ in range(4000)])
    assert labels.dtype == np.float32 and set(np.unique(labels)) <= {-1.0, 0.0, 1.0}
    for name, target in PREVALENCE.items():
        got = float((labels[:, INDEX[name]] == 1).mean())
        assert abs(got - target) < max(0.02, 0.25 * target), (name, got, target)
    sick = np.isin(labels[:, [INDEX[p] for p in PATHOLOGIES if p not in ("No Finding", "Support Devices")]],
                   (1.0, -1.0)).any(axis=1)
    assert np.array_equal(labels[:, INDEX["No Finding"]] == 1, ~sick)
    assert ((labels[:, INDEX["No Finding"]] == 1) & (labels[:, INDEX["Support Devices"]] == 1)).any()
    assert 0.003 < (labels == -1).mean() < 0.03
    pos = labels == 1
    for a, b in (("Edema", "Cardiomegaly"), ("Edema", "Pleural Effusion"), ("Pneumonia", "Consolidation")):
        assert np.corrcoef(pos[:, INDEX[a]], pos[:, INDEX[b]])[0, 1] > 0.15, (a, b)


def _ctr(info) -> float:
    heart, thorax = info["heart"] > 0.5, info["thorax"] > 0.5
    return float(heart.sum(axis=1).max() / thorax.sum(axis=1).max())


@pytest.mark.parametrize("view", ["PA", "AP"])
def test_cardiomegaly_raises_measured_ctr_above_half(view):
    for i in range(6):
        p = sample_patient(np.random.default_rng([1, i]), "p")
        params = _still(np.random.default_rng([2, i]), view)
        _, normal = render_layers(p, _labels(), size=256, view=view, params=params, with_masks=True)
        _, big = render_layers(p, _labels("Cardiomegaly"), size=256, view=view, params=params, with_masks=True)
        assert _ctr(normal) < 0.5 < _ctr(big)
        assert abs(_ctr(big) - big["geometry"].ctr) < 0.04


def _pair(name: str, i: int, size: int = 128):
    p = sample_patient(np.random.default_rng([3, i]), "p")
    params = _still(np.random.default_rng([4, i]))
    a, info = render_layers(p, _labels(), size=size, params=params, with_masks=True)
    b, _ = render_layers(p, _labels(name), size=size, params=params)
    return a.astype(float), b.astype(float), info["regions"]


def _change(a, b, region) -> float:
    return float((b - a)[region].mean())


def test_findings_show_where_a_radiologist_looks():
    for i in range(4):
        a, b, r = _pair("Pleural Effusion", i)
        assert max(_change(a, b, r["costophrenic_r"]), _change(a, b, r["costophrenic_l"])) > 10
        a, b, r = _pair("Pneumothorax", i)
        assert min(_change(a, b, r["apex_lateral_r"]), _change(a, b, r["apex_lateral_l"])) < -4
        a, b, r = _pair("Edema", i)
        assert _change(a, b, r["perihilar"]) > 10
        assert min(_change(a, b, r["lower_r"]), _change(a, b, r["lower_l"])) > 4  # bilateral
        a, b, r = _pair("Enlarged Cardiomediastinum", i)
        wide = r["upper_mediastinum"] & ~(r["perihilar"])
        assert _change(a, b, wide) > 5
        a, b, r = _pair("Atelectasis", i)
        assert max(_change(a, b, r["lower_r"]), _change(a, b, r["lower_l"])) > 3
        a, b, _ = _pair("Support Devices", i)
        assert (b - a).max() > 80  # metal is bright


def test_every_finding_changes_the_image_and_uncertain_is_fainter():
    for name in PATHOLOGIES:
        if name == "No Finding":
            continue
        diffs, faint = [], []
        for i in range(3):
            p = sample_patient(np.random.default_rng([7, i]), "p")
            params = _still(np.random.default_rng([8, i]))
            base = render_layers(p, _labels(), size=64, params=params)[0].astype(float)
            pos = render_layers(p, _labels(name), size=64, params=params)[0].astype(float)
            unc = _labels(name)
            unc[INDEX[name]] = -1
            half = render_layers(p, unc, size=64, params=params)[0].astype(float)
            diffs.append(np.abs(pos - base).sum())
            faint.append(np.abs(half - base).sum())
        assert min(diffs) > 150, (name, diffs)  # at least ~150 gray levels summed over a 64x64 image
        if name != "Support Devices":
            assert sum(faint) < sum(diffs), name


def test_same_patient_studies_look_alike():
    imgs: dict[int, list[np.ndarray]] = {}
    for i in range(8):
        p = sample_patient(np.random.default_rng([9, i]), "p")
        rng = np.random.default_rng([10, i])
        imgs[i] = [render_study(p, _labels(), size=64, view="PA", rng=rng).astype(float).ravel() for _ in range(2)]
    same = [np.corrcoef(a, b)[0, 1] for a, b in imgs.values()]
    diff = [np.corrcoef(imgs[i][0], imgs[j][1])[0, 1] for i in range(8) for j in range(8) if i != j]
    assert np.mean(same) > np.mean(diff) + 0.05
    # nearest neighbour re-identifies most patients
    hits = sum(int(np.argmax([np.corrcoef(imgs[i][0], imgs[j][1])[0, 1] for j in range(8)]) == i)
               for i in range(8))
    assert hits >= 6


def test_render_for_labels_and_bad_input():
    lab = _labels("Pleural Effusion")
    a = render_for_labels(lab, seed=3, size=64)
    assert a.dtype == np.uint8 and a.shape == (64, 64)
    assert np.array_equal(a, render_for_labels(lab, seed=3, size=64))
    assert not np.array_equal(a, render_for_labels(lab, seed=4, size=64))
    with pytest.raises(InputError, match="view"):
        render_for_labels(lab, seed=3, view="LATERAL")
    with pytest.raises(InputError, match="1, 0, -1"):
        render_for_labels(np.full(N_LABELS, 2.0), seed=3)
    with pytest.raises(InputError, match="size"):
        render_for_labels(lab, seed=3, size=8)
    with pytest.raises(InputError, match="patients"):
        generate_demo_world("/nonexistent-never", patients=0)


def test_cli_writes_files_and_help(tmp_path, capsys):
    out = tmp_path / "cli"
    assert cli_main(["demo-data", "--out", str(out), "--patients", "3", "--seed", "1", "--size", "48"]) == 0
    assert (out / "metadata.csv").is_file() and len(list((out / "images").glob("*.png"))) >= 3
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        cli_main(["demo-data", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--out", "--patients", "--seed", "--size", "--studies-max", "--workers"):
        assert opt in text
    assert cli_main(["demo-data", "--out", str(out), "--patients", "0"]) == 2
    assert "patients" in capsys.readouterr().err


def test_ensure_demo_world_builds_once():
    first = ensure_demo_world(patients=3, seed=2, size=48)
    assert first.name == f"world-v{WORLD_VERSION}-p3-s2-48px" and (first / "metadata.csv").is_file()
    stamp = (first / "metadata.csv").stat().st_mtime_ns
    assert ensure_demo_world(patients=3, seed=2, size=48) == first
    assert (first / "metadata.csv").stat().st_mtime_ns == stamp
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp-")]
