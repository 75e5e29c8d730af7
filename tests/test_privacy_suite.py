"""The privacy suite on the demo world: planted copies are found, new patients are not, baselines separate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from evaluators.cli import main
from evaluators.demo_world import generate_demo_world
from evaluators.encoders.registry import availability
from evaluators.errors import InputError, UnavailableError
from evaluators.imagesets import load_image_set
from evaluators.pathologies import PATHOLOGIES
from evaluators.privacy.perturb import KINDS, perturb
from evaluators.privacy.search import DUPLICATE_SCORE
from evaluators.privacy.suite import format_summary, run_privacy, run_privacy_protocol

torch.set_num_threads(1)

ENCODER = "demo" if availability("demo").local else "pixels"
# Every kind but the two that downsample x4: on this 64 px world they leave 16 px phantoms, whose identity is in
# fine texture; those kinds are tested on real radiographs (tests/test_copy_matcher.py) and at 128 px
# (benchmarks/privacy_matcher.py).
COPY_KINDS = tuple(k for k in KINDS if k not in ("downsample", "combined"))
COPIES_PER_KIND = 8
N_NOVEL = 80


def _demo_reid_available() -> bool:
    from evaluators.privacy.reid import resolve_reid_path

    try:
        resolve_reid_path("demo")
        return True
    except UnavailableError:
        return False


def _save(img: np.ndarray, path: Path) -> None:
    Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 120-patient training world (seed 0), new patients from another seed, and a planted synthetic set."""
    root = tmp_path_factory.mktemp("privacy")
    generate_demo_world(root / "train_world", patients=120, seed=0, size=64)
    generate_demo_world(root / "novel_world", patients=60, seed=11, size=64)
    train = load_image_set(f"{root / 'train_world'}@train")
    novel = load_image_set(root / "novel_world")
    syn = root / "synthetic"
    syn.mkdir()
    rng = np.random.default_rng(0)
    picks = rng.choice(len(train), size=len(COPY_KINDS) * COPIES_PER_KIND, replace=False)
    rows = []
    for j, i in enumerate(picks):
        kind = COPY_KINDS[j % len(COPY_KINDS)]
        _save(perturb(train.image(int(i)), kind, rng), syn / f"copy_{j:03d}_{kind}.png")
        rows.append({"path": f"copy_{j:03d}_{kind}.png", "prompt": train.prompts[int(i)],
                     **dict(zip(PATHOLOGIES, train.labels[int(i)].tolist()))})
    for j in range(N_NOVEL):
        _save(novel.image(j), syn / f"novel_{j:03d}.png")
        rows.append({"path": f"novel_{j:03d}.png", "prompt": novel.prompts[j],
                     **dict(zip(PATHOLOGIES, novel.labels[j].tolist()))})
    pd.DataFrame(rows).to_csv(syn / "metadata.csv", index=False)
    small = root / "synthetic_small"  # a few of each, for the tests that rerun the suite
    small.mkdir()
    keep = [r for r in rows if r["path"].startswith("copy_")][:12] + [r for r in rows if r["path"].startswith("novel")][:8]
    for r in keep:
        (small / r["path"]).write_bytes((syn / r["path"]).read_bytes())
    pd.DataFrame(keep).to_csv(small / "metadata.csv", index=False)
    result = run_privacy(f"{root / 'train_world'}@train", syn, encoder=ENCODER, reid="demo")
    return {"root": root, "train": train, "synthetic": syn, "small": small, "result": result}


def _by_name(result: dict) -> dict[str, dict]:
    return {Path(s["synthetic"]).name: s for s in result["samples"]}


def test_planted_copies_found_new_patients_not(world):
    samples = _by_name(world["result"])
    copies = [s for n, s in samples.items() if n.startswith("copy_")]
    novel = [s for n, s in samples.items() if n.startswith("novel_")]
    assert len(copies) == len(COPY_KINDS) * COPIES_PER_KIND and len(novel) == N_NOVEL
    recall = np.mean([s["flagged"] for s in copies])
    false_rate = np.mean([s["flagged"] for s in novel])
    per_kind = {k: np.mean([s["flagged"] for n, s in samples.items() if n.endswith(f"_{k}.png")]) for k in COPY_KINDS}
    print(f"encoder={ENCODER} recall={recall:.3f} false={false_rate:.3f} per kind={per_kind}")
    assert recall >= 0.95, per_kind
    assert false_rate <= 0.05
    # The matched training image of an exact copy is the copied file itself.
    exact = [s for n, s in samples.items() if n.endswith("_identity.png")]
    assert all(s["match"]["copy_score"] > 0.999 for s in exact)


