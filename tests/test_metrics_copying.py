"""Data-copying tests (C_T, AuthPct): hand-computed cases, brute-force references, properties, demo baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.stats import mannwhitneyu
from sklearn.neighbors import NearestNeighbors

from evaluators.errors import InputError
from evaluators.metrics import copying as C

torch.set_num_threads(1)


# ---------------------------------------------------------------- nearest neighbours


def test_nearest_neighbours_match_sklearn_and_exclude_self():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 24)) + 5.0
    q = rng.normal(size=(70, 24)) + 5.0
    dist, idx = C.nearest_neighbours(q, ref, block_rows=16)
    d_sk, i_sk = NearestNeighbors(n_neighbors=1).fit(ref).kneighbors(q)
    np.testing.assert_array_equal(idx, i_sk[:, 0])
    np.testing.assert_allclose(dist, d_sk[:, 0], rtol=1e-12)
    own, own_idx = C.nearest_neighbours(ref, ref, exclude_self=True, block_rows=7)
    d2, i2 = NearestNeighbors(n_neighbors=2).fit(ref).kneighbors(ref)
    np.testing.assert_array_equal(own_idx, i2[:, 1])
    np.testing.assert_allclose(own, d2[:, 1], rtol=1e-12)
    # an exact copy is at distance exactly 0 (recomputed in float64)
    dist, idx = C.nearest_neighbours(ref[[3, 9]], ref)
    assert dist.tolist() == [0.0, 0.0] and idx.tolist() == [3, 9]


# ---------------------------------------------------------------- AuthPct


def _authpct_reference(train: np.ndarray, gen: np.ndarray) -> float:
    """dgm-eval's definition with full distance matrices: authentic iff r(nearest train) < d."""
    real = cdist(train, train)
    np.fill_diagonal(real, np.inf)
    radius = real.min(axis=0)
    g = cdist(train, gen)
    nn, d = g.argmin(axis=0), g.min(axis=0)
    return float(100 * np.mean(radius[nn] < d))


def test_authpct_hand_computed():
    train = np.array([[0.0], [1.0], [5.0]])  # radii 1, 1, 4
    # 0.4 -> train 0 (0.4 < 1): copy-like; 3.5 -> train 5 (1.5 < 4): inside its ball;
    # -3 -> train 0 (3 > 1): authentic; 20 -> train 5 (15 > 4): authentic
    out = C.authenticity(train, np.array([[0.4], [3.5], [-3.0], [20.0]]))
    assert out["AuthPct"] == 50.0
    assert out["authentic"].tolist() == [False, False, True, True]
    assert out["nearest_train"].tolist() == [0, 2, 0, 2]
    np.testing.assert_allclose(out["distance"], [0.4, 1.5, 3.0, 15.0])
    np.testing.assert_allclose(out["train_radius"], [1.0, 4.0, 1.0, 4.0])


def test_authpct_matches_reference_and_exact_copies_are_zero():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(400, 16))
    fresh = rng.normal(size=(300, 16))
    assert C.authpct(train, fresh, block_rows=50) == pytest.approx(_authpct_reference(train, fresh))
    assert C.authpct(train, fresh) > 50  # a fresh sample is mostly authentic
    assert C.authpct(train, train[:200]) == 0.0
    nearly = train[:200] + rng.normal(scale=1e-3, size=(200, 16))
    assert C.authpct(train, nearly) == pytest.approx(_authpct_reference(train, nearly)) == 0.0
    # a duplicated training image copied: distance 0 == radius 0 counts as inauthentic (ties inauthentic)
    dup = np.vstack([train, train[:1]])
    assert C.authpct(dup, train[:1]) == 0.0


