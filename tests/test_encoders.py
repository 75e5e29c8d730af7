"""Encoder registry and loaders, on tiny random models saved in the real weights' formats and places."""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sys
from unittest import mock

import numpy as np
import pytest
import torch

from evaluators.cli import encoders as encoders_cli
from evaluators.encoders import (
    EncoderSpec,
    availability,
    default_encoder,
    file_sha256,
    list_encoders,
    load_encoder,
    register_encoder,
)
from evaluators.encoders import registry as R
from evaluators.errors import InputError, UnavailableError
from tests import tiny_models as T


@pytest.fixture(autouse=True)
def _no_weights_anywhere(tmp_path, monkeypatch):
    """Every test starts on a machine with no weights: empty HF / torch hub / xrv caches, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("CHEXGEN_RADDINO", "CHEXGEN_INCEPTION_WEIGHTS", "CHEXGEN_XRV_WEIGHTS", "CHEXGEN_BIOVIL_WEIGHTS",
                "CHEXGEN_DINOV2"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where health_multimodal would have downloaded
    monkeypatch.setattr("evaluators.settings.assets_dir", lambda: tmp_path / "assets")  # no shipped demo weights
    no = AssertionError("a download was attempted")
    monkeypatch.setattr(torch.hub, "download_url_to_file", mock.Mock(side_effect=no))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", mock.Mock(side_effect=no))
    for module in ("torch_fidelity.feature_extractor_inceptionv3", "torchxrayvision.utils"):
        try:
            mod = __import__(module, fromlist=["_"])
        except ImportError:
            continue
        name = "load_state_dict_from_url" if "fidelity" in module else "download"
        monkeypatch.setattr(mod, name, mock.Mock(side_effect=no))


def _images(n: int = 5, shape=(90, 70), seed: int = 0) -> list[np.ndarray]:
    """Smooth, distinct gray images in [0, 1] (a blob on a gradient, moved per image)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6), rng.uniform(0.05, 0.2)
        img = 0.3 * yy + 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / r**2)
        out.append(np.clip(img, 0, 1).astype(np.float32))
    return out


def _check_batch_behaviour(enc, imgs, *, atol=1e-5):
    """Shapes, float32 CPU outputs, determinism, and features independent of the rest of the batch."""
    batch = torch.stack([enc.preprocess(im) for im in imgs])
    out = enc.forward(batch)
    assert set(out) == set(enc.outputs)
    feats = out["features"]
    assert feats.shape == (len(imgs), enc.dim) and feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert torch.isfinite(feats).all()
    assert (feats[0] - feats[1]).abs().max() > 1e-6, "different images must give different features"
    again = enc.forward(batch)
    for k in out:
        assert torch.equal(out[k], again[k]), f"{k} is not deterministic"
    single = enc.forward(batch[1:2])
    pair = enc.forward(batch[[2, 1]])
    for k in out:
        scale = max(1.0, float(out[k].abs().max()))
        assert (single[k][0] - out[k][1]).abs().max() <= atol * scale, f"{k} depends on the batch"
        assert (pair[k][1] - out[k][1]).abs().max() <= atol * scale, f"{k} depends on the batch"
    return out


# --------------------------------------------------------------------------------------------------
# Registry


def test_every_encoder_is_listed_and_unavailable_ones_say_why():
    rows = {r["name"]: r for r in list_encoders()}
    assert {"raddino", "inception", "xrv-densenet", "biovil", "pixels", "demo", "dinov2"} <= set(rows)
    assert rows["pixels"]["available"] and rows["pixels"]["dim"] == 1024
    for name in ("raddino", "inception", "xrv-densenet", "demo", "dinov2"):
        row = rows[name]
        assert not row["available"], name
        assert row["reason"] and row["how_to_provide"] and row["description"]
    assert "microsoft/rad-dino" in rows["raddino"]["reason"]
    assert "weights-inception-2015-12-05-6726825d.pth" in rows["inception"]["reason"]
    assert ".torchxrayvision" in rows["xrv-densenet"]["reason"]
    assert default_encoder() == "pixels"


@pytest.mark.parametrize(("name", "named"), [
    ("raddino", "microsoft/rad-dino"),
    ("inception", "weights-inception-2015-12-05-6726825d.pth"),
    ("xrv-densenet", "models_data"),
    ("demo", "demo_encoder.safetensors"),
])
def test_unavailable_encoder_raises_and_is_never_substituted(name, named):
    with pytest.raises(UnavailableError) as err:
        load_encoder(name)
    assert named in str(err.value) and "unavailable" in str(err.value)