def test_result_shape_and_calibration(world):
    r = world["result"]
    assert set(r) >= {"summary", "samples", "calibration", "settings", "encoder", "reid"}
    cal = r["calibration"]
    assert cal["source"].startswith("leave-one-out over the training index")
    n_train = r["settings"]["n_train"]
    assert cal["percentile"] == 99.0 and cal["level"] == pytest.approx(0.01)
    assert cal["n"] == cal["n_queries"] == n_train and cal["patient_ids_used"] is True  # every training image
    assert r["summary"]["patient_ids_source"] == "column" and "training patient ids: column" in format_summary(r)
    assert cal["smallest_level"] == pytest.approx(1 / (n_train + 1)) and len(cal["scores"]) == n_train
    # the conformal quantile: the ceil((n + 1) * 0.99)-th smallest calibration score
    assert cal["threshold"] == sorted(cal["scores"])[int(np.ceil((n_train + 1) * 0.99)) - 1]
    for x in r["samples"]:  # p-value next to the flag, and the flag is p <= level
        assert 0 < x["copy_p_value"] <= 1
        assert x["flagged"] == (x["copy_p_value"] <= cal["level"])
    s = r["summary"]
    n = len(r["samples"])
    assert s["n"] == n
    assert s["fraction_flagged"] == pytest.approx(np.mean([x["flagged"] for x in r["samples"]]))
    assert s["memorisation_threshold"] == cal["threshold"]
    assert len(s["per_pathology"]) == 14 and {"pathology", "n", "fraction_flagged"} <= set(s["per_pathology"][0])
    first = r["samples"][0]
    assert len(first["neighbours"]) == 5
    sims = [nb["similarity"] for nb in first["neighbours"]]
    assert sims == sorted(sims, reverse=True)
    assert {"path", "similarity", "patient_id"} <= set(first["neighbours"][0])
    train_paths = set(world["train"].paths)
    assert all(nb["path"] in train_paths for x in r["samples"] for nb in x["neighbours"])
    json.dumps(r)  # plain data


def test_reid_scores(world):
    r = world["result"]
    if not _demo_reid_available():
        assert r["summary"]["reid_available"] is False and "unavailable" in r["summary"]["reid_note"]
        assert all(s["reid_score"] is None for s in r["samples"])
        pytest.skip("demo re-ID model not present: checked that the suite reports it and continues")
    samples = _by_name(r)
    copy_scores = [s["reid_score"] for n, s in samples.items() if n.startswith("copy_")]
    novel_scores = [s["reid_score"] for n, s in samples.items() if n.startswith("novel_")]
    assert np.mean(copy_scores) > np.mean(novel_scores) + 0.2
    assert r["summary"]["max_reid"] == pytest.approx(max(copy_scores + novel_scores))


def test_reid_unavailable_is_reported(world, monkeypatch):
    import evaluators.privacy.reid as reid

    def missing(_name):
        raise UnavailableError("demo re-ID weights missing (test)")

    monkeypatch.setattr(reid, "resolve_reid_path", missing)
    r = run_privacy(f"{world['root'] / 'train_world'}@train", world["small"], encoder=ENCODER, reid="demo")
    assert r["summary"]["reid_available"] is False
    assert "missing (test)" in r["summary"]["reid_note"]
    assert np.isnan(r["summary"]["mean_reid"])
    full = _by_name(world["result"])
    assert all(s["flagged"] == full[Path(s["synthetic"]).name]["flagged"] for s in r["samples"])


