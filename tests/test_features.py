"""Feature cache: one forward pass per image ever, resumable after a kill, and the reference index."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import uuid

import numpy as np
import pandas as pd
import pytest
import torch

from evaluators import features as F
from evaluators.errors import InputError
from evaluators.pathologies import PATHOLOGIES


class CountingEncoder:
    """A deterministic stand-in encoder (4x4 average pool of the image) that counts forward passes."""

    def __init__(self, key: str | None = None, dim_side: int = 4):
        self.name = "counting"
        self.side = dim_side
        self.dim = dim_side * dim_side
        self.device = "cpu"
        self.key = key or uuid.uuid4().hex
        self.forwarded = 0

    def preprocess(self, img: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None, None]
        return torch.nn.functional.adaptive_avg_pool2d(t, self.side)[0]

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        self.forwarded += batch.shape[0]
        flat = batch.flatten(1)
        return {"features": flat, "logits": flat[:, :3] * 2}

    def metadata(self) -> dict:
        return {"name": self.name, "key": self.key}

    def cache_key(self) -> str:
        return self.key


def _images(n: int, seed: int = 0, size: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((size, size), dtype=np.float32) for _ in range(n)]


def test_second_run_makes_no_forward_pass(tmp_path):
    enc = CountingEncoder()
    imgs = _images(40)
    first = F.extract_features(imgs, enc, batch_size=8, store_root=tmp_path, show_progress=False)
    assert first.forward_images == 40 and enc.forwarded == 40
    again = F.extract_features(imgs, enc, batch_size=8, store_root=tmp_path, show_progress=False)
    assert again.forward_images == 0 and enc.forwarded == 40
    np.testing.assert_array_equal(first.features, again.features)
    np.testing.assert_array_equal(first.outputs["logits"], again.outputs["logits"])
    # A fresh store object (new process) reads the same features from disk.
    fresh = F.extract_features(imgs, CountingEncoder(enc.key), store_root=tmp_path, show_progress=False)
    assert fresh.forward_images == 0
    np.testing.assert_array_equal(first.features, fresh.features)


def test_features_follow_input_order_and_duplicates(tmp_path):
    enc = CountingEncoder()
    imgs = _images(10)
    order = [3, 1, 3, 0, 9]
    fs = F.extract_features([imgs[i] for i in order], enc, store_root=tmp_path, show_progress=False)
    assert enc.forwarded == 4  # the duplicate is encoded once
    expected = torch.stack([enc.preprocess(imgs[i]) for i in order]).flatten(1).numpy()
    np.testing.assert_allclose(fs.features, expected, atol=1e-6)


def test_features_do_not_depend_on_batch(tmp_path):
    imgs = _images(21)
    a = F.extract_features(imgs, CountingEncoder(), batch_size=1, store_root=tmp_path / "a", show_progress=False)
    b = F.extract_features(imgs, CountingEncoder(), batch_size=16, store_root=tmp_path / "b", show_progress=False)
    np.testing.assert_allclose(a.features, b.features, atol=1e-6)


def test_killed_run_resumes_from_stored_shards(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "CHUNK", 10)
    enc = CountingEncoder()
    imgs = _images(50)

    def die_after_20(done, total, desc):
        if done >= 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        F.extract_features(imgs, enc, batch_size=10, store_root=tmp_path, progress=die_after_20, show_progress=False)
    assert enc.forwarded == 20
    resumed = F.extract_features(imgs, enc, batch_size=10, store_root=tmp_path, show_progress=False)
    assert resumed.forward_images == 30  # only what the killed run had not stored
    full = F.extract_features(imgs, CountingEncoder(), store_root=tmp_path / "clean", show_progress=False)
    np.testing.assert_array_equal(resumed.features, full.features)


def test_truncated_shard_is_ignored(tmp_path):
    enc = CountingEncoder()
    imgs = _images(8)
    F.extract_features(imgs, enc, store_root=tmp_path, show_progress=False)
    (tmp_path / enc.key / "shard-broken.npz").write_bytes(b"PK\x03\x04 cut short")
    again = F.extract_features(imgs, enc, store_root=tmp_path, show_progress=False)
    assert again.forward_images == 0


def test_hashes_are_content_hashes(tmp_path):
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc")
    assert F.source_hashes([p]) == [hashlib.sha256(b"abc").hexdigest()]
    a = np.zeros((4, 4), np.uint8)
    assert F.array_hash(a) == F.array_hash(a.copy())
    assert F.array_hash(a) != F.array_hash(a.astype(np.float32))
    with pytest.raises(InputError, match=r"missing\.png"):
        F.source_hashes([tmp_path / "missing.png"])


# ------------------------------------------------------------------------------------------------
# Reference index


class _Set:
    """The slice of the ImageSet interface the index uses."""

    def __init__(self, table: pd.DataFrame, name: str = "toy"):
        self.table = table
        self.name = name
        self.source_format = "test"
        self.root = None

    @property
    def paths(self):
        return self.table["path"].tolist()

    def __len__(self):
        return len(self.table)


def _png_set(tmp_path, n=60, seed=0) -> _Set:
    from PIL import Image

    rng = np.random.default_rng(seed)
    rows = []
    (tmp_path / "imgs").mkdir()
    for i in range(n):
        arr = (rng.random((16, 16)) * 255).astype(np.uint8)
        path = tmp_path / "imgs" / f"{i:03d}.png"
        Image.fromarray(arr, mode="L").save(path)
        labels = {p: float(rng.random() < 0.3) for p in PATHOLOGIES}
        rows.append({"path": str(path), "prompt": f"study {i}", "patient_id": str(i // 2), **labels})
    return _Set(pd.DataFrame(rows))


def test_index_query_returns_itself_first(tmp_path):
    from evaluators.index import ReferenceIndex, build_index

    ref = _png_set(tmp_path)
    enc = CountingEncoder()
    built = build_index(ref, enc, tmp_path / "idx", umap=False, show_progress=False)
    loaded = ReferenceIndex(tmp_path / "idx")
    assert len(loaded) == len(built) == 60
    sims, idx = loaded.search(np.asarray(loaded.features), k=3)
    np.testing.assert_array_equal(idx[:, 0], np.arange(60))
    assert sims[:, 0].min() >= 0.999
    nb = loaded.neighbours(np.asarray(loaded.features[:1]), k=2)[0][0]
    assert nb.path == ref.paths[0] and nb.patient_id == "0" and nb.prompt == "study 0"
    # Flat search agrees with brute-force cosine similarity.
    normed = loaded.normed
    brute = np.argsort(-(normed[5:6] @ normed.T)[0])[:3]
    np.testing.assert_array_equal(loaded.search(normed[5:6], 3)[1][0], brute)
    # A second build reuses the cache: no forward pass.
    before = enc.forwarded
    build_index(ref, enc, tmp_path / "idx2", umap=False, show_progress=False)
    assert enc.forwarded == before


def test_index_pathology_stats_match_numpy(tmp_path):
    from evaluators.index import build_index

    ref = _png_set(tmp_path)
    idx = build_index(ref, CountingEncoder(), tmp_path / "idx", umap=False, show_progress=False)
    x = np.asarray(idx.features, dtype=np.float64)
    mu, sigma, _n = idx.feature_stats()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-10)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-8, atol=1e-12)
    pos = ref.table["Cardiomegaly"].to_numpy() == 1
    mu_p, sigma_p, n_p = idx.feature_stats("Cardiomegaly")
    assert n_p == pos.sum()
    np.testing.assert_allclose(mu_p, x[pos].mean(0), rtol=1e-10)
    np.testing.assert_allclose(sigma_p, np.cov(x[pos], rowvar=False), rtol=1e-8, atol=1e-12)


def test_index_rejects_features_of_another_encoder(tmp_path):
    from evaluators.index import build_index

    idx = build_index(_png_set(tmp_path), CountingEncoder(), tmp_path / "idx", umap=False, show_progress=False)
    with pytest.raises(InputError, match="dimensions"):
        idx.search(np.zeros((1, 5), np.float32))


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_exact_copies(tmp_path, kind):
    from evaluators.index import build_index

    idx = build_index(_png_set(tmp_path, n=80), CountingEncoder(), tmp_path / kind, index_type=kind, umap=False,
                      show_progress=False)
    _sims, rows = idx.search(np.asarray(idx.features[:20]), k=1)
    assert (rows[:, 0] == np.arange(20)).mean() >= 0.9


@pytest.mark.slow
def test_umap_transform_lands_near_fitted_coordinates(tmp_path):
    from evaluators.index import build_index

    # Three well-separated clusters, so the map is stable.
    rng = np.random.default_rng(0)
    from PIL import Image

    rows = []
    (tmp_path / "imgs").mkdir()
    for i in range(90):
        base = np.zeros((16, 16))
        c = i % 3
        base[c * 5 : c * 5 + 5, :] = 1.0
        arr = np.clip(base * 0.8 + rng.random((16, 16)) * 0.2, 0, 1)
        path = tmp_path / "imgs" / f"{i:03d}.png"
        Image.fromarray((arr * 255).astype(np.uint8), mode="L").save(path)
        rows.append({"path": str(path), "prompt": "", "patient_id": str(i), **{p: 0.0 for p in PATHOLOGIES}})
    idx = build_index(_Set(pd.DataFrame(rows)), CountingEncoder(), tmp_path / "idx", umap=True, show_progress=False)
    coords = idx.umap_coords
    placed = idx.umap_transform(np.asarray(idx.features))
    spread = np.ptp(coords, axis=0).max()
    err = np.linalg.norm(placed - coords, axis=1)
    assert np.median(err) < 0.1 * spread
    # Each re-placed point is closer to its own cluster's centre than to the others'.
    labels = np.arange(90) % 3
    centres = np.stack([coords[labels == c].mean(0) for c in range(3)])
    nearest = np.argmin(((placed[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).mean() >= 0.95


@pytest.mark.slow
def test_two_processes_give_the_single_process_result(tmp_path):
    """Sharded extraction under torchrun (gloo, 2 CPU processes) equals one process."""
    script = tmp_path / "shard.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, numpy as np
            sys.path.insert(0, {str(tmp_path)!r}); sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent.parent)!r})
            from tests.test_features import CountingEncoder, _images
            from evaluators.features import extract_features
            enc = CountingEncoder(key="shared-key")
            fs = extract_features(_images(30), enc, batch_size=4, store_root=__import__('pathlib').Path({str(tmp_path / 'store')!r}), show_progress=False)
            import os
            np.save({str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.npy", fs.features)
            open({str(tmp_path)!r} + f"/forwarded{{os.environ['RANK']}}.txt", "w").write(str(enc.forwarded))
            """
        )
    )
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    counts = sorted(int((tmp_path / f"forwarded{r}.txt").read_text()) for r in (0, 1))  # files: stdout interleaves
    assert counts == [15, 15]  # each process encoded its half
    single = F.extract_features(_images(30), CountingEncoder(), store_root=tmp_path / "single", show_progress=False)
    for r in (0, 1):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{r}.npy"), single.features)


