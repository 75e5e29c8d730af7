"""Report-generation utility: scores against their libraries and known values, the registry, the captioner
learning a toy world, resume after a kill, three settings side by side, the CLI, and the VLM/CheXbert loaders
on tiny random models of the real architectures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from evaluators.errors import InputError, UnavailableError
from evaluators.pathologies import INDEX, PATHOLOGIES
from evaluators.reportgen import registry, scores
from evaluators.reportgen.text import Vocab, detokenize, normalise, tokenize

# ---------------------------------------------------------------- a toy world: findings are blobs, reports say so
FINDINGS = {  # label -> (blob centre, sentence)
    "Cardiomegaly": ((0.6, 0.5), "Heart size is enlarged."),
    "Pleural Effusion": ((0.8, 0.2), "Small left pleural effusion."),
    "Pneumothorax": ((0.2, 0.8), "Right pneumothorax."),
}
NORMAL = "No acute cardiopulmonary process."


class PairSet:
    """The ImageSet interface (table with prompt/patient/split, labels, image(i), paths)."""

    def __init__(self, images, labels, table):
        self.images, self.labels, self.table = images, labels, table
        self.paths = [f"img{i}.png" for i in range(len(images))]

    def __len__(self):
        return len(self.images)

    def image(self, i):
        return self.images[i]


def toy_set(n: int, seed: int, split: str = "train", first_patient: int = 0, size: int = 32) -> PairSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = np.empty((n, size, size), np.float32)
    labels = np.full((n, len(PATHOLOGIES)), np.nan, np.float32)
    reports = []
    for i in range(n):
        img = 0.3 + 0.05 * rng.standard_normal((size, size))
        said = []
        for name, ((cy, cx), sentence) in FINDINGS.items():
            if rng.random() < 0.35:
                labels[i, INDEX[name]] = 1
                img += 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
                said.append(sentence)
        labels[i, INDEX["No Finding"]] = float(not said)
        reports.append(" ".join(said) if said else NORMAL)
        images[i] = np.clip(img, 0, 1)
    table = pd.DataFrame({"prompt": reports, "patient_id": [str(first_patient + i) for i in range(n)],
                          "split": split})
    return PairSet(images, labels, table)


TINY_ARCH = {"encoder": "resnet18", "d_model": 64, "layers": 1, "heads": 2, "ff": 128, "max_len": 24,
             "dropout": 0.0}


# ---------------------------------------------------------------- text and scores


def test_tokenize_detokenize_and_vocab_round_trip():
    text = "PA view of the chest. Plate-like atelectasis; small left effusion."
    assert tokenize(text) == ["pa", "view", "of", "the", "chest", ".", "plate-like", "atelectasis", ";", "small",
                              "left", "effusion", "."]
    assert normalise(detokenize(tokenize(text))) == normalise(text)
    vocab = Vocab.build([text])
    assert normalise(vocab.decode(vocab.encode(text, 64))) == normalise(text)
    ids = vocab.encode("Large right effusion.", 64)
    assert ids.count(vocab.stoi["<unk>"]) == 2  # 'large' and 'right' were in no training report
    assert vocab.decode(ids) == "Effusion."  # <unk> is not written out
    assert len(vocab.encode(text, 6)) == 6 and vocab.encode(text, 6)[-1] == vocab.stoi["<eos>"]


def test_clinical_f1_matches_sklearn_and_lists_labels_without_positives():
    rng = np.random.default_rng(0)
    ref = rng.choice([1.0, 0.0, -1.0, np.nan], size=(60, 14), p=[0.3, 0.3, 0.1, 0.3]).astype(np.float32)
    gen = rng.choice([1.0, 0.0, -1.0, np.nan], size=(60, 14), p=[0.3, 0.3, 0.1, 0.3]).astype(np.float32)
    ref[:, INDEX["Fracture"]] = np.nan  # never positive in the references -> excluded from macro
    out = scores.clinical_f1(gen, ref)
    r, g = (ref == 1).astype(int), (gen == 1).astype(int)  # positive counts, everything else does not
    cols = [j for j in range(14) if j != INDEX["Fracture"]]
    assert out["f1_macro"] == pytest.approx(f1_score(r[:, cols], g[:, cols], average="macro", zero_division=0))
    assert out["f1_micro"] == pytest.approx(f1_score(r, g, average="micro", zero_division=0))
    assert "Fracture" in out["excluded"] and "Fracture" not in out["per_label_f1"]
    assert scores.clinical_f1(ref, ref)["f1_macro"] == pytest.approx(1.0)


def test_text_scores_known_values():
    same = ["Small left pleural effusion.", "No acute cardiopulmonary process."]
    assert scores.bleu(same, same) == {"bleu1": pytest.approx(1.0), "bleu4": pytest.approx(1.0)}
    assert scores.rouge_l(same, same) == pytest.approx(1.0)
    # LCS of "a b c d" and "a c d" is 3: P = 1, R = 3/4, F = 6/7
    assert scores.rouge_l(["a c d"], ["a b c d"]) == pytest.approx(6 / 7)
    assert scores.bleu(["x y z w"], ["a b c d"])["bleu4"] == pytest.approx(0.0)
    cp = scores.copy_rate(["Small left pleural effusion .", "Something new."], ["small LEFT pleural effusion."])
    assert cp == {"copy_rate": 0.5, "n_copies": 1, "distinct_reports": 2}


def test_score_reports_names_what_is_unavailable():
    out = scores.score_reports(["Heart size is enlarged."], ["Heart size is enlarged."], with_meteor=False,
                               chexbert_reason="no weights")
    assert out["clinical"]["f1_macro"] == pytest.approx(1.0)
    assert out["clinical_chexbert"] == {"unavailable": "no weights"}
    assert out["meteor"] is None and out["meteor_unavailable"]
    assert out["bertscore"] is None and "weights" in out["bertscore_unavailable"]


@pytest.mark.slow
def test_meteor_is_pycocoevalcaps_and_orders_reports():
    ok, why = scores.meteor_availability()
    if not ok:
        pytest.skip(why)
    from pycocoevalcap.meteor.meteor import Meteor

    ref = ["small left pleural effusion .", "heart size is enlarged ."]
    gen = ["small right pleural effusion .", "no acute process ."]
    m = Meteor()
    expected, _ = m.compute_score({i: [r] for i, r in enumerate(ref)}, {i: [g] for i, g in enumerate(gen)})
    assert scores.meteor(gen, ref) == pytest.approx(expected)
    assert scores.meteor(ref, ref) > 0.99 > scores.meteor(gen, ref)


# ---------------------------------------------------------------- registry


def test_registry_builtins_overrides_and_errors(tmp_path, monkeypatch):
    entries = registry.load_entries()
    assert entries["captioner"].kind == "captioner" and entries["llava-rad"].kind == "llava"
    assert registry.availability(entries["captioner"])[0]
    ok, why = registry.availability(entries["llava-rad"], "cpu")
    assert not ok and "not on this machine" in why
    f = tmp_path / "mine.toml"
    f.write_text('[[model]]\nname = "captioner"\nepochs = 3\n\n[[model]]\nname = "cap-small"\nkind = "captioner"\n'
                 'd_model = 64\n')
    monkeypatch.setenv(registry.ENV, str(f))
    entries = registry.load_entries()
    assert entries["captioner"].get("epochs") == 3 and entries["captioner"].get("d_model") == 256  # merged
    assert registry.get_entry("cap-small").get("d_model") == 64
    bad = tmp_path / "bad.toml"
    bad.write_text('[[model]]\nname = "x"\nkind = "captioner"\nlayerz = 2\n')
    with pytest.raises(InputError, match="layerz"):
        registry.load_entries([bad])
    with pytest.raises(InputError, match="Unknown report model"):
        registry.get_entry("nope")


# ---------------------------------------------------------------- the captioner


def _pairs(n, seed, split="train", first_patient=0):
    from evaluators.reportgen.train import load_pairs

    return load_pairs(toy_set(n, seed, split, first_patient), 32, name=f"toy{seed}", show_bar=False)


TRAIN_KW = dict(architecture=TINY_ARCH, image_size=32, batch_size=16, lr=3e-3, seed=0, device="cpu",
                show_bars=False, patience=2)


@pytest.mark.slow
def test_captioner_learns_the_toy_world_and_beats_the_most_frequent_report(tmp_path):
    from evaluators.reportgen.run import most_frequent_report
    from evaluators.reportgen.train import generate, load_model, train_captioner

    train, test = _pairs(96, 0), _pairs(48, 1, "test", 1000)
    res = train_captioner([train], epochs=8, out_dir=tmp_path / "m", **TRAIN_KW)
    net, vocab, config = load_model(res.model_dir)
    generated = generate(net, test.data.images, vocab, device="cpu")
    ours = scores.score_reports(generated, test.reports.tolist(), with_meteor=False)["clinical"]["f1_macro"]
    common = most_frequent_report(train.reports.tolist())
    base = scores.score_reports([common] * len(test), test.reports.tolist(), with_meteor=False)
    assert ours > base["clinical"]["f1_macro"] + 0.3, (ours, base["clinical"]["f1_macro"], generated[:4])
    assert config["best_epoch"] == res.best_epoch and res.monitor == "val_f1_macro"


def test_resume_after_kill_gives_the_same_reports(tmp_path):
    from evaluators.reportgen.train import generate, load_model, train_captioner

    def reports(model_dir, images):
        net, vocab, _ = load_model(model_dir)
        return generate(net, images, vocab, device="cpu")

    train, test = _pairs(32, 2), _pairs(12, 3, "test", 1000)
    kw = {**TRAIN_KW, "patience": 5}
    whole = train_captioner([train], epochs=2, out_dir=tmp_path / "whole", **kw)

    def kill_after_epoch_1(event):
        if event.get("stage") == "epoch" and event["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_captioner([train], epochs=2, out_dir=tmp_path / "killed", progress=kill_after_epoch_1, **kw)
    resumed = train_captioner([train], epochs=2, out_dir=tmp_path / "killed", **kw)
    assert resumed.resumed_from_epoch == 1 and whole.resumed_from_epoch == 0
    assert resumed.history == whole.history
    assert reports(whole.model_dir, test.data.images) == reports(resumed.model_dir, test.data.images)
    with pytest.raises(InputError, match="different run"):
        train_captioner([train], epochs=2, out_dir=tmp_path / "killed", **{**kw, "seed": 5})


def _write_set(folder, s: PairSet, *, with_labels: bool = True) -> str:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(len(s)):
        Image.fromarray((s.images[i] * 255).astype(np.uint8)).save(folder / f"{i}.png")
        row = {"path": f"{i}.png", **s.table.iloc[i].to_dict()}
        if with_labels:
            row |= {p: s.labels[i, j] for j, p in enumerate(PATHOLOGIES)}
        rows.append(row)
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    return str(folder / "metadata.csv")


def test_cli_puts_real_synthetic_mixed_and_the_baseline_side_by_side(tmp_path, capsys):
    from evaluators.cli import main
    from evaluators.store import ResultsStore

    real = _write_set(tmp_path / "real", toy_set(40, 4))
    test = _write_set(tmp_path / "test", toy_set(16, 5, "test", 1000))
    syn_set = toy_set(40, 6, "")
    syn_set.table = syn_set.table[["prompt"]]  # a generated set: images and their prompts only
    syn = _write_set(tmp_path / "syn", syn_set, with_labels=False)
    models = tmp_path / "tiny.toml"
    models.write_text('[[model]]\nname = "cap-tiny"\nkind = "captioner"\n'
                      + "".join(f"{k} = {json.dumps(v)}\n" for k, v in TINY_ARCH.items())
                      + "image_size = 32\nepochs = 1\nbatch_size = 16\nlr = 3e-3\n")
    out = tmp_path / "r.json"
    rc = main(["report-utility", "--train", real, "--synthetic", syn, "--test", test, "--model", "cap-tiny",
               "--models-file", str(models), "--no-meteor", "--out", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert list(report["settings"]) == ["real", "synthetic", "real+synthetic", "most frequent report"]
    assert report["settings"]["real+synthetic"]["n_train"] > report["settings"]["real"]["n_train"]
    row = {r["metric"]: r for r in report["table"]}
    assert set(row["clinical F1 macro"]) == {"metric", "real", "synthetic", "real+synthetic", "most frequent report"}
    assert "unavailable" in report["settings"]["real"]["scores"]["clinical_chexbert"]
    assert row["copies of a training report"]["most frequent report"] == 1.0
    assert pd.read_csv(report["settings"]["real"]["generated_csv"]).shape == (16, 3)
    stored = ResultsStore().get(report["run_id"])
    assert stored["kind"] == "report-utility" and "clinical F1 macro (real)" in stored["metrics"]
    printed = capsys.readouterr().out
    assert "| clinical F1 macro |" in printed
    # clinical F1 micro with its interval, and each setting paired with real on the same test resamples
    assert set(report["paired"]) == {"synthetic", "real+synthetic", "most frequent report"}
    for name, d in report["paired"].items():
        micro = report["settings"][name]["scores"]["clinical"]
        assert d["f1_micro_diff"] == pytest.approx(micro["f1_micro"] - report["settings"]["real"]["scores"]["clinical"]
                                                   ["f1_micro"])
        assert d["ci95"][0] <= d["ci95"][1] and micro["f1_micro_ci95"][0] <= micro["f1_micro_ci95"][1]
        assert row["clinical F1 micro minus real (paired 95% CI low)"][name] == d["ci95"][0]
    assert "_f1_micro_replicates" not in out.read_text() and "most frequent report minus real" in printed


def test_a_set_without_reports_is_refused_with_the_fix(tmp_path):
    from evaluators.reportgen.train import load_pairs

    s = toy_set(4, 0)
    s.table = s.table.assign(prompt="")
    with pytest.raises(InputError, match="report"):
        load_pairs(s, 32, name="empty", show_bar=False)


# ---------------------------------------------------------------- LLaVA-style VLM and CheXbert, tiny random models


def _llava_entry_file(tmp_path, folder):
    f = tmp_path / "llava.toml"
    f.write_text(f'[[model]]\nname = "llava-tiny"\nkind = "llava"\nweights = "{folder}"\ndevice = "cpu"\n'
                 'dtype = "fp32"\nimage_size = 32\nbatch_size = 2\nepochs = 2\nlr = 1e-3\nmax_new_tokens = 4\n'
                 'prompt = "USER: <image> write the report ASSISTANT:"\n'
                 'lora = { r = 4, alpha = 8, dropout = 0.0, target_modules = ["q_proj", "v_proj"] }\n')
    return f


def test_llava_entry_loads_lora_finetunes_resumes_and_generates_on_cpu(tmp_path):
    from evaluators.reportgen.vlm import finetune_llava, generate_llava, load_finetuned
    from tests.tiny_vlm import make_tiny_llava

    folder = make_tiny_llava(tmp_path / "tiny-llava")
    entry = registry.get_entry("llava-tiny", [_llava_entry_file(tmp_path, folder)])
    assert registry.availability(entry, "cpu")[0]
    images = (np.random.default_rng(0).random((4, 32, 32)) * 255).astype(np.uint8)
    reports = ["no effusion .", "heart size is enlarged .", "small left pleural effusion .", "normal ."]
    kw = dict(out_dir=tmp_path / "ft", device="cpu", seed=0, max_steps=1)
    first = finetune_llava(entry, images, reports, images[:2], reports[:2], epochs=1, **kw)
    assert first["epochs_run"] == 1 and np.isfinite(first["history"][0]["val_loss"])
    # a second call with the same settings resumes from the finished checkpoint and trains nothing new
    again = finetune_llava(entry, images, reports, images[:2], reports[:2], epochs=1, **kw)
    assert again["resumed_from_epoch"] == 1 and again["history"] == first["history"]
    model, processor = load_finetuned(entry, first["model_dir"], "cpu")
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora and all("language_model" in n for n in lora)  # the vision tower is left alone
    out = generate_llava(model, processor, images[:2], prompt=str(entry.get("prompt")), max_new_tokens=4,
                         device="cpu")
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_llava_needs_a_gpu_and_its_weights(tmp_path):
    entry = registry.get_entry("llava-rad")
    with pytest.raises(UnavailableError, match="not on this machine"):
        from evaluators.reportgen.vlm import load_llava

        load_llava(entry, "cpu")
    from tests.tiny_vlm import make_tiny_llava

    folder = make_tiny_llava(tmp_path / "tiny")
    f = tmp_path / "gpu.toml"
    f.write_text(f'[[model]]\nname = "llava-rad"\nweights = "{folder}"\n')
    ok, why = registry.availability(registry.get_entry("llava-rad", [f]), "cpu")
    assert not ok and "GPU" in why


def test_chexbert_loads_the_published_layout_and_maps_heads_to_labels(tmp_path, monkeypatch):
    from evaluators.reportgen import chexbert
    from tests.tiny_vlm import make_tiny_chexbert

    monkeypatch.delenv(chexbert.WEIGHTS_ENV, raising=False)
    model, why = chexbert.try_load(None)
    assert model is None and chexbert.WEIGHTS_ENV in why
    # head 1 (Cardiomegaly) always 'positive', head 9 (Pleural Effusion) 'uncertain', head 13 (No Finding) 'blank'
    path = make_tiny_chexbert(tmp_path, force={1: 1, 9: 3, 13: 0, 0: 2})
    monkeypatch.setenv(chexbert.WEIGHTS_ENV, str(path))
    model, why = chexbert.try_load(None)
    assert model is not None, why
    labels = model.label(["heart is enlarged .", "no effusion ."])
    assert labels.shape == (2, 14)
    assert (labels[:, INDEX["Cardiomegaly"]] == 1).all() and (labels[:, INDEX["Pleural Effusion"]] == -1).all()
    assert np.isnan(labels[:, INDEX["No Finding"]]).all() and (labels[:, INDEX["Enlarged Cardiomediastinum"]] == 0).all()
    out = scores.score_reports(["heart is enlarged ."], ["heart is enlarged ."], chexbert=model, with_meteor=False)
    assert out["clinical_chexbert"]["f1_macro"] == pytest.approx(1.0)


def test_report_utility_runs_a_llava_entry_end_to_end_on_cpu(tmp_path):
    from evaluators.reportgen.run import run_report_utility
    from tests.tiny_vlm import make_tiny_llava

    models = _llava_entry_file(tmp_path, make_tiny_llava(tmp_path / "tiny-llava"))
    sets = {"train": toy_set(8, 7), "test": toy_set(4, 8, "test", 1000)}
    report = run_report_utility({"real": ["train"]}, "test", model="llava-tiny", models_files=[str(models)],
                                epochs=1, max_steps=1, device="cpu", work_dir=tmp_path / "work", meteor=False,
                                show_bars=False, loader=sets.__getitem__)
    real = report["settings"]["real"]
    assert report["model_kind"] == "llava" and real["epochs_run"] == 1 and real["scores"]["n"] == 4
    assert (tmp_path / "work" / "real" / "adapter" / "adapter_config.json").is_file()
    assert set(report["settings"]) == {"real", "most frequent report"}