def test_calibration_without_patient_ids_says_so_once(world, tmp_path):
    """No patient ids: leave-one-out still runs, excludes near-duplicate studies, and one note says what that means."""
    train = world["train"]
    table = train.table.drop(columns=["patient_id"])
    (tmp_path / "noids").mkdir()
    rows = []
    for i, path in enumerate(train.paths):
        name = f"{i:04d}.png"
        (tmp_path / "noids" / name).write_bytes(Path(path).read_bytes())
        rows.append({**table.iloc[i].to_dict(), "path": name})
    pd.DataFrame(rows).to_csv(tmp_path / "noids" / "metadata.csv", index=False)
    r = run_privacy(str(tmp_path / "noids"), world["small"], encoder=ENCODER, reid=None)
    cal = r["calibration"]
    assert cal["patient_ids_used"] is False and cal["n_queries"] == len(train)
    assert sum("no patient ids" in n for n in cal["notes"]) == 1
    assert "NOTE: the training set has no patient ids" in format_summary(r)
    assert r["summary"]["patient_ids_source"] == "none"
    # candidates scoring at least the near-duplicate level were left out; when that level sets the threshold,
    # a note says so
    dup = cal["duplicate_score"]
    assert dup >= DUPLICATE_SCORE and cal["threshold"] < dup
    if cal["threshold"] >= dup - 0.02:
        assert any("near-duplicate level" in n for n in cal["notes"])
    # the level is at least the calibration quantile of the queries' second-best scores (strangers are not excluded)
    assert dup >= sorted(cal["scores"])[int(np.ceil((len(train) + 1) * 0.99)) - 1] - 0.1
    samples = _by_name(r)
    assert np.mean([s["flagged"] for n, s in samples.items() if n.startswith("copy_")]) >= 0.9


def test_patient_ids_derived_from_nih_file_names_calibrate_as_the_column_does(world, tmp_path):
    """The same training images named as NIH ChestX-ray14 names them (patient, follow-up), with no patient_id
    column: the ids come from the names, the calibration leaves each query's patient out, as with the column."""
    train = world["train"]
    number = {p: k + 1 for k, p in enumerate(dict.fromkeys(train.patient_ids))}
    seen: dict[str, int] = {}
    rows = []
    (tmp_path / "nih").mkdir()
    for i, (path, pid) in enumerate(zip(train.paths, train.patient_ids)):
        name = f"{number[pid]:08d}_{seen.setdefault(pid, 0):03d}.png"
        seen[pid] += 1
        (tmp_path / "nih" / name).write_bytes(Path(path).read_bytes())
        rows.append({**train.table.drop(columns=["patient_id", "study_id"]).iloc[i].to_dict(), "path": name})
    pd.DataFrame(rows).to_csv(tmp_path / "nih" / "metadata.csv", index=False)
    r = run_privacy(str(tmp_path / "nih"), world["small"], encoder=ENCODER, reid=None)
    source = "derived from file names (NIH ChestX-ray14 layout)"
    assert r["summary"]["patient_ids_source"] == source and f"training patient ids: {source}" in format_summary(r)
    cal, with_column = r["calibration"], world["result"]["calibration"]
    assert cal["patient_ids_used"] is True and cal["n_queries"] == with_column["n_queries"]
    assert cal["threshold"] == pytest.approx(with_column["threshold"], abs=1e-6)


def test_a_level_the_calibration_cannot_support_is_refused(world):
    with pytest.raises(InputError, match=r"support levels down to"):
        run_privacy(f"{world['root'] / 'train_world'}@train", world["small"], encoder=ENCODER, reid=None,
                    percentile=99.95)


@pytest.mark.slow
def test_copycat_vs_oracle_protocol(world, monkeypatch):
    monkeypatch.setenv("CHEXGEN_COPYCAT_SOURCE", f"{world['root'] / 'train_world'}@train")
    train = f"{world['root'] / 'train_world'}@train"
    kw = dict(m_prompts=6, seeds=(0, 1), encoder=ENCODER, size=64)
    copy = run_privacy_protocol("copycat", train, **kw)
    oracle = run_privacy_protocol("reference-oracle", train, **kw)
    c, o = copy["summary"], oracle["summary"]
    assert len(copy["per_prompt"]) == 6 and copy["per_prompt"][0]["n_seeds"] == 2
    # Every number separates: the copycat memorised the training prompts' own images (light perturbations),
    # the oracle draws new patients with the same findings.
    assert c["fraction_flagged"] >= 0.9 and o["fraction_flagged"] <= 0.1
    assert c["copy_score_mean"] > o["copy_score_mean"] + 0.2
    for key in ("mean_pixel_distance", "min_pixel_distance", "mean_latent_distance", "min_latent_distance"):
        assert c[key] < 0.5 * o[key], key
    if c["reid_available"]:
        # re-ID on a demo world: the demo model, shown with its AUC on this world's patients
        assert c["reid_model"] == o["reid_model"] == "demo" and c["reid_auc"] > 0.85
        assert all(r["reid_model"] == "demo" and r["reid_auc"] == c["reid_auc"] for r in copy["per_prompt"])
        assert c["mean_reid"] > o["mean_reid"] + 0.3
        assert c["mean_of_prompt_max_reid"] > o["mean_of_prompt_max_reid"] + 0.3
        assert c["fraction_reidentified"] >= o["fraction_reidentified"] + 0.5
        assert c["max_reid"] > o["max_reid"]


