"""Patient re-identification: the published checkpoint layout loads, scores match, training learns identity."""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from evaluators.cli import privacy as privacy_cli
from evaluators.errors import InputError, UnavailableError
from evaluators.privacy import reid
from evaluators.privacy.reid import (
    CHEXGENBENCH_CHECKPOINT,
    CHEXGENBENCH_REPO,
    ReIDModel,
    embed,
    load_reid,
    reid_scores,
    score_matrix,
    score_pairs,
    train_reid,
)


class PublishedSiamese(nn.Module):
    """CheXGenBench's re-ID layout, written from its description (torchvision ResNet-50, fc -> 128, fc_end)."""

    def __init__(self):
        super().__init__()
        from torchvision import models

        self.model = models.resnet50(weights=None)
        self.model.fc = nn.Linear(2048, 128)
        self.fc_end = nn.Linear(128, 1)

    def forward(self, x1, x2):
        f1, f2 = torch.sigmoid(self.model(x1)), torch.sigmoid(self.model(x2))
        return torch.sigmoid(self.fc_end(torch.abs(f1 - f2))).squeeze(-1)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    torch.manual_seed(0)
    net = PublishedSiamese().eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode loading is really tested
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        net.fc_end.weight.mul_(20)  # spread the scores away from 0.5
    path = tmp_path_factory.mktemp("reid") / CHEXGENBENCH_CHECKPOINT
    torch.save(net.state_dict(), path)  # a plain state dict, as CheXGenBench's checkpoint
    return net, path