def test_unknown_encoder_is_an_input_error():
    with pytest.raises(InputError, match="pixels"):
        load_encoder("no-such-encoder")


def test_weights_given_but_wrong_are_reported(tmp_path):
    av = availability("raddino", tmp_path)
    assert not av.available and "model.safetensors" in av.reason and str(tmp_path) in av.reason
    assert not availability("inception", tmp_path / "absent.pth").available
    wrong = tmp_path / "densenet.pt"
    wrong.write_bytes(b"x")
    av = availability("xrv-densenet", wrong)
    assert not av.available and "must be named" in av.reason


def test_biovil_without_package_reports_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "health_multimodal", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "health_multimodal.image.model.model", None)
    av = availability("biovil")
    assert not av.available and "hi-ml-multimodal" in av.how_to_provide
    with pytest.raises(UnavailableError, match="hi-ml-multimodal"):
        load_encoder("biovil")


def test_demo_slot_and_register_encoder(tmp_path):
    weights = tmp_path / "demo_encoder.safetensors"
    assert "not found" in availability("demo", weights).reason
    weights.write_bytes(b"placeholder")
    av = availability("demo", weights)
    assert not av.available and "not a readable safetensors file" in av.reason
    original = R.get_spec("demo")
    try:
        register_encoder(EncoderSpec("demo", "test stand-in", lambda **kw: R.get_spec("pixels").loader(**kw),
                                     dim=1024, check=lambda w: R.Availability(True, "test")))
        assert availability("demo").available
        assert default_encoder() == "demo"  # demo outranks inception and pixels
        assert load_encoder("demo").dim == 1024
    finally:
        register_encoder(original)
    assert default_encoder() == "pixels"


