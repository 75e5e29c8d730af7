"""The run layer (evaluators.runs) and the metric registry: the app and the CLI are one engine.

- same config -> same result: the CLI and the app write byte-identical fidelity and privacy JSON (run times aside);
- a metric registered in its own module appears in the JSON, the CSV, the app's tables, the summary and the
  leaderboard with nothing else edited;
- one index folder per set and encoder, whoever asks first.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from chexgen_ui import display
from chexgen_ui.services import Studio
from evaluators.cli import main as cli
from evaluators.metrics import registry
from tests.ui_world import COPIER, copier_world

TIMES = ("wall_time_s", "seconds")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return copier_world(tmp_path_factory.mktemp("runs_world"), patients=85)


@pytest.fixture(scope="module")
def studio(world):
    return Studio(f"{world}@train", encoder="pixels", device="cpu", umap=False)


@pytest.fixture(scope="module")
def copies(studio, tmp_path_factory):
    folder = tmp_path_factory.mktemp("copies")
    gen = studio.generate(COPIER, "Small left pleural effusion.", n=12, seed=3)
    for i, img in enumerate(gen.images):
        Image.fromarray(display.to_uint8(img)).save(folder / f"c{i:02d}.png")
    return folder


def _has_radiomics() -> bool:
    from evaluators.encoders import availability

    return availability("radiomics").local


def _without_times(obj):
    if isinstance(obj, dict):
        return {k: _without_times(v) for k, v in obj.items() if k not in TIMES}
    if isinstance(obj, list):
        return [_without_times(v) for v in obj]
    return obj


def _same_json_but_times(a: str, b: str) -> None:
    """Byte-identical once the run times are blanked (the JSON writer is the same one)."""
    ja, jb = json.loads(a), json.loads(b)
    assert _without_times(ja) == _without_times(jb)
    blank = json.dumps(_without_times(ja), indent=2)
    assert blank == json.dumps(_without_times(jb), indent=2)


def test_app_and_cli_write_the_same_fidelity_json(studio, world, copies, tmp_path):
    out = tmp_path / "cli.json"
    # the app's default encoders on this (not demo-world) reference: the index's, plus radiomics for FRD
    encoders = ["--encoder", "pixels"] + (["--encoder", "radiomics"] if _has_radiomics() else [])
    assert cli(["fidelity", "--real", f"{world}@train", "--synthetic", str(copies), *encoders,
                "--per-pathology", "--device", "cpu", "--out", str(out), "--min-count", "2"]) == 0
    app = studio.run_fidelity(studio.synthetic_from_folder(str(copies)), min_count=2)
    _same_json_but_times(out.read_text(), app.json_path.read_text())
    assert json.loads(out.read_text())["real"]["name"] == f"{world}@train"  # the spec, not a cache folder


def test_app_and_cli_write_the_same_privacy_json(studio, world, copies, tmp_path):
    out = tmp_path / "cli.json"
    assert cli(["privacy", "--train", f"{world}@train", "--synthetic", str(copies), "--encoder", "pixels",
                "--device", "cpu", "--out", str(out)]) == 0
    app = studio.run_privacy(studio.synthetic_from_folder(str(copies)))
    _same_json_but_times(out.read_text(), app.json_path.read_text())
    data = json.loads(out.read_text())
    assert data["memorisation"]["n_flagged"] == 12  # the copier's images are training images
    assert data["settings"]["index"] == str(studio.index().dir)  # one index folder for the app and the CLI


def test_cli_inspect_and_leaderboard_show_what_the_app_shows(studio, world, copies, tmp_path, capsys):
    """`inspect` gives each image the app's verdict and neighbours; `leaderboard` lists the app's table."""
    import pandas as pd

    from evaluators.runs import inspect

    out = tmp_path / "inspect.json"
    assert cli(["inspect", "--reference", f"{world}@train", "--images", str(copies), "--encoder", "pixels",
                "--device", "cpu", "--json", str(out), "--zip", str(tmp_path)]) == 0
    records = json.loads(out.read_text())["images"]
    assert [r["verdict"]["decision"] for r in records] == ["memorised"] * 12  # the copier's images
    app = inspect.inspect(studio.ctx, inspect.from_image_set(studio.synthetic_from_folder(str(copies))))
    np.testing.assert_allclose([r["verdict"]["copy_score"] for r in records], app.copy_score)
    assert [r["neighbours"][0]["patient"] for r in records] == [nb[0].patient_id for nb in app.neighbours]
    printed = capsys.readouterr().out
    assert printed.count("**Verdict: memorised.**") == 12 and "verdicts: 12 memorised, 0 same patient, 0 new" in printed
    assert len(list(tmp_path.glob("*.zip"))) == 1
    studio.store().save("privacy", {"summary": {"fraction_flagged": 0.5}}, model="cli-check", synthetic="s")
    assert cli(["leaderboard", "--kind", "privacy", "--csv", str(tmp_path / "board.csv")]) == 0
    board = pd.read_csv(tmp_path / "board.csv")
    assert list(board["id"]) == list(studio.leaderboard("privacy")["id"]) and "cli-check" in set(board["model"])


def test_one_index_folder_per_set_and_encoder(studio, world):
    from evaluators.index import cached_index, index_key

    idx = cached_index(studio.reference_set(), studio.encoder())
    assert idx.dir == studio.index().dir and idx.dir.name == index_key(studio.reference_set(), studio.encoder())


@pytest.fixture
def toy_metric():
    """A metric registered the way a new module under evaluators/metrics/ would register it."""

    @registry.register("Toy", direction="lower", display="Toy distance", column="Toy")
    def toy(real, synthetic):
        return float(np.abs(np.asarray(real).mean(0) - np.asarray(synthetic).mean(0)).sum())

    yield toy
    registry.unregister("Toy")


def test_a_registered_metric_reaches_json_csv_tables_summary_and_leaderboard(studio, copies, toy_metric):
    from evaluators.fidelity import format_summary

    syn = studio.synthetic_from_folder(str(copies))
    run = studio.run_fidelity(syn, model="toy-check", min_count=2, kid_subsets=5)
    data = json.loads(run.json_path.read_text())
    expected = toy_metric(studio.index().features, np.zeros((1, 1)))  # shape check only below
    value = data["overall"]["pixels"]["Toy"]
    assert isinstance(value, float) and value >= 0 and expected is not None
    assert all("Toy" in row for row in data["per_pathology"] if "skipped" not in row)
    with open(run.csv_path) as fh:
        header = next(csv.reader(fh))
    assert "Toy (pixels)" in header  # a per-encoder column, named as CheXGenBench names FID (RadDino)
    assert "Toy" in run.overall.columns and "Toy" in run.per_pathology.columns
    assert "Toy distance" in format_summary(data)
    board = studio.leaderboard("fidelity")
    assert board.loc[board["model"] == "toy-check", "Toy (pixels)"].iloc[0] == pytest.approx(value)


def test_registry_refuses_what_it_cannot_route():
    with pytest.raises(ValueError, match="unknown input"):
        registry.register("Bad", inputs=("real", "labels"))(lambda real, labels: 0.0)
    with pytest.raises(TypeError, match="does not take"):
        registry.register("Bad", inputs=("real", "synthetic"))(lambda a, b: 0.0)
    with pytest.raises(ValueError, match="direction"):
        registry.register("Bad", direction="up")(lambda real, synthetic: 0.0)
    assert "Bad" not in {m.name for m in registry.metrics(None)}


def test_fidelity_metrics_come_from_the_registry_and_match_the_functions():
    from evaluators.metrics import fidelity_metrics, kid, prdc
    from evaluators.metrics.fidelity import fid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(80, 6)), rng.normal(size=(70, 6)) + 0.3
    m = fidelity_metrics(a, b, kid_subsets=20, seed=1)
    assert m["FID"] == pytest.approx(fid(a, b))
    assert (m["KID"], m["KID_std"]) == pytest.approx(kid(a, b, subsets=20, seed=1))
    assert m["Precision"] == pytest.approx(prdc(a, b, k=5)["precision"])
    names = [o.key for o in registry.outputs("fidelity")]
    assert names[:7] == ["FID", "KID", "KID_std", "Precision", "Recall", "Density", "Coverage"]
    assert registry.output("FID").direction == "lower" and registry.output("Coverage").direction == "higher"


def test_a_cli_job_that_fails_leaves_a_partial_row_with_its_reason(world, copies, tmp_path):
    """The CLI saves the way the app saves: a job stopped by an error leaves a 'partial' store row naming it."""
    import shutil

    from evaluators.store import ResultsStore

    bad = tmp_path / "bad"
    shutil.copytree(copies, bad)
    (bad / "c00.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    before = {r["id"] for r in ResultsStore().runs(kind="fidelity")}
    assert cli(["fidelity", "--real", f"{world}@train", "--synthetic", str(bad), "--encoder", "pixels",
                "--device", "cpu", "--out", str(tmp_path / "f.json"), "--model", "broken"]) == 2
    new = [r for r in ResultsStore().runs(kind="fidelity") if r["id"] not in before]
    assert len(new) == 1 and new[0]["status"] == "partial" and new[0]["model"] == "broken"
    full = ResultsStore().get(new[0]["id"])
    assert "c00.png" in full["result"]["error"] and not (tmp_path / "f.json").exists()


# ---- issue #22's metrics on the registry: FD_inf (opt-in), Vendi, FRD (radiomics), C_T and AuthPct (privacy)


@pytest.fixture(scope="module")
def many_copies(studio, tmp_path_factory):
    """48 copier images (exact training images): enough synthetic images per k-means cell for C_T."""
    folder = tmp_path_factory.mktemp("many_copies")
    for j, prompt in enumerate(("Small left pleural effusion.", "No acute cardiopulmonary process.")):
        gen = studio.generate(COPIER, prompt, n=24, seed=10 + j)
        for i, img in enumerate(gen.images):
            Image.fromarray(display.to_uint8(img)).save(folder / f"m{j}{i:02d}.png")
    return folder


def test_fd_inf_and_vendi_reach_json_csv_tables_and_leaderboard(studio, world, copies, monkeypatch):
    from evaluators.features import extract_features
    from evaluators.fidelity import format_summary
    from evaluators.metrics.diversity import vendi_score

    syn = studio.synthetic_from_folder(str(copies))
    plain = studio.run_fidelity(syn, model="plain-check", min_count=2, kid_subsets=5)
    data = json.loads(plain.json_path.read_text())
    assert "FD_inf" not in data["overall"]["pixels"] and "FD_inf" not in plain.overall.columns  # opt-in
    fs = extract_features(list(syn.paths), studio.encoder()).features
    assert data["overall"]["pixels"]["Vendi"] == pytest.approx(vendi_score(fs)["Vendi"])
    assert data["overall"]["pixels"]["n_vendi"] == len(fs)
    assert "Vendi" not in (data["overall"]["pixels"].get("ci95") or {})  # no bootstrap interval: Output.ci False

    import evaluators.metrics.fd_infinity as fd_infinity
    from evaluators.imagesets import load_image_set

    labelled = load_image_set(f"{world}@valid")  # other patients with labels: per-pathology rows are evaluated
    # these sets are far below FD_inf's 10 x D images (the next test): the plumbing is checked with its rule off
    monkeypatch.setattr(fd_infinity, "validity_note", lambda *a: None)
    run = studio.run_fidelity(labelled, model="fdinf-check", min_count=2, kid_subsets=5, fd_inf=True, bootstrap=3)
    data = json.loads(run.json_path.read_text())
    ov = data["overall"]["pixels"]
    assert isinstance(ov["FD_inf"], float) and isinstance(ov["FD_inf_err"], float)
    assert "FD_inf" not in ov["ci95"] and "FID" in ov["ci95"]
    rows = [r for r in data["per_pathology"] if "skipped" not in r and r["encoder"] == "pixels"]
    assert rows and all(r["FD_inf"] is not None and r["Vendi"] is not None for r in rows)
    with open(run.csv_path) as fh:
        header = next(csv.reader(fh))
    assert {"FD_inf (pixels)", "Vendi (pixels)"} <= set(header)
    for table in (run.overall, run.per_pathology):
        assert {"FD_inf", "Vendi"} <= set(table.columns)
    assert "FD_inf" in format_summary(data) and "Vendi score" in format_summary(data)
    board = studio.leaderboard("fidelity")
    row = board[board["model"] == "fdinf-check"].iloc[0]
    assert row["FD_inf (pixels)"] == pytest.approx(ov["FD_inf"]) and row["Vendi (pixels)"] == pytest.approx(ov["Vendi"])


def test_fd_inf_below_its_sample_size_is_withheld_with_the_reason_everywhere_it_would_show(studio, world):
    """1024-d pixel features and a few dozen images: FD_inf is not valid (fewer than 10 x D synthetic, D real images),
    so the JSON has None with FD_inf_note beside it, overall and on each pathology row; the CSV, the summary, the
    app's tables, chart and status line say why, and the leaderboard has no FD_inf number."""
    from chexgen_ui import figures
    from chexgen_ui.tables import fidelity_status_line
    from evaluators.fidelity import format_summary
    from evaluators.imagesets import load_image_set

    run = studio.run_fidelity(load_image_set(f"{world}@valid"), model="fdinf-withheld", min_count=2, kid_subsets=5,
                              fd_inf=True)
    data = json.loads(run.json_path.read_text())
    ov = data["overall"]["pixels"]
    assert ov["FD_inf"] is None and ov["FD_inf_err"] is None and isinstance(ov["FID"], float)
    assert ov["FD_inf_note"].startswith(f"withheld: {ov['n_synthetic']} synthetic and {ov['n_real']} real image(s) "
                                        "for 1024-d features") and ">= 10,240 synthetic" in ov["FD_inf_note"]
    rows = [r for r in data["per_pathology"] if "skipped" not in r and r["encoder"] == "pixels"]
    assert rows and all(r["FD_inf"] is None and f"withheld: {r['n_synthetic']} synthetic" in r["FD_inf_note"]
                        for r in rows)
    assert all(r["FID"] is not None for r in rows)  # the rest of the row stands
    with open(run.csv_path) as fh:
        csv_rows = list(csv.DictReader(fh))
    assert csv_rows[0]["FD_inf (pixels)"] == "" and csv_rows[0]["Notes"].startswith("FD_inf (pixels): withheld: ")
    assert sum("FD_inf (pixels): withheld" in r.get("Notes", "") for r in csv_rows[1:]) == len(rows)
    summary = format_summary(data)
    assert f"note [pixels]: FD_inf withheld: {ov['n_synthetic']} synthetic" in summary
    assert f"note: FD_inf withheld on {len(rows)} per-pathology row(s): FD_inf needs >= 10,240 synthetic" in summary
    table = run.per_pathology
    evaluated = table[(table["skipped"] == "") & (table["encoder"] == "pixels")]  # radiomics rows: FRD only
    assert evaluated["FD_inf"].isna().all() and evaluated["notes"].str.startswith("FD_inf withheld: ").all()
    assert run.overall.set_index("encoder").loc["pixels", "notes"].startswith("FD_inf withheld: ")
    titles = [a.text for a in figures.fidelity_bars(table, result=run.result).layout.annotations]
    assert any(t.startswith("FD_inf") and f"withheld on {len(rows)} row(s)" in t for t in titles)
    status = fidelity_status_line(run.result, run.run_id, "Per-pathology fidelity")
    assert f"FD_inf withheld on {len(rows)} per-pathology row(s): FD_inf needs >= 10,240 synthetic" in status
    assert "FD_inf withheld: " in status and "(pixels)." in status
    board = studio.leaderboard("fidelity")
    row = board[board["model"] == "fdinf-withheld"].iloc[0]
    assert "FD_inf (pixels)" not in board.columns or pd.isna(row["FD_inf (pixels)"])