def test_cli_privacy_writes_json_and_store(world, tmp_path, capsys):
    from evaluators.store import ResultsStore

    out = tmp_path / "privacy.json"
    rc = main(["privacy", "--train", f"{world['root'] / 'train_world'}@train", "--synthetic",
               str(world["small"]), "--encoder", ENCODER, "--reid", "none", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["summary"]["n"] == 20 and result["summary"]["fraction_flagged"] >= 0.55  # 12 of 20 are copies
    printed = capsys.readouterr().out
    assert "flagged as memorised" in printed and "re-ID: not computed" in printed
    runs = ResultsStore().runs(kind="privacy")
    assert runs and runs[0]["synthetic"] == str(world["small"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--synthetic", "/nonexistent/synthetic"], "/nonexistent/synthetic"),
        (["--synthetic", "SYN", "--encoder", "no-such-encoder"], "no-such-encoder"),
        (["--synthetic", "SYN", "--reid", "/nonexistent/reid.safetensors"], "/nonexistent/reid.safetensors"),
        (["--synthetic", "SYN", "--percentile", "150"], "Percentile"),
    ],
)
def test_cli_bad_input(world, tmp_path, capsys, extra, message):
    extra = [str(world["small"]) if a == "SYN" else a for a in extra]
    rc = main(["privacy", "--train", f"{world['root'] / 'train_world'}@train", *extra, "--out",
               str(tmp_path / "x.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "error:" in err and message in err.split("error:", 1)[1]
    assert not (tmp_path / "x.json").exists()
    assert "Traceback" not in err


def test_cli_argument_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["privacy", "--train", "demo@train", "--synthetic", "x", "--k", "0", "--out", "x.json"])
    assert exc.value.code == 2 and "must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["privacy-protocol", "--train", "demo@train", "--out", "x.json"])
    assert exc.value.code == 2 and "--model" in capsys.readouterr().err


def test_api_input_errors(world):
    with pytest.raises(InputError, match="k must be"):
        run_privacy(world["train"], world["synthetic"], encoder=ENCODER, k=0, reid=None)
    with pytest.raises(InputError, match="Unknown match"):
        run_privacy(world["train"], world["synthetic"], encoder=ENCODER, match="fuzzy", reid=None)


def test_calibration_is_cached_next_to_the_index_and_follows_the_held_out_files(world):
    import os

    from evaluators.encoders import load_encoder
    from evaluators.index import cached_index as reference_index
    from evaluators.privacy.search import MemorisationSearch

    enc = load_encoder(ENCODER)
    spec = f"{world['root'] / 'train_world'}@train"
    index = reference_index(world["train"], enc)
    first = MemorisationSearch(index, enc, spec=spec)
    cal = first.calibration
    files = sorted(index.dir.glob("calibration-*.json"))
    assert any(json.loads(f.read_text()) == cal for f in files)
    again = MemorisationSearch(index, enc, spec=spec)
    again.matcher = None  # a cache hit needs no matching at all
    assert again.calibration == cal
    # an explicit held-out set is keyed by its files: one changes on disk, the cached threshold no longer applies
    held = f"{world['root'] / 'train_world'}@test"  # about 55 images: level 0.05, not 0.01
    assert MemorisationSearch(index, enc, heldout=held, percentile=95).calibration["source"] == "given held-out set"
    os.utime(load_image_set(held).paths[0], ns=(1, 1))
    n_before = len(list(index.dir.glob("calibration-*.json")))
    assert MemorisationSearch(index, enc, heldout=held, percentile=95).calibration["threshold"] > 0
    assert len(list(index.dir.glob("calibration-*.json"))) == n_before + 1


def test_pixel_candidates_bring_in_a_source_the_encoder_missed(world, monkeypatch):
    """The search adds training images nearest by pixel key to the encoder's candidates: a copy is matched to its
    source even when the encoder does not propose it; without pixel candidates the rows are the encoder's."""
    from evaluators.encoders import load_encoder
    from evaluators.features import extract_features
    from evaluators.index import cached_index as reference_index
    from evaluators.privacy.search import MemorisationSearch, copy_scores

    enc = load_encoder(ENCODER)
    train = world["train"]
    index = reference_index(train, enc)
    src = 7
    copy = perturb(train.image(src), "rotate", np.random.default_rng(3))
    sims, rows = index.search(extract_features([copy], enc, show_progress=False).features, 20)
    keep = rows[0] != src  # an encoder that does not propose the source
    sims, rows = sims[:, keep][:, :10], rows[:, keep][:, :10]
    search = MemorisationSearch(index, enc, candidates=10, pixel_candidates=5, workers=1)
    items, cand = search.candidates([copy], sims, rows)
    got = cand[0][cand[0] >= 0]
    assert src in got and set(rows[0]) <= set(got) and len(set(got)) == len(got) <= 15
    # the encoder's nearest 2, then the pixel key's nearest 2: the rows the matcher always registers
    assert list(got[:2]) == list(rows[0][:2]) and search.matcher.keep_encoder == 4
    score, row = copy_scores(items, sims, cand, "registered", search.matcher)
    assert row[0] == src and score[0] > 0.9
    # the training pixel keys are computed once and cached next to the index
    assert len(list(index.dir.glob("pixel-keys-*.npy"))) == 1
    again = MemorisationSearch(index, enc, candidates=10, pixel_candidates=5, workers=1)
    again.matcher = None  # a cache hit reads no image
    np.testing.assert_array_equal(again.pixel_keys, search.pixel_keys)
    blind = MemorisationSearch(index, enc, candidates=10, pixel_candidates=0, workers=1)
    assert blind.candidates([copy], sims, rows)[1] is rows
    assert copy_scores([copy], sims, rows, "registered", blind.matcher)[0][0] < score[0] - 0.05
    # leave-one-out never hands a query itself (nor, with ids, its own patient) through the pixel keys: no
    # calibration score is an exact copy's
    assert max(world["result"]["calibration"]["scores"]) < 0.999


def test_a_loaded_reid_model_is_named_not_dumped_in_the_settings(world):
    """The app passes a loaded model; the results store's settings column must stay one short line."""
    from evaluators.privacy.reid import ReIDModel

    model = ReIDModel("tiny", image_size=32).eval()
    r = run_privacy(f"{world['root'] / 'train_world'}@train", world["small"], encoder=ENCODER, reid=model)
    assert r["settings"]["reid"] == "siamese-tiny (a loaded model)"
    assert r["summary"]["reid_available"] is True


def test_device_reaches_the_encoder_and_the_reid_model(world, monkeypatch):
    """Encoders and re-ID models given by name load on the requested device (the CLI's --device); before, privacy
    ran on the CPU even where a GPU was present."""
    import evaluators.encoders as encoders
    from evaluators.privacy import reid

    seen: list[tuple[str, str]] = []
    load_encoder, load_reid = encoders.load_encoder, reid.load_reid

    def spy_encoder(name, **kw):
        seen.append(("encoder", kw.get("device")))
        seen.append(("dtype", kw.get("dtype")))
        return load_encoder(name, **kw)

    def spy_reid(path, **kw):
        seen.append(("reid", kw.get("device")))
        return load_reid(path, **kw)

    monkeypatch.setattr(encoders, "load_encoder", spy_encoder)
    monkeypatch.setattr(reid, "load_reid", spy_reid)
    train = f"{world['root'] / 'train_world'}@train"
    run_privacy(train, world["small"], encoder=ENCODER, reid="demo", device="cpu")
    assert ("encoder", "cpu") in seen and ("reid", "cpu") in seen and ("dtype", "float32") in seen
    with pytest.raises(InputError, match="needs a CUDA device"):
        run_privacy(train, world["small"], encoder=ENCODER, reid=None, device="cpu", encoder_dtype="float16")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            run_privacy(train, world["small"], encoder=ENCODER, reid="demo", device="cuda")


def test_reference_index_follows_the_patient_ids(world):
    """The index's table decides the patient-disjoint calibration: the same files with and without a patient_id
    column get different indexes (the features come from the cache)."""
    from evaluators.encoders import load_encoder
    from evaluators.index import cached_index as reference_index
    from evaluators.privacy.search import patient_ids

    enc = load_encoder(ENCODER)
    with_ids = reference_index(world["train"], enc)
    blank = world["train"].subset(np.arange(len(world["train"])))
    blank.table["patient_id"] = None
    without = reference_index(blank, enc)
    assert with_ids.dir != without.dir
    assert patient_ids(with_ids.meta) == world["train"].patient_ids and patient_ids(without.meta) is None