def test_loader_workers_leave_the_forward_pass_its_cores(monkeypatch):
    import torch

    from evaluators.features import loader_workers

    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert loader_workers(100, on_cuda=True) == 0  # small sets never pay the workers' start-up
    assert loader_workers(1000, on_cuda=True) == 4
    assert loader_workers(1000, on_cuda=False) == 0  # every core runs the forward pass
    monkeypatch.setattr(torch, "get_num_threads", lambda: 6)
    assert loader_workers(1000, on_cuda=False) == 2


def test_a_cache_folder_mixing_feature_shapes_is_a_clear_error_naming_it(tmp_path):
    """Two encoder settings written under one key (a stale or hand-copied cache) would make the stacked features
    fail deep in numpy; the error names the folder and the fix instead."""
    from evaluators.errors import InputError
    from evaluators.features import FeatureStore

    store = FeatureStore("enc-key", root=tmp_path)
    store.write(["a", "b"], {"features": np.zeros((2, 398), np.float32)})
    store.write(["c"], {"features": np.zeros((1, 2), np.float32)})
    assert store.read(["a", "b"])["features"].shape == (2, 398)
    with pytest.raises(InputError, match=r"holds 'features' of different shapes .* Delete that folder") as err:
        store.read(["a", "c"])
    assert str(tmp_path / "enc-key") in str(err.value)