def test_cli_table_lists_every_encoder(capsys):
    parser = argparse.ArgumentParser()
    encoders_cli.add_cli(parser.add_subparsers())
    args = parser.parse_args(["encoders"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    for name in ("raddino", "inception", "xrv-densenet", "biovil", "pixels", "demo"):
        assert name in text
    assert "UNAVAILABLE" in text and "how to provide" in text and "default encoder: pixels" in text


def test_weights_sha256_is_cached_in_a_sidecar(tmp_path):
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    expected = hashlib.sha256(f.read_bytes()).hexdigest()
    assert file_sha256(f) == expected
    sidecar = tmp_path / "w.bin.sha256.json"
    assert sidecar.is_file()
    sidecar.write_text(sidecar.read_text().replace(expected, "f" * 64))  # the cache is trusted while size+mtime hold
    assert file_sha256(f) == "f" * 64
    f.write_bytes(b"abcd" * 1000)  # size (and mtime) change: recomputed
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# pixels


def test_pixels_encoder():
    enc = load_encoder("pixels")
    out = _check_batch_behaviour(enc, _images())
    f = out["features"]
    assert torch.allclose(f.norm(dim=1), torch.ones(len(f)), atol=1e-5)
    assert f.mean(dim=1).abs().max() < 1e-6
    flat = enc.forward(enc.preprocess(np.full((40, 40), 0.5, np.float32))[None])["features"]
    assert torch.equal(flat, torch.zeros_like(flat))
    with pytest.raises(InputError, match="2-D"):
        enc.preprocess(np.zeros((4, 4, 3), np.float32))
    assert enc.cache_key() == load_encoder("pixels").cache_key()


# --------------------------------------------------------------------------------------------------
# raddino


@pytest.fixture(scope="module")
def raddino_dir(tmp_path_factory):
    return T.make_tiny_raddino(tmp_path_factory.mktemp("raddino"))


def test_raddino_from_folder_matches_transformers(raddino_dir):
    from transformers import AutoImageProcessor, Dinov2Model

    enc = load_encoder("raddino", weights=raddino_dir)
    assert enc.dim == 32 and enc.input_size == 56 and enc.outputs == ("features",)
    imgs = _images()
    out = _check_batch_behaviour(enc, imgs)
    # same features as the model run by hand (pooler_output = layer-normed CLS)
    ref = Dinov2Model.from_pretrained(raddino_dir).eval()
    batch = torch.stack([enc.preprocess(im) for im in imgs])
    with torch.no_grad():
        assert torch.allclose(ref(pixel_values=batch).pooler_output, out["features"], atol=1e-6)
    # our float preprocessing follows the repo's image processor (which works on 8-bit RGB)
    proc = AutoImageProcessor.from_pretrained(raddino_dir)
    u8 = np.rint(imgs[0] * 255).astype(np.uint8)
    theirs = proc(images=np.stack([u8] * 3, -1), return_tensors="pt")["pixel_values"][0]
    ours = enc.preprocess(u8.astype(np.float32) / 255)
    assert ours.shape == theirs.shape == (3, 56, 56)
    assert (ours - theirs).abs().mean() < 0.02 and (ours - theirs).abs().max() < 0.15  # resize kernels differ slightly
    meta = enc.metadata()
    assert meta["feature_key"] == "pooler_output" and meta["preprocessing"]["mean"] == [T.RADDINO_MEAN] * 3
    assert len(meta["weights_sha256"]) == 64
    assert len(pickle.dumps(enc.preprocess)) < 10_000  # workers get the preprocessing, not the model


def test_raddino_through_the_feature_cache_with_workers(raddino_dir, tmp_path):
    from evaluators.features import extract_features

    enc = load_encoder("raddino", weights=raddino_dir)
    imgs = _images(4)
    fs = extract_features(imgs, enc, batch_size=3, num_workers=1, store_root=tmp_path, show_progress=False)
    direct = enc.forward(torch.stack([enc.preprocess(im) for im in imgs]))["features"].numpy()
    assert np.abs(fs.features - direct).max() <= 1e-5
    assert (tmp_path / enc.cache_key()).is_dir()


def test_raddino_from_hf_cache_and_env(raddino_dir, tmp_path, monkeypatch):
    by_dir = load_encoder("raddino", weights=raddino_dir)
    snap = T.make_tiny_raddino_cache(os.environ["HF_HUB_CACHE"], tmp_path / "src")
    assert availability("raddino").available
    assert default_encoder() == "raddino"
    from_cache = load_encoder("raddino")
    assert from_cache.metadata()["weights_id"] == f"microsoft/rad-dino@{snap.name}"
    # same weights found two ways -> same features and the same feature-cache key
    assert from_cache.cache_key() == by_dir.cache_key()
    batch = torch.stack([by_dir.preprocess(im) for im in _images(2)])
    assert torch.equal(from_cache.forward(batch)["features"], by_dir.forward(batch)["features"])
    # other weights -> another key
    other = T.make_tiny_raddino(tmp_path / "other", seed=1)
    monkeypatch.setenv("CHEXGEN_RADDINO", str(other))
    assert load_encoder("raddino").cache_key() != by_dir.cache_key()


# --------------------------------------------------------------------------------------------------
# xrv-densenet


@pytest.fixture(scope="module")
def xrv_file(tmp_path_factory):
    pytest.importorskip("torchxrayvision")
    return T.make_tiny_xrv(tmp_path_factory.mktemp("xrv") / ".torchxrayvision" / "models_data")


def test_xrv_from_its_cache_matches_xrv(xrv_file, monkeypatch):
    import torchxrayvision as xrv

    monkeypatch.setenv("HOME", str(xrv_file.parents[2]))  # xrv looks in ~/.torchxrayvision/models_data/
    assert availability("xrv-densenet").available
    enc = load_encoder("xrv-densenet")
    assert enc.dim == 1024 and enc.outputs == ("features", "logits", "probs")
    imgs = _images(3, shape=(96, 80))
    out = _check_batch_behaviour(enc, imgs)
    assert out["logits"].shape == out["probs"].shape == (3, 18)
    assert enc.metadata()["pathologies"] == xrv.models.model_urls["densenet121-res224-all"]["labels"]
    # preprocessing = xrv's documented pipeline on an 8-bit image
    u8 = np.rint(imgs[0] * 255).astype(np.uint8)
    doc = xrv.datasets.normalize(u8, 255)[None]
    doc = xrv.datasets.XRayResizer(224)(xrv.datasets.XRayCenterCrop()(doc))
    ours = enc.preprocess(u8.astype(np.float32) / 255).numpy()
    assert ours.shape == (1, 224, 224) and np.abs(ours - doc).max() < 1e-2
    # outputs = xrv's own features2 / forward on the same batch
    batch = torch.stack([enc.preprocess(im) for im in imgs])
    with torch.no_grad():
        assert torch.allclose(enc.model.features2(batch), out["features"], atol=1e-5)
        assert torch.allclose(enc.model(batch), out["probs"], atol=1e-6)


# --------------------------------------------------------------------------------------------------
# inception (a full-size random InceptionV3: ~95 MB written once per module)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    pytest.importorskip("torch_fidelity")
    folder = tmp_path_factory.mktemp("inception")
    path = T.make_tiny_inception(folder / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth")
    yield path
    path.unlink(missing_ok=True)


@pytest.mark.slow
def test_inception_from_torch_hub_dir_matches_torch_fidelity(inception_file, monkeypatch):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    monkeypatch.setenv("TORCH_HOME", str(inception_file.parents[2]))  # torch.hub.get_dir() = TORCH_HOME/hub
    assert availability("inception").available
    enc = load_encoder("inception")
    assert enc.dim == 2048 and enc.input_size == 299 and enc.outputs == ("features", "logits")
    imgs = _images(3)
    batch = torch.stack([enc.preprocess(im) for im in imgs])
    assert batch.dtype == torch.uint8 and batch.shape == (3, 3, 299, 299)
    out = _check_batch_behaviour(enc, imgs)
    assert out["logits"].shape == (3, 1008)
    # torch-fidelity's own loading path (file given to its constructor) gives the same numbers
    ref = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                      feature_extractor_weights_path=str(inception_file)).eval()
    with torch.no_grad():
        pool, logits = ref(batch)
    assert torch.allclose(pool, out["features"], atol=1e-5) and torch.allclose(logits, out["logits"], atol=1e-4)
    # the random net's outputs are ~1e-6, so also relative: the folded graph is the same function
    assert "batch norm folded" in enc.graph and not any(isinstance(m, torch.nn.BatchNorm2d) for m in enc.net.modules())
    assert (pool - out["features"]).abs().max() <= 1e-4 * pool.abs().max()
    assert (logits - out["logits"]).abs().max() <= 1e-4 * logits.abs().max()
    assert enc.metadata()["official_weights"] is False  # random weights are not the published file


# --------------------------------------------------------------------------------------------------
# biovil (only where hi-ml-multimodal is installed)


@pytest.mark.slow
def test_biovil_tiny_model(tmp_path, monkeypatch):
    pytest.importorskip("health_multimodal.image.model.model")
    from health_multimodal.image.model.model import ImageModel
    from health_multimodal.image.model.types import ImageEncoderType

    path = T.make_tiny_biovil(tmp_path / "biovil_t_image_model_proj_size_128.pt")
    monkeypatch.setenv("CHEXGEN_BIOVIL_WEIGHTS", str(path))
    enc = load_encoder("biovil")
    out = _check_batch_behaviour(enc, _images(3))
    assert out["features"].shape == (3, 128)
    assert torch.allclose(out["features"].norm(dim=1), torch.ones(3), atol=1e-5)
    # the package's own loading path (pretrained_model_path) gives the same embedding
    ref = ImageModel(img_encoder_type=ImageEncoderType.RESNET50_MULTI_IMAGE, joint_feature_size=128,
                     pretrained_model_path=path).eval()
    batch = torch.stack([enc.preprocess(im) for im in _images(3)])
    with torch.no_grad():
        emb = torch.nn.functional.normalize(ref(batch).projected_global_embedding, dim=-1)
    assert torch.allclose(emb, out["features"], atol=1e-5)


def test_plugin_imported_first_keeps_the_builtin_encoders():
    """Importing the demo encoder's module before any lookup must not hide the other encoders."""
    import subprocess

    code = ("import evaluators.demo_encoder\n"
            "from evaluators.encoders.registry import names\n"
            "assert names()[:7] == ['raddino', 'xrv-densenet', 'demo', 'inception', 'biovil', 'dinov2', 'pixels'], names()\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0, res.stderr[-2000:]


def test_batchnorm_is_folded_below_an_untraceable_forward():
    """One input check that torch.fx cannot trace must not stop the folding of the convolutions below it."""
    from evaluators.encoders.base import inference_graph

    class ConvBN(torch.nn.Module):  # torchvision / torch-fidelity BasicConv2d: attributes, not a Sequential
        def __init__(self, c_in, c_out):
            super().__init__()
            self.conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
            self.bn = torch.nn.BatchNorm2d(c_out)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    class Checked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = ConvBN(2, 4)
            self.b = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
            self.post = torch.nn.BatchNorm2d(4)  # after a ReLU: nothing to fold it into

        def forward(self, x):
            if x.shape[1] != 2:
                raise ValueError("two channels expected")
            return self.post(torch.relu(self.b(self.a(x))))

    torch.manual_seed(0)
    model = Checked()
    for m in model.modules():  # non-trivial running statistics, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    model.eval()
    net, what = inference_graph(model)
    assert "1 left unfolded" in what and "channels_last" in what
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 3  # the original is untouched
    x = torch.randn(3, 2, 9, 9)
    with torch.no_grad():
        want, got = model(x), net(x.contiguous(memory_format=torch.channels_last))
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()
    with pytest.raises(ValueError, match="two channels"):
        net(torch.randn(1, 3, 9, 9))  # the unfoldable wrapper kept its own forward