def test_cli_fd_inf_flag(world, copies, tmp_path):
    out = tmp_path / "f.json"
    assert cli(["fidelity", "--real", f"{world}@train", "--synthetic", str(copies), "--encoder", "pixels",
                "--device", "cpu", "--out", str(out), "--no-store", "--fd-inf", "--kid-subsets", "5"]) == 0
    data = json.loads(out.read_text())
    assert "FD_inf" in data["overall"]["pixels"] and data["settings"]["include"] == ["FD_inf"]


def test_frd_is_the_radiomics_encoders_one_metric(studio, copies, tmp_path):
    pytest.importorskip("radiomics")
    from evaluators.encoders import load_encoder
    from evaluators.features import extract_features
    from evaluators.fidelity import csv_rows, run_fidelity
    from evaluators.metrics.frd import frd
    from evaluators.store import flatten_metrics

    ref = studio.reference_set().subset(np.arange(14))
    syn = studio.synthetic_from_folder(str(copies))
    res = run_fidelity(ref, syn, encoders=["pixels", "radiomics"], alignment=False, kid_subsets=5)
    rad = res["overall"]["radiomics"]
    assert "FID" not in rad and "Precision" not in rad and "Vendi" not in rad  # claimed: FRD only
    enc = load_encoder("radiomics")
    want = frd(extract_features(list(ref.paths), enc).features, extract_features(list(syn.paths), enc).features)
    assert rad["FRD"] == pytest.approx(want["FRD"])
    assert "FRD" not in res["overall"]["pixels"]
    assert csv_rows(res)[0]["FRD"] == pytest.approx(rad["FRD"])  # bare column, as CheXGenBench's FID
    assert flatten_metrics(res)["FRD (radiomics)"] == pytest.approx(rad["FRD"])
    from chexgen_ui.tables import overall_table

    table = overall_table(res)
    assert table.loc[table["encoder"] == "radiomics", "FRD"].notna().all()


