"""FRD v1: the radiomics encoder + evaluators.metrics.frd equal frd-score 1.0.1 on the same images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluators.encoders.registry import availability
from evaluators.errors import InputError
from evaluators.metrics.frd import frd

pytestmark = pytest.mark.skipif(not availability("radiomics").local,
                                reason="PyRadiomics not installed (pip install pyradiomics-bhklab==3.1.4)")


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory):
    """12 demo-world radiographs, and 12 others blurred (64 px PNGs, as frd-score reads them)."""
    from PIL import ImageFilter

    from evaluators.demo_world import generate_demo_world
    from evaluators.imagesets import load_image_set

    root = tmp_path_factory.mktemp("frd")
    generate_demo_world(root / "world", patients=24, seed=3, size=64)
    images = load_image_set(root / "world")
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    for i in range(12):
        Image.fromarray((images.image(i) * 255).round().astype(np.uint8)).save(a / f"{i:02d}.png")
        im = Image.fromarray((images.image(12 + i) * 255).round().astype(np.uint8))
        im.filter(ImageFilter.GaussianBlur(1.5)).save(b / f"{i:02d}.png")
    return a, b


@pytest.mark.slow  # ~25 s of PyRadiomics on 2 x 24 images (twice: ours and frd-score's)
def test_frd_equals_frd_score(two_folders, tmp_path):
    pytest.importorskip("frd_score")
    from frd_score.frd import compute_frd

    from evaluators.encoders.registry import load_encoder
    from evaluators.features import extract_features

    a, b = two_folders
    enc = load_encoder("radiomics")
    fa = extract_features(sorted(a.glob("*.png")), enc, store_root=tmp_path, show_progress=False).features
    fb = extract_features(sorted(b.glob("*.png")), enc, store_root=tmp_path, show_progress=False).features
    ours = frd(fa, fb)
    ref = float(compute_frd([str(a), str(b)], num_workers=1))
    print(f"FRD ours {ours['FRD']:.6f} frd-score {ref:.6f} features {ours['n_features']}/{ours['n_features_extracted']}")
    assert ours["FRD"] == pytest.approx(ref, abs=1e-4)
    assert frd(fa[:6], fa[6:])["FRD"] < ours["FRD"]  # two halves of one set are closer than blurred images
    # cached: a second extraction encodes nothing and gives the same matrix
    again = extract_features(sorted(a.glob("*.png")), enc, store_root=tmp_path, show_progress=False).features
    np.testing.assert_array_equal(again, fa)


def test_frd_normalisation_and_bad_input():
    rng = np.random.default_rng(0)
    r = rng.normal(size=(30, 5)) * [1, 2, 3, 4, 5] + 10
    s = rng.normal(size=(25, 5)) * [1, 2, 3, 4, 5] + 11
    r[:, 4] = 7.0  # constant in the reference: dropped (z-score inf/nan)
    s[3, 0] = np.nan  # an image with a NaN feature: dropped
    out = frd(r, s)
    assert out["n_features"] == 4 and out["n_dropped_synthetic"] == 1 and out["n_synthetic"] == 24
    zr = (r[:, :4] - r[:, :4].mean(0)) / r[:, :4].std(0)
    zs = (np.delete(s, 3, 0)[:, :4] - r[:, :4].mean(0)) / r[:, :4].std(0)
    from evaluators.metrics.fidelity import fid

    assert out["FRD_raw"] == pytest.approx(fid(zr, zs), rel=1e-5)
    assert out["FRD"] == pytest.approx(np.log(out["FRD_raw"]))
    with pytest.raises(InputError, match="same radiomics"):
        frd(r, s[:, :3])


def test_radiomics_encoder_features_and_cache_key(tmp_path):
    from evaluators.encoders.radiomics_features import extract
    from evaluators.encoders.registry import load_encoder
    from evaluators.features import extract_features

    rng = np.random.default_rng(0)
    imgs = [np.clip(rng.normal(0.5, 0.15, size=(48, 48)), 0, 1).astype(np.float32) for _ in range(2)]
    enc = load_encoder("radiomics")
    fs = extract_features(imgs, enc, store_root=tmp_path, show_progress=False).features
    assert fs.shape == (2, enc.dim) and enc.dim == len(enc.feature_names) > 300
    direct = extract(enc.ext, imgs[1] * np.float32(255.0))
    np.testing.assert_allclose(fs[1], np.float32([direct[k] for k in enc.feature_names]), rtol=1e-6)
    meta = enc.metadata()
    assert meta["radiomics_settings_sha256"] and meta["feature_names"] == enc.feature_names
    assert enc.cache_key().startswith("radiomics-")