def test_authpct_bad_input():
    with pytest.raises(InputError, match="same encoder"):
        C.authpct(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(InputError, match="at least 2"):
        C.authpct(np.zeros((1, 3)), np.zeros((5, 3)))


# ---------------------------------------------------------------- C_T


def test_c_t_hand_computed_two_cells():
    # cell 0: train {0, 10}; test distances 1, 2, 3; synthetic distances 0.5, 1.5 -> U = 1
    #   Z = (1 - (3*2/2 - 0.5)) / sqrt(3*2*6/12) = -1.5 / sqrt(3)
    # cell 1: train {100}; test distances 1, 4; synthetic distance 6 -> U = 2
    #   Z = (2 - (2*1/2 - 0.5)) / sqrt(2*1*4/12) = 1.5 / sqrt(2/3)
    train = np.array([[0.0], [10.0], [100.0]])
    test = np.array([[1.0], [2.0], [3.0], [101.0], [104.0]])
    syn = np.array([[0.5], [1.5], [106.0]])
    args = (train, [0, 0, 1], test, [0, 0, 0, 1, 1], syn, [0, 0, 1])
    z0, z1 = -1.5 / np.sqrt(3), 1.5 / np.sqrt(2 / 3)
    out = C.c_t_from_cells(*args, min_synthetic=0)
    assert [c["Z_U"] for c in out["cells"]] == pytest.approx([z0, z1])
    assert out["C_T"] == pytest.approx(0.6 * z0 + 0.4 * z1)
    assert [c["test_share"] for c in out["cells"]] == pytest.approx([0.6, 0.4])
    # a cell needs MORE than min_synthetic synthetic samples (the authors' Q_m(pi) > tau)
    out = C.c_t_from_cells(*args, min_synthetic=1)
    assert [c["included"] for c in out["cells"]] == [True, False]
    assert out["C_T"] == pytest.approx(z0) and out["n_cells_included"] == 1
    out = C.c_t_from_cells(*args, min_synthetic=2)
    assert np.isnan(out["C_T"]) and out["n_cells_included"] == 0


def _c_t_reference(train, tc, test, pc, gen, gc, min_syn):
    """Meehan et al.'s C_T from its definition, with full distance matrices and scipy's U."""
    k = max(tc.max(), pc.max(), gc.max()) + 1
    z, w = [], []
    for c in range(k):
        t, p, g = train[tc == c], test[pc == c], gen[gc == c]
        if len(g) <= min_syn:
            continue
        lp, lg = cdist(p, t).min(axis=1), cdist(g, t).min(axis=1)
        n, m = len(lp), len(lg)
        u = mannwhitneyu(lg, lp).statistic
        z.append((u - (n * m / 2 - 0.5)) / np.sqrt(n * m * (n + m + 1) / 12))
        w.append(n / len(test))
    return float(np.dot(w, z) / np.sum(w))


def test_c_t_matches_definition_with_kmeans_cells():
    rng = np.random.default_rng(2)
    centres = rng.normal(scale=4, size=(3, 8))
    draw = lambda n: centres[rng.integers(3, size=n)] + rng.normal(size=(n, 8))  # noqa: E731
    train, test, gen = draw(600), draw(300), draw(400)
    out = C.c_t(train, test, gen, cells=4, seed=0, block_rows=37)
    a = out["assignments"]
    ref = _c_t_reference(train, a["train"], test, a["test"], gen, a["synthetic"], 20)
    assert out["C_T"] == pytest.approx(ref, rel=1e-12)
    km = C.kmeans_cells(train, 4, seed=0)
    np.testing.assert_array_equal(a["test"], km.predict(test))
    assert out["n_cells"] == 4 and len(out["cells"]) == 4
    assert sum(c["n_synthetic"] for c in out["cells"]) == 400


def test_c_t_copying_negative_fresh_near_zero():
    rng = np.random.default_rng(3)
    train, test, fresh = (rng.normal(size=(n, 10)) for n in (1500, 600, 600))
    copies = train[rng.choice(1500, 600, replace=False)] + rng.normal(scale=0.05, size=(600, 10))
    fresh_ct = C.c_t(train, test, fresh, cells=5)["C_T"]
    copy_ct = C.c_t(train, test, copies, cells=5)["C_T"]
    assert abs(fresh_ct) < 2.5
    assert copy_ct < -10
    # an underfitting generator (too spread out) is positive
    assert C.c_t(train, test, 1.5 * fresh, cells=5)["C_T"] > 5


def test_c_t_bad_input():
    x = np.zeros((10, 2))
    with pytest.raises(InputError, match="cell labels"):
        C.c_t_from_cells(x, [0] * 9, x, [0] * 10, x, [0] * 10)
    with pytest.raises(InputError, match="cells must be"):
        C.c_t(x, x, x, cells=0)


# ---------------------------------------------------------------- demo world: copycat vs reference oracle


@pytest.fixture(scope="module")
def demo_features(tmp_path_factory):
    """Demo-encoder features (unit-normalised: the demo embedding is meant for cosine) of a demo world's
    train and test splits and of both calibration baselines prompted with the test reports, 2 seeds each."""
    from evaluators.demo_world import generate_demo_world
    from evaluators.encoders.registry import availability, load_encoder
    from evaluators.features import extract_features
    from evaluators.generators.baselines import CopycatGenerator, OracleGenerator
    from evaluators.imagesets import load_image_set

    name = "demo" if availability("demo").local else "pixels"
    root = tmp_path_factory.mktemp("copying")
    generate_demo_world(root, patients=160, seed=0, size=64)
    train, test = load_image_set(f"{root}@train"), load_image_set(f"{root}@test")
    prompts = list(test.prompts) * 2
    seeds = [0] * len(test) + [1] * len(test)
    enc = load_encoder(name)

    def feats(items):
        x = extract_features(items, enc, store_root=root / "cache", show_progress=False).features
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    out = {"train": feats(list(train.paths)), "test": feats(list(test.paths))}
    out["copycat"] = feats(CopycatGenerator(source=train).generate(prompts, seeds, height=64, width=64))
    out["reference-oracle"] = feats(OracleGenerator().generate(prompts, seeds, height=64, width=64))
    return out


def test_demo_copycat_and_oracle_separate(demo_features):
    f = demo_features
    auth = {g: C.authpct(f["train"], f[g]) for g in ("copycat", "reference-oracle")}
    ct = {g: C.c_t(f["train"], f["test"], f[g], cells=2)["C_T"] for g in ("copycat", "reference-oracle")}
    print(f"n_train={len(f['train'])} n_test={len(f['test'])} n_syn={len(f['copycat'])} AuthPct={auth} C_T={ct}")
    assert auth["copycat"] < 10 and auth["reference-oracle"] > 40
    assert ct["copycat"] < -3 and ct["copycat"] < ct["reference-oracle"] - 3


def test_authenticity_with_given_train_radii_is_the_same():
    from evaluators.metrics.copying import authenticity, train_radii

    rng = np.random.default_rng(3)
    t, g = rng.normal(size=(60, 5)), rng.normal(size=(25, 5))
    g[:5] = t[:5]  # exact copies: inauthentic either way
    a, b = authenticity(t, g), authenticity(t, g, train_radius=train_radii(t))
    assert a["AuthPct"] == b["AuthPct"] and (a["authentic"] == b["authentic"]).all()
    with pytest.raises(InputError, match="train_radius"):
        authenticity(t, g, train_radius=np.zeros(3))


def test_ct_heldout_leaves_out_training_patients():
    """C_T's held-out images must be other patients: a held-out study of a training patient sits as close to
    training as a copy (the NIH sample's valid/test splits share 139 of 400 images' patients with train)."""
    import pandas as pd

    from evaluators.imagesets import ImageSet
    from evaluators.privacy.data_copying import other_patients

    train = pd.DataFrame({"path": ["/t/a.png", "/t/b.png"], "patient_id": ["1", "2"]})
    held = ImageSet(pd.DataFrame({"path": ["/h/a.png", "/h/b.png", "/h/c.png"], "patient_id": ["1", "3", "4"]}),
                    name="held")
    kept, note = other_patients(held, train)
    assert kept.paths == ["/h/b.png", "/h/c.png"] and "1 image(s) of training patients left out" in note
    same = ImageSet(pd.DataFrame({"path": ["/h/a.png"], "patient_id": ["2"]}), name="same")
    none, why = other_patients(same, train)
    assert none is None and "--heldout" in why
    no_ids = ImageSet(pd.DataFrame({"path": ["/h/a.png", "/h/b.png"]}), name="no ids")
    kept, note = other_patients(no_ids, train)
    assert len(kept) == 2 and "patient ids missing" in note


def test_ct_heldout_leaves_out_images_that_are_also_synthetic(tmp_path):
    """A synthetic folder made of the reference's own test images (copied: other paths, same bytes) must not meet
    itself on C_T's held-out side."""
    import shutil

    import pandas as pd
    from PIL import Image

    from evaluators.imagesets import ImageSet
    from evaluators.privacy.data_copying import not_synthetic

    held_paths = []
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / f"h{i}.png")
        held_paths.append(str(tmp_path / f"h{i}.png"))
    (tmp_path / "syn").mkdir()
    shutil.copy(held_paths[1], tmp_path / "syn" / "copied.png")
    held = ImageSet(pd.DataFrame({"path": held_paths}), name="held")
    kept, note = not_synthetic(held, [str(tmp_path / "syn" / "copied.png")])
    assert kept.paths == [held_paths[0], held_paths[2]] and "1 image(s) that are also in the synthetic set" in note
    assert not_synthetic(held, [held_paths[0]])[1] == "; 1 image(s) that are also in the synthetic set left out"
    none, why = not_synthetic(held, held_paths)
    assert none is None and "--heldout" in why
    same, nothing = not_synthetic(held, [])
    assert same is held and nothing == ""
