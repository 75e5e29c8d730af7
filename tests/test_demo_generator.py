"""The demo generator: label-token conditioning, loading, determinism and batch invariance.

Most tests use a tiny randomly initialised model exported the way the training script exports, so they
do not depend on the shipped weights; one test uses ``assets/demo_generator`` when it is present.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluators.errors import UnavailableError
from evaluators.generators import demo, list_models, load_generator
from evaluators.pathologies import INDEX, N_LABELS

ROOT = Path(__file__).resolve().parent.parent
TINY_UNET = {
    "sample_size": 8,
    "block_out_channels": [8, 16],
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
    "cross_attention_dim": 16,
    "attention_head_dim": 4,
}
PROMPTS = ["Large right pleural effusion.", "No acute cardiopulmonary process.", "Mild cardiomegaly."]


def _train_script():
    spec = importlib.util.spec_from_file_location("train_demo_generator", ROOT / "scripts/train_demo_generator.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def tiny_weights(tmp_path, monkeypatch):
    torch.manual_seed(0)
    cfg = {**demo.UNET_CONFIG, **TINY_UNET}
    encoder, unet = demo.build_modules({"unet": cfg})
    with torch.no_grad():  # a random UNet's zero-initialised output conv would make every image flat
        for p in unet.conv_out.parameters():
            p.normal_(0, 0.3)
    _train_script().export(encoder, unet, tmp_path, {"steps": 0}, unet_config=cfg)
    monkeypatch.setenv(demo.WEIGHTS_ENV, str(tmp_path))
    return tmp_path


def test_label_states_map_the_four_values():
    labels = np.full(N_LABELS, np.nan, dtype=np.float32)
    labels[[0, 1, 2]] = [1, 0, -1]
    states = demo.label_states(labels)
    assert states[:4].tolist() == [demo.STATES.index(s) for s in ("positive", "negative", "uncertain", "blank")]
    got = demo.prompt_states(["Large right pleural effusion. No pneumothorax."])[0]
    assert got[INDEX["Pleural Effusion"]] == 0 and got[INDEX["Pneumothorax"]] == 1
    assert got[INDEX["Fracture"]] == demo.STATES.index("blank")


def test_label_encoder_gives_one_token_per_label_and_null_differs():
    encoder, _ = demo.build_modules({"unet": {**demo.UNET_CONFIG, **TINY_UNET}})
    states = torch.as_tensor(demo.prompt_states(PROMPTS[:2]))
    tokens = encoder(states)
    assert tokens.shape == (2, N_LABELS, 16)
    assert not torch.allclose(tokens[0], tokens[1])
    null = encoder(torch.full_like(states, demo.NULL_STATE))
    assert torch.allclose(null[0], null[1]) and not torch.allclose(null[0], tokens[0])


def test_missing_weights_are_reported_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv(demo.WEIGHTS_ENV, str(tmp_path / "nowhere"))
    row = {r["name"]: r for r in list_models()}[demo.NAME]
    assert not row["available"] and "not found" in row["reason"]
    with pytest.raises(UnavailableError, match="train_demo_generator"):
        load_generator(demo.NAME)


def test_tiny_model_loads_is_deterministic_and_batch_invariant(tiny_weights):
    row = {r["name"]: r for r in list_models()}[demo.NAME]
    assert row["available"], row["reason"]
    gen = load_generator(demo.NAME)
    cfg = json.loads((tiny_weights / demo.CONFIG_FILE).read_text())
    assert cfg["text_encoder"].startswith("rule labeler")
    batch = gen.generate(PROMPTS, [5, 6, 7], steps=3, guidance=2.0, batch_size=3, height=16, width=16)
    assert all(im.shape == (16, 16) and im.dtype == np.float32 for im in batch)
    assert all(im.min() >= 0 and im.max() <= 1 for im in batch)
    alone = gen.generate([PROMPTS[1]], [6], steps=3, guidance=2.0, batch_size=1, height=16, width=16)[0]
    np.testing.assert_allclose(alone, batch[1], atol=1e-5)
    again = gen.generate([PROMPTS[1]], [6], steps=3, guidance=2.0, batch_size=1, height=16, width=16)[0]
    np.testing.assert_array_equal(alone, again)
    other_seed = gen.generate([PROMPTS[1]], [8], steps=3, guidance=2.0, height=16, width=16)[0]
    assert np.abs(other_seed - alone).mean() > 1e-3
    resized = gen.generate([PROMPTS[0]], [5], steps=2, height=24, width=32)[0]
    assert resized.shape == (24, 32)


def test_prompts_with_the_same_labels_and_seed_give_different_images(tiny_weights):
    """The text encoder keeps only the labels, so the noise hashes the prompt too: otherwise differently
    worded prompts with the same labels and seed came out as the same image (duplicates in a prompt file run)."""
    a, b = "Large right pleural effusion.", "Small left pleural effusion is present."
    assert (demo.prompt_states([a]) == demo.prompt_states([b])).all()
    gen = load_generator(demo.NAME)
    img_a, img_b, img_a2 = gen.generate([a, b, a], [3], steps=3, guidance=2.0, batch_size=3, height=16, width=16)
    assert np.abs(img_a - img_b).mean() > 1e-3
    np.testing.assert_allclose(img_a, img_a2, atol=1e-5)


def test_training_script_runs_a_step_and_exports(tmp_path):
    from evaluators.demo_world import generate_demo_world

    world = tmp_path / "world"
    generate_demo_world(world, patients=6, seed=2, size=64)
    out = tmp_path / "out"
    rc = _train_script().main(["--world", str(world), "--out", str(out), "--ckpt", str(tmp_path / "c.pt"),
                               "--steps", "1", "--batch", "2", "--threads", "1"])
    assert rc == 0
    cfg = json.loads((out / demo.CONFIG_FILE).read_text())
    assert cfg["training"]["steps"] == 1 and (out / demo.WEIGHTS_FILE).stat().st_size > 1e6


@pytest.mark.skipif(not demo.availability()[0], reason="assets/demo_generator not trained yet")
def test_shipped_demo_model_generates():
    gen = load_generator(demo.NAME)
    imgs = gen.generate(PROMPTS[:2], [0, 1], steps=4, batch_size=2)
    assert [im.shape for im in imgs] == [(demo.RESOLUTION, demo.RESOLUTION)] * 2
    assert all(np.isfinite(im).all() and im.std() > 0.02 for im in imgs)  # an image, not a flat field
    alone = gen.generate(PROMPTS[1:2], [1], steps=4, batch_size=1)[0]
    np.testing.assert_allclose(alone, imgs[1], atol=1e-4)
