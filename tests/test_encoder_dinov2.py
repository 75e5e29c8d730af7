"""The ``dinov2`` encoder (facebook/dinov2-base, dgm-eval's preprocessing) on tiny random models saved locally."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluators.encoders import availability, default_encoder, list_encoders, load_encoder
from evaluators.encoders import dinov2 as D
from evaluators.errors import UnavailableError
from tests import tiny_models as T

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _offline_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.delenv("CHEXGEN_DINOV2", raising=False)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    return T.make_tiny_dinov2(tmp_path_factory.mktemp("dinov2"))


def _images(n: int = 4, shape=(80, 64), seed: int = 0) -> list[np.ndarray]:
    """Distinct smooth gray images in [0, 1], on the 8-bit grid (so a uint8 PIL chain sees the same pixels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(0.2, 0.8, 2)
        img = 0.3 * xx + 0.6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
        out.append((np.round(np.clip(img, 0, 1) * 255) / 255).astype(np.float32))
    return out


def test_offline_without_weights_is_unavailable_with_reason_and_fix(tmp_path):
    av = availability("dinov2")
    assert not av.available
    assert "facebook/dinov2-base" in av.reason and "Hugging Face cache" in av.reason
    assert "CHEXGEN_DINOV2" in av.how_to_provide and "--weights" in av.how_to_provide
    row = {r["name"]: r for r in list_encoders()}["dinov2"]
    assert not row["available"] and row["dim"] == 768 and row["how_to_provide"]
    with pytest.raises(UnavailableError, match="facebook/dinov2-base"):
        load_encoder("dinov2")  # never substituted by another encoder
    av = availability("dinov2", tmp_path)  # a folder without the files names what it lacks
    assert not av.available and "config.json" in av.reason and "model.safetensors" in av.reason


def test_check_builds_no_model(dino_dir, monkeypatch):
    import transformers

    def boom(*_a, **_k):
        raise AssertionError("the availability check built a model")

    monkeypatch.setattr(transformers.Dinov2Model, "from_pretrained", boom)
    assert availability("dinov2", dino_dir).available


def test_tiny_model_from_folder_matches_transformers_and_is_batch_invariant(dino_dir):
    from transformers import Dinov2Model

    enc = load_encoder("dinov2", weights=dino_dir)
    assert enc.dim == 32 and enc.input_size == 224 and enc.feature_key == "pooler_output"
    imgs = _images()
    batch = torch.stack([enc.preprocess(im) for im in imgs])
    assert batch.shape == (4, 3, 224, 224)
    feats = enc.forward(batch)["features"]
    assert feats.shape == (4, 32) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert (feats[0] - feats[1]).abs().max() > 1e-4, "different images must give different features"
    assert torch.equal(feats, enc.forward(batch)["features"])  # deterministic
    for i in range(4):  # batch-invariant: one image alone gives its features in the batch
        assert torch.allclose(enc.forward(batch[i : i + 1])["features"][0], feats[i], atol=1e-5)
    ref = Dinov2Model.from_pretrained(dino_dir).eval()
    with torch.no_grad():
        out = ref(pixel_values=batch)
    assert torch.allclose(out.pooler_output, feats, atol=1e-5)
    # pooler_output is the layer-normed CLS token (what the torch hub model's forward returns to dgm-eval)
    assert torch.allclose(out.last_hidden_state[:, 0], feats, atol=1e-5)


def test_preprocessing_is_dgm_evals():
    """dgm-eval's DINOv2Encoder.transform: Resize((224, 224), BICUBIC) on the PIL image, ToTensor, ImageNet mean/std."""
    tv = pytest.importorskip("torchvision.transforms")
    pre = D.Dinov2Preprocess()
    for img in _images(2, shape=(300, 250)) + _images(1, shape=(64, 64)):
        pil = Image.fromarray(np.round(img * 255).astype(np.uint8)).convert("RGB")
        ref = tv.Compose([tv.Resize((224, 224), tv.InterpolationMode.BICUBIC), tv.ToTensor(),
                          tv.Normalize(D.IMAGENET_MEAN, D.IMAGENET_STD)])(pil)
        ours = pre(img)
        assert ours.shape == ref.shape == (3, 224, 224)
        # in grey levels: dgm-eval resizes 8-bit RGB (PIL's fixed-point filter, result rounded to uint8), we resize
        # the float image; measured max 1.01-1.06, mean 0.13-0.27 grey levels on these images
        levels = (ours - ref).abs() * torch.tensor(D.IMAGENET_STD).reshape(3, 1, 1) * 255
        assert levels.max() <= 1.5 and levels.mean() <= 0.35


def test_cache_key_has_weights_and_preprocessing(dino_dir, tmp_path):
    a = load_encoder("dinov2", weights=dino_dir)
    assert a.cache_key() == load_encoder("dinov2", weights=dino_dir).cache_key()
    other = load_encoder("dinov2", weights=T.make_tiny_dinov2(tmp_path / "other", seed=1))
    assert other.cache_key() != a.cache_key()  # weights identity (sha256 of config + safetensors)
    meta = a.metadata()
    assert meta["weights_sha256"] and meta["preprocessing"]["resize"] == [224, 224]
    assert meta["preprocessing"]["mean"] == list(D.IMAGENET_MEAN)
    raddino = load_encoder("raddino", weights=T.make_tiny_raddino(tmp_path / "rd"))
    assert raddino.cache_key() != a.cache_key()


def test_hf_cache_and_env(dino_dir, tmp_path, monkeypatch):
    files = {n: dino_dir / n for n in ("config.json", "model.safetensors")}
    snap = T.make_hf_cache_snapshot(os.environ["HF_HUB_CACHE"], "facebook/dinov2-base", files)
    av = availability("dinov2")
    assert av.available and av.local and "Hugging Face cache" in av.reason
    enc = load_encoder("dinov2")
    assert enc.weights_id == f"facebook/dinov2-base@{snap.name}"
    assert enc.cache_key() == load_encoder("dinov2", weights=dino_dir).cache_key()  # same weights, same key
    assert default_encoder() in ("raddino", "xrv-densenet", "dinov2")  # above demo, inception and pixels
    monkeypatch.setenv("CHEXGEN_DINOV2", str(tmp_path / "absent"))
    av = availability("dinov2")
    assert not av.available and "$CHEXGEN_DINOV2" in av.reason


def test_fidelity_cli_with_dinov2(dino_dir, tmp_path):
    for side, seed in (("real", 0), ("syn", 1)):
        (tmp_path / side).mkdir()
        for i, img in enumerate(_images(6, seed=seed)):
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(tmp_path / side / f"{i}.png")
    env = {**os.environ, "CHEXGEN_DINOV2": str(dino_dir), "CHEXGEN_HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", "evaluators", "fidelity", "--real", str(tmp_path / "real"),
                          "--synthetic", str(tmp_path / "syn"), "--encoder", "dinov2", "--no-alignment",
                          "--kid-subsets", "5", "--k", "2", "--no-store", "--out", str(out)],
                         capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    row = result["overall"]["dinov2"]
    assert np.isfinite(row["FID"]) and row["n_real"] == row["n_synthetic"] == 6
    meta = result["encoders"]["dinov2"]
    assert meta["dim"] == 32 and meta["weights_sha256"] and meta["preprocessing"]["resize"] == [224, 224]
