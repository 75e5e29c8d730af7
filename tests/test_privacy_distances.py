"""Pixel and latent distances of the CheXGenBench privacy protocol, without its uint8 and last-image bugs."""

from __future__ import annotations

import numpy as np
import pytest

from evaluators.errors import InputError
from evaluators.privacy.distances import (
    as_gray01,
    latent_distance,
    latent_distances,
    over_seeds,
    per_prompt_distances,
    pixel_distance,
    pixel_distances,
    resize_to,
)


def _u8(v: int, shape=(16, 16)) -> np.ndarray:
    return np.full(shape, v, dtype=np.uint8)


def test_no_uint8_wraparound():
    assert pixel_distance(_u8(0), _u8(255)) == pytest.approx(1.0)  # black vs white: the maximum
    d1, d2 = pixel_distance(_u8(10), _u8(5)), pixel_distance(_u8(5), _u8(10))
    assert d1 == d2 == pytest.approx(5 / 255, rel=1e-6)
    # What the reference's uint8 subtraction gives instead (5 - 10 wraps to 251), for contrast.
    wrapped = np.linalg.norm(_u8(5) - _u8(10)) / np.sqrt(256)
    assert wrapped == pytest.approx(251.0)


def test_kinds_and_known_values():
    a = np.zeros((4, 4), np.float32)
    b = a.copy()
    b[0, :] = 1.0  # 4 of 16 pixels differ by 1
    assert pixel_distance(a, b, kind="mse") == pytest.approx(0.25)
    assert pixel_distance(a, b, kind="rmse") == pytest.approx(0.5)
    assert pixel_distance(a, b, kind="l2") == pytest.approx(2.0)
    with pytest.raises(InputError, match="Unknown pixel distance"):
        pixel_distance(a, b, kind="l1")


def test_metric_properties():
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 32), dtype=np.float32), rng.random((32, 32), dtype=np.float32)
    assert pixel_distance(x, x) == 0.0
    assert pixel_distance(x, y) == pytest.approx(pixel_distance(y, x))
    z = rng.random((32, 32), dtype=np.float32)
    assert (
        pixel_distance(x, z, kind="l2")
        <= pixel_distance(x, y, kind="l2") + pixel_distance(y, z, kind="l2") + 1e-9
    )


def test_input_types_are_scaled_to_unit_range():
    g = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    u8 = np.round(g * 255).astype(np.uint8)
    u16 = np.round(g * 65535).astype(np.uint16)
    np.testing.assert_allclose(as_gray01(u8), g, atol=1 / 255)
    np.testing.assert_allclose(as_gray01(u16), g, atol=1e-4)
    rgb = np.repeat(u8[..., None], 3, axis=-1)
    np.testing.assert_array_equal(as_gray01(rgb), as_gray01(u8))  # replicated gray == gray
    from PIL import Image

    np.testing.assert_array_equal(as_gray01(Image.fromarray(u8)), as_gray01(u8))
    assert pixel_distance(u8, g) < 1 / 255
    for bad in (np.full((4, 4), 2.0), np.full((4, 4), np.nan), np.zeros((4, 4), np.int16), np.zeros(5)):
        with pytest.raises(InputError):
            as_gray01(bad)


def test_different_sizes_go_to_a_common_size():
    rng = np.random.default_rng(1)
    big = rng.random((64, 64), dtype=np.float32)
    small = resize_to(big, 32)
    assert small.shape == (32, 32) and small.dtype == np.float32
    assert small.min() >= 0.0 and small.max() <= 1.0
    # Default: both to the smaller shape, the same resize for both.
    assert pixel_distance(big, small) == pytest.approx(pixel_distance(resize_to(big, 32), small))
    assert pixel_distance(big, small) < 1e-6
    assert pixel_distance(big, small, size=16) == pytest.approx(
        pixel_distance(resize_to(big, 16), resize_to(small, 16))
    )
    assert resize_to(big, (20, 30)).shape == (20, 30)


def test_each_seed_is_compared_with_the_real_image():
    """The reference compared the last generated image for every seed; here each one counts."""
    real = np.zeros((8, 8), np.float32)
    gens = [real.copy(), np.full((8, 8), 0.5, np.float32), np.ones((8, 8), np.float32)]
    d = pixel_distances(real, gens)
    np.testing.assert_allclose(d, [0.0, 0.5, 1.0], atol=1e-7)
    s = over_seeds(d)
    assert s == {"mean": pytest.approx(0.5), "min": 0.0, "n_seeds": 3}
    with pytest.raises(InputError):
        over_seeds([])


def test_latent_distances():
    rng = np.random.default_rng(2)
    u, v = rng.normal(size=(5, 768)), rng.normal(size=(5, 768))
    l2 = latent_distances(u, v, kind="l2")
    np.testing.assert_allclose(l2, np.linalg.norm(u - v, axis=1))
    np.testing.assert_allclose(latent_distances(u, v, kind="rmse"), l2 / np.sqrt(768))
    from scipy.spatial.distance import cosine

    np.testing.assert_allclose(
        latent_distances(u, v, kind="cosine"), [cosine(a, b) for a, b in zip(u, v)], atol=1e-12
    )
    assert latent_distance([1, 0], [2, 0], kind="cosine") == pytest.approx(0.0)
    assert latent_distance([1, 0], [0, 3], kind="cosine") == pytest.approx(1.0)
    # One real vector broadcast against all seeds; pooled [N, 1, D] outputs are flattened.
    np.testing.assert_allclose(latent_distances(u, v[0]), latent_distances(u, np.repeat(v[:1], 5, 0)))
    np.testing.assert_allclose(latent_distances(u[:, None, :], v[:, None, :]), latent_distances(u, v))
    with pytest.raises(InputError, match="same encoder"):
        latent_distances(u, v[:, :10])
    with pytest.raises(InputError, match="zero"):
        latent_distance(np.zeros(3), np.ones(3), kind="cosine")


def test_per_prompt_table():
    real = [np.zeros((8, 8), np.float32), np.ones((16, 16), np.float32)]
    gens = [[np.zeros((8, 8)), np.ones((8, 8))], [np.ones((8, 8), np.float32)]]
    feats_real = np.array([[1.0, 0.0], [0.0, 1.0]])
    feats_gen = [np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0]])]
    df = per_prompt_distances(["a", "b"], real, gens, real_features=feats_real, generated_features=feats_gen)
    assert list(df["Prompt"]) == ["a", "b"]
    np.testing.assert_allclose(df["Mean_pixel_distance"], [0.5, 0.0], atol=1e-6)
    np.testing.assert_allclose(df["Min_pixel_distance"], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(df["Min_latent_distance"], [0.0, 0.0])
    np.testing.assert_allclose(df["Mean_latent_distance"], [0.5, 0.0])  # rmse: sqrt(2)/sqrt(2) / 2 seeds
    with pytest.raises(InputError, match="same length"):
        per_prompt_distances(["a"], real, gens)


def test_resize_is_the_project_resize():
    imageio = pytest.importorskip("evaluators.imageio")
    x = np.random.default_rng(3).random((40, 50), dtype=np.float32)
    np.testing.assert_array_equal(resize_to(x, (20, 30)), imageio.resize(x, (30, 20)))