def test_frd_joins_the_default_suite_off_the_demo_world_only(studio, nih_sample):
    pytest.importorskip("radiomics")
    from evaluators.fidelity import RealSide, _default_frd
    from evaluators.imagesets import load_image_set

    assert not _default_frd(RealSide(load_image_set("demo@train")))  # phantoms' radiomics say nothing
    assert _default_frd(RealSide(load_image_set(str(nih_sample))))
    assert _default_frd(RealSide(studio.reference_set()))  # this test world has no demo-world marker


def test_radiomics_cannot_be_an_index_encoder(studio, tmp_path):
    from evaluators.errors import InputError
    from evaluators.index import build_index

    class Fake:
        name = "radiomics"

    with pytest.raises(InputError, match="FRD only"):
        build_index(studio.reference_set(), Fake(), tmp_path / "idx")


def test_c_t_and_authpct_reach_privacy_json_summary_batch_line_and_leaderboard(studio, many_copies):
    from chexgen_ui.tables import privacy_verdict_line
    from evaluators.privacy.suite import format_summary

    run = studio.run_privacy(studio.synthetic_from_folder(str(many_copies)), model="copy-check")
    data = json.loads(run.json_path.read_text())
    summ, sect = data["summary"], data["data_copying"]
    assert summ["AuthPct"] == 0.0  # exact copies of training images are never authentic
    assert sect["C_T"]["available"], sect["C_T"].get("reason")
    assert summ["C_T"] < 0  # closer to the training images than held-out real images are: copying
    assert "held-out" in sect["heldout"] or "splits" in sect["heldout"]
    assert "AuthPct" in format_summary(data) and "AuthPct" in privacy_verdict_line(data)
    assert list(studio.index().dir.glob("authpct-radii-*.npy"))  # AuthPct's N x N part, once per index
    again = json.loads(studio.run_privacy(studio.synthetic_from_folder(str(many_copies))).json_path.read_text())
    assert again["summary"]["AuthPct"] == summ["AuthPct"] and again["summary"]["C_T"] == summ["C_T"]
    board = studio.leaderboard("privacy")
    row = board[board["model"] == "copy-check"].iloc[0]
    assert row["AuthPct"] == 0.0 and row["C_T"] == pytest.approx(summ["C_T"])