@pytest.fixture
def one_thread():
    """Training a tiny CNN is ~10x faster on one thread when the 2 cores are shared."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _xray_like(rng: np.random.Generator, n: int, size: int) -> list[np.ndarray]:
    return [np.clip(rng.normal(0.5, 0.2, (size, size)), 0, 1).astype(np.float32) for _ in range(n)]


def test_published_key_names_and_shapes(published):
    net, _ = published
    ours = ReIDModel("resnet50").state_dict()
    theirs = net.state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
    assert ours["model.fc.weight"].shape == (128, 2048)
    assert ours["fc_end.weight"].shape == (1, 128)
    assert "model.conv1.weight" in ours and "model.layer4.2.bn3.num_batches_tracked" in ours


def test_published_checkpoint_round_trip(published, one_thread):
    net, path = published
    model = load_reid(path, device="cpu")
    assert model.backbone_name == "resnet50" and model.image_size == 224 and not model.training
    rng = np.random.default_rng(0)
    a, b = _xray_like(rng, 2, 224), _xray_like(rng, 2, 224)
    ours = reid_scores(model, a, b)
    xa = torch.from_numpy(np.stack(a))[:, None].expand(-1, 3, -1, -1)
    xb = torch.from_numpy(np.stack(b))[:, None].expand(-1, 3, -1, -1)
    with torch.no_grad():
        theirs = net(xa, xb).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert abs(ours[0] - ours[1]) > 1e-3  # the comparison is not between constants


def test_chexgenbench_name_lookup(published, monkeypatch, tmp_path):
    _, path = published
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty HF cache
    with pytest.raises(UnavailableError) as err:
        load_reid("chexgenbench")
    assert CHEXGENBENCH_REPO in str(err.value) and CHEXGENBENCH_CHECKPOINT in str(err.value)
    weights = tmp_path / "home" / "weights"
    weights.mkdir(parents=True)
    (weights / CHEXGENBENCH_CHECKPOINT).write_bytes(path.read_bytes())
    assert load_reid("chexgenbench", device="cpu").backbone_name == "resnet50"


def test_dataparallel_checkpoint_loads(published, tmp_path):
    net, _ = published
    path = tmp_path / "dp.pth"
    torch.save({"epoch": 11, "state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = load_reid(path, device="cpu")
    for k, v in net.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)


def test_pickle_with_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    state = ReIDModel("tiny").state_dict()
    torch.save({"state_dict": state, "hook": Payload()}, path)
    with pytest.raises(InputError, match="safetensors"):
        load_reid(path)
    assert not marker.exists()


def test_wrong_checkpoints_are_input_errors(tmp_path):
    sd = ReIDModel("resnet18").state_dict()
    sd.pop("model.layer4.1.bn2.weight")
    path = tmp_path / "partial.pth"
    torch.save(sd, path)
    with pytest.raises(InputError, match="missing"):
        load_reid(path)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(InputError, match="not a siamese re-ID checkpoint"):
        load_reid(other)
    with pytest.raises(InputError, match="neither a file nor a known name"):
        load_reid(tmp_path / "nope.pth")
    shapes = ReIDModel("tiny").state_dict()
    shapes["fc_end.weight"] = torch.zeros(1, 128)
    shapes["model.fc.weight"] = torch.zeros(128, 100)  # the pooled map has 128 * 16 inputs, not 100
    bad_shape = tmp_path / "shape.pth"
    torch.save(shapes, bad_shape)
    with pytest.raises(InputError, match="does not match"):
        load_reid(bad_shape)


def test_demo_model_lookup(tmp_path, monkeypatch):
    import evaluators.settings as settings

    monkeypatch.setattr(settings, "assets_dir", lambda: tmp_path / "assets")
    monkeypatch.setenv("CHEXGEN_HOME", str(tmp_path / "home"))
    with pytest.raises(UnavailableError, match="train-reid"):
        load_reid("demo")
    from evaluators.checkpoints import save_state_dict

    (tmp_path / "assets").mkdir()
    save_state_dict(ReIDModel("tiny", width=8).state_dict(), tmp_path / "assets" / "demo_reid.safetensors")
    (tmp_path / "assets" / "demo_reid.json").write_text(json.dumps({"image_size": 40}))
    model = load_reid("demo", device="cpu")
    assert model.backbone_name == "tiny" and model.width == 8 and model.image_size == 40


def test_embed_once_score_many_matches_pairwise():
    torch.manual_seed(1)
    model = ReIDModel("tiny", image_size=32).eval()
    with torch.no_grad():
        model.fc_end.weight.mul_(30)
    rng = np.random.default_rng(1)
    real, synth = _xray_like(rng, 2, 40), _xray_like(rng, 5, 48)  # sizes differ: each is resized
    fr, fs = embed(model, real), embed(model, synth, batch_size=2)
    assert fr.shape == (2, 128) and fs.shape == (5, 128) and fr.dtype == np.float32
    assert fs.min() > 0 and fs.max() < 1  # sigmoid features
    mat = score_matrix(model, fr, fs)
    assert mat.shape == (2, 5)
    for i in range(2):
        np.testing.assert_allclose(mat[i], reid_scores(model, [real[i]] * 5, synth), rtol=1e-5)
        np.testing.assert_allclose(mat[i], score_pairs(model, fr[i], fs), rtol=1e-6)  # one row broadcasts
    np.testing.assert_allclose(
        score_pairs(model, fs, fs[::-1]), score_pairs(model, fs[::-1], fs)
    )  # symmetric
    uint8 = [np.round(im * 255).astype(np.uint8) for im in synth]
    np.testing.assert_allclose(embed(model, uint8), fs, atol=0.02)  # uint8 input is scaled, not raw
    with pytest.raises(InputError, match="equal lists"):
        reid_scores(model, real, synth)
    with pytest.raises(InputError, match="re-ID features"):
        score_pairs(model, np.zeros((2, 64)), fs[:2])


# --------------------------------------------------------------------------------------------------
# Training on tiny synthetic patients


def _field(rng: np.random.Generator, size: int, n_blobs: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    f = np.zeros((size, size), np.float32)
    for _ in range(n_blobs):
        cy, cx = rng.uniform(0.15, 0.85, 2)
        s, a = rng.uniform(0.06, 0.18), rng.uniform(-1, 1)
        f += a * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return f


class SynthPatients:
    """Patients = a smooth 'anatomy' each; a study = that anatomy shifted a little, with a study-specific
    blob (a finding), new contrast and noise. Only the anatomy identifies the patient."""

    def __init__(self, patients: int = 40, studies: int = 4, size: int = 48, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.size = size
        self.anatomy = [_field(rng, size, 6) for _ in range(patients)]
        rows = [
            {"patient_id": f"p{p}", "study_id": f"p{p}s{s}", "seed": int(rng.integers(1 << 30))}
            for p in range(patients)
            for s in range(studies)
        ]
        self.table = pd.DataFrame(rows)
        self.name = f"synth-{patients}x{studies}"

    def __len__(self) -> int:
        return len(self.table)

    def image(self, i: int) -> np.ndarray:
        rng = np.random.default_rng(int(self.table["seed"].iat[i]))
        a = self.anatomy[int(self.table["patient_id"].iat[i][1:])]
        a = np.roll(a, tuple(rng.integers(-2, 3, 2)), (0, 1)) + 0.3 * _field(rng, self.size, 2)
        img = 0.5 + 0.25 * a * rng.uniform(0.8, 1.2) + rng.normal(0, 0.03, a.shape)
        return np.clip(img, 0, 1).astype(np.float32)


def test_scoring_graph_matches_the_network_and_follows_its_weights():
    """embed runs a folded copy of the backbone: same features, rebuilt after an optimiser step, not saved."""
    from evaluators.privacy.reid import preprocess

    torch.manual_seed(2)
    model = ReIDModel("tiny", image_size=32)
    for m in model.modules():  # trained-looking batch norm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    model.eval()
    keys = set(model.state_dict())
    imgs = _xray_like(np.random.default_rng(2), 6, 40)
    x = preprocess(imgs, 32, model.in_channels)

    def plain() -> np.ndarray:
        with torch.no_grad():
            return model.forward_once(x).numpy()

    np.testing.assert_allclose(embed(model, imgs), plain(), atol=1e-6)
    graph = model.__dict__["_inference"][1]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in graph.modules())
    embed(model, imgs)
    assert model.__dict__["_inference"][1] is graph  # unchanged weights: the graph is reused
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model.forward_once(x).sum()
    opt.zero_grad(), loss.backward(), opt.step()
    model.eval()
    before = embed(model, imgs)
    assert model.__dict__["_inference"][1] is not graph  # the step changed the weights: rebuilt
    np.testing.assert_allclose(before, plain(), atol=1e-6)
    assert set(model.state_dict()) == keys  # the graph is not part of the checkpoint


def test_plain_forward_switch_scores_with_the_network_as_loaded(monkeypatch):
    monkeypatch.setenv("CHEXGEN_PLAIN_FORWARD", "1")
    torch.manual_seed(3)
    model = ReIDModel("tiny", image_size=32).eval()
    imgs = _xray_like(np.random.default_rng(3), 3, 40)
    from evaluators.privacy.reid import preprocess

    with torch.no_grad():
        want = model.forward_once(preprocess(imgs, 32, model.in_channels)).numpy()
    np.testing.assert_array_equal(embed(model, imgs), want)
    assert "_inference" not in model.__dict__


def test_sample_pairs_are_balanced_and_patient_disjoint():
    ds = SynthPatients(patients=12, studies=3, size=8)
    pids = ds.table["patient_id"].to_numpy()
    sids = ds.table["study_id"].to_numpy()
    train, val = reid.split_patients(pids, 0.25, seed=0)
    assert not set(pids[train]) & set(pids[val])
    assert len(set(pids[val])) == 3
    ia, ib, y = reid.sample_pairs(pids, sids, train, 200, np.random.default_rng(0))
    assert y.sum() == 100
    assert np.all((pids[ia] == pids[ib]) == (y == 1))
    assert np.all(sids[ia][y == 1] != sids[ib][y == 1])  # positives are two different studies
    assert set(ia) | set(ib) <= set(train)
    lonely = pd.DataFrame({"patient_id": ["a", "b", "c", "d"], "study_id": ["1", "2", "3", "4"]})
    with pytest.raises(InputError, match="two studies"):
        reid.sample_pairs(lonely.patient_id.to_numpy(), lonely.study_id.to_numpy(), np.arange(4), 10,
                          np.random.default_rng(0))  # fmt: skip


def test_split_keeps_multi_study_patients_on_both_sides():
    pids = np.array([f"m{i}" for i in range(6) for _ in range(2)] + [f"s{i}" for i in range(10)])
    for seed in range(5):
        train, val = reid.split_patients(pids, 0.2, seed=seed)
        assert not set(pids[train]) & set(pids[val])
        for side in (train, val):
            assert any(p.startswith("m") for p in pids[side]) and any(p.startswith("s") for p in pids[side])
        reid.sample_pairs(pids, None, val, 20, np.random.default_rng(0))  # both pair kinds exist in val
    with pytest.raises(InputError, match="two or more studies"):
        reid.split_patients(np.array(["a", "a", "b", "c", "d"]), 0.2, seed=0)


def test_training_learns_identity_on_held_out_patients(tmp_path, one_thread):
    ds = SynthPatients(patients=40, studies=4, size=48)
    out = tmp_path / "reid.safetensors"
    calls = []
    result = train_reid(ds, out=out, backbone="tiny", epochs=3, image_size=48, pairs_per_epoch=512, seed=0,
                        device="cpu", progress=lambda d, t, s: calls.append((d, t)))  # fmt: skip
    assert result["val_auc"] > 0.8, result["history"]
    assert result["val_patients"] == 8 and result["train_patients"] == 32
    assert calls[-1][0] == calls[-1][1] == 3 * 16
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["architecture"] == "siamese-tiny" and side["image_size"] == 48
    assert side["val_auc"] == result["val_auc"] and side["train_set"] == ds.name
    assert not (tmp_path / "reid.safetensors.resume.pt").exists()

    # The saved model reloads (safetensors + sidecar) and separates new patients' studies.
    model = load_reid(out, device="cpu")
    assert model.image_size == 48
    fresh = SynthPatients(patients=10, studies=2, size=48, seed=99)
    feats = embed(model, [fresh.image(i) for i in range(len(fresh))])
    same = score_pairs(model, feats[0::2], feats[1::2])
    diff = score_pairs(model, feats[0::2], np.roll(feats[1::2], 1, axis=0))
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(np.r_[np.ones(10), np.zeros(10)], np.r_[same, diff])
    assert auc > 0.8, (same, diff)


def test_training_resumes_after_interruption(tmp_path, one_thread):
    ds = SynthPatients(patients=8, studies=2, size=16)
    out = tmp_path / "r.safetensors"
    kwargs = dict(out=out, backbone="tiny", epochs=2, image_size=16, pairs_per_epoch=64, batch_size=32, seed=3,
                  device="cpu", width=8)  # fmt: skip

    def stop_in_epoch_2(done, total, desc):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_reid(ds, progress=stop_in_epoch_2, **kwargs)
    assert (tmp_path / "r.safetensors.resume.pt").is_file() and not out.exists()
    (tmp_path / "junk.safetensors.resume.pt").write_bytes(b"damaged")
    assert train_reid(ds, **{**kwargs, "out": tmp_path / "junk.safetensors"})["resumed_from_epoch"] == 0
    resumed = train_reid(ds, **kwargs)
    assert resumed["resumed_from_epoch"] == 1 and len(resumed["history"]) == 2
    straight = train_reid(ds, **{**kwargs, "out": tmp_path / "s.safetensors"})
    assert straight["resumed_from_epoch"] == 0
    assert resumed["history"][-1]["val_auc"] == pytest.approx(straight["history"][-1]["val_auc"], abs=1e-6)


def test_train_reid_input_errors(tmp_path):
    ds = SynthPatients(patients=3, studies=2, size=8)
    with pytest.raises(InputError, match="at least 4 patients"):
        train_reid(ds, out=tmp_path / "x.safetensors", device="cpu")
    with pytest.raises(InputError, match="backbone"):
        train_reid(SynthPatients(patients=6, size=8), out=tmp_path / "x.safetensors", backbone="vgg")
    no_ids = SynthPatients(patients=6, size=8)
    no_ids.table = no_ids.table.assign(patient_id=None)
    with pytest.raises(InputError, match="patient_id"):
        train_reid(no_ids, out=tmp_path / "x.safetensors", device="cpu")


def test_cli_train_reid(tmp_path, monkeypatch, capsys, one_thread):
    ds = SynthPatients(patients=8, studies=2, size=16)
    fake = types.ModuleType("evaluators.imagesets")
    fake.load_image_set = lambda spec: ds if spec == "synth" else (_ for _ in ()).throw(InputError("no"))
    monkeypatch.setitem(sys.modules, "evaluators.imagesets", fake)
    import evaluators

    monkeypatch.setattr(evaluators, "imagesets", fake, raising=False)
    parser = argparse.ArgumentParser()
    privacy_cli.add_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli.safetensors"
    args = parser.parse_args(["train-reid", "--train", "synth", "--out", str(out), "--epochs", "1",
                              "--image-size", "16", "--pairs-per-epoch", "64", "--seed", "1", "--device", "cpu"])  # fmt: skip
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["backbone"] == "tiny" and printed["image_size"] == 16 and out.is_file()