def test_intra_prompt_ms_ssim_reaches_json_csv_summary_batch_line_and_leaderboard(studio, tmp_path):
    """RoentGen's diversity: several seeds of one prompt; unavailable, with the reason, when no prompt repeats."""
    import pandas as pd

    from chexgen_ui.tables import fidelity_note_line
    from evaluators.fidelity import format_summary
    from evaluators.metrics.diversity import intra_prompt_ms_ssim

    folder = tmp_path / "seeds"
    folder.mkdir()
    rows, groups = [], {}
    for k, prompt in enumerate(["Small left pleural effusion.", "Cardiomegaly.", "No acute findings."]):
        gen = studio.generate(COPIER, prompt, n=4, seed=10 * k)
        for j, img in enumerate(gen.images):
            name = f"p{k}_s{j}.png"
            Image.fromarray(display.to_uint8(img)).save(folder / name)
            rows.append({"path": name, "prompt": prompt})
            groups.setdefault(prompt, []).append(np.asarray(Image.open(folder / name)))
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    run = studio.run_fidelity(studio.synthetic_from_folder(str(folder)), model="seeds", min_count=2, kid_subsets=5)
    ms = json.loads(run.json_path.read_text())["Intra-prompt MS-SSIM"]
    assert ms["available"] and ms["n_prompts"] == 3
    assert ms["MS_SSIM"] == pytest.approx(intra_prompt_ms_ssim(groups)["MS_SSIM"], abs=1e-6)
    with open(run.csv_path) as fh:
        first = next(csv.DictReader(fh))
    assert float(first["Intra-prompt MS-SSIM"]) == pytest.approx(ms["MS_SSIM"])
    assert "Intra-prompt MS-SSIM" in format_summary(run.result) and "lower is more diverse" in fidelity_note_line(run.result)
    board = studio.leaderboard("fidelity")
    assert board.loc[board["model"] == "seeds", "Intra-prompt MS-SSIM"].iloc[0] == pytest.approx(ms["MS_SSIM"])


def test_intra_prompt_ms_ssim_says_why_when_no_prompt_repeats(studio, copies):
    from evaluators.fidelity import intra_prompt_diversity

    out = intra_prompt_diversity(studio.synthetic_from_folder(str(copies)))  # a folder: no prompts at all
    assert out == {"available": False, "reason": "no prompt has 2 or more images; generate several seeds per prompt"}
