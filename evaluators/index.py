"""The reference index: features, nearest-neighbour search, per-pathology statistics and a UMAP map.

Built once per (reference set, encoder). Memorisation search looks at *every* training image through
it (CheXGenBench compares a synthetic image only with the one real image that shares its prompt), and
per-pathology fidelity takes its real-side statistics from it, so no metric encodes the real set again.

Folder layout (``--out DIR``)::

    index.json        encoder metadata, set description, counts, options
    metadata.csv      one row per indexed image: path, prompt, patient_id, ..., 14 label columns
    features.npy      raw encoder features [N, D] float32 (what FID/KID/PRDC use)
    faiss.index       inner-product index over L2-normalised features (cosine similarity)
    stats.npz         mean and covariance (float64) of all features and of each pathology's positives
    umap.pkl          fitted UMAP reducer (written by this code; only ever loaded from a local index folder)
    umap.npy          its 2-D coordinates for the indexed images
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import settings
from .errors import InputError
from .features import Progress, extract_features
from .pathologies import INDEX as LABEL_INDEX
from .pathologies import PATHOLOGIES, positives

INDEX_TYPES = ("flat", "ivf", "hnsw")
UMAP_FIT_MAX = 20_000  # UMAP is fitted on at most this many points; the rest are placed with transform


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _mean_cov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x64 = np.asarray(x, dtype=np.float64)
    mu = x64.mean(axis=0)
    if len(x64) < 2:
        return mu, np.zeros((x64.shape[1], x64.shape[1]))
    xc = x64 - mu
    return mu, (xc.T @ xc) / (len(x64) - 1)


def _faiss_index(normed: np.ndarray, index_type: str, seed: int):
    import faiss

    d = normed.shape[1]
    if index_type == "flat":
        index = faiss.IndexFlatIP(d)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 128
    elif index_type == "ivf":
        nlist = max(1, min(4096, int(np.sqrt(len(normed)))))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        sample = normed[rng.choice(len(normed), size=min(len(normed), 256 * nlist), replace=False)]
        index.train(sample)
        index.nprobe = min(nlist, 16)
    else:
        raise InputError(f"Unknown index type {index_type!r}; use one of {', '.join(INDEX_TYPES)}.")
    index.add(normed)
    return index


@dataclass
class Neighbour:
    row: int
    path: str
    similarity: float
    patient_id: str | None
    labels: list[str]
    prompt: str

    def as_dict(self) -> dict:
        return {
            "row": self.row,
            "path": self.path,
            "similarity": self.similarity,
            "patient_id": self.patient_id,
            "labels": self.labels,
            "prompt": self.prompt,
        }


def top1_similarity(neighbours: list[list[Neighbour]]) -> np.ndarray:
    """Each query's similarity to its nearest indexed image (NaN where it has none)."""
    return np.array([nb[0].similarity if nb else np.nan for nb in neighbours], dtype=np.float64)


class ReferenceIndex:
    """A built reference index, loaded from its folder."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        info_path = self.dir / "index.json"
        if not info_path.is_file():
            raise InputError(
                f"{self.dir} is not a reference index (no index.json). Build one with "
                f"`python -m evaluators index --reference SET --encoder NAME --out {self.dir}`."
            )
        self.info = json.loads(info_path.read_text())
        self.meta = pd.read_csv(self.dir / "metadata.csv", dtype={"patient_id": str, "study_id": str})
        self.features = np.load(self.dir / "features.npy", mmap_mode="r")
        self._faiss = None
        self._stats = None
        self._umap = None
        self._coords = None

    # -- basic facts ------------------------------------------------------------------------------
    @property
    def encoder(self) -> str:
        return self.info["encoder"]["name"]

    @property
    def encoder_key(self) -> str:
        return self.info["encoder_key"]

    def __len__(self) -> int:
        return len(self.meta)

    @property
    def labels(self) -> np.ndarray:
        return self.meta[list(PATHOLOGIES)].to_numpy(dtype=np.float32)

    @property
    def normed(self) -> np.ndarray:
        return l2_normalise(np.asarray(self.features))

    # -- nearest neighbours -------------------------------------------------------------------------
    @property
    def faiss(self):
        if self._faiss is None:
            import faiss

            self._faiss = faiss.read_index(str(self.dir / "faiss.index"))
        return self._faiss

    def search(self, features: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarities [Q, k] and row indices [Q, k] of the k nearest indexed images."""
        q = l2_normalise(np.atleast_2d(features))
        if q.shape[1] != self.features.shape[1]:
            raise InputError(
                f"Query features have {q.shape[1]} dimensions but the index at {self.dir} was built with "
                f"encoder {self.encoder!r} ({self.features.shape[1]} dimensions); encode with the same encoder."
            )
        k = min(k, len(self))
        sims, idx = self.faiss.search(q, k)
        return sims, idx

    def neighbours(self, features: np.ndarray, k: int = 5) -> list[list[Neighbour]]:
        """For each query, its k nearest indexed images with their metadata, most similar first."""
        return self.neighbours_from(*self.search(features, k))

    def neighbours_from(self, sims: np.ndarray, idx: np.ndarray) -> list[list[Neighbour]]:
        """:meth:`neighbours` from a :meth:`search` result already at hand (no second search)."""
        labels = self.labels
        out = []
        for srow, irow in zip(sims, idx):
            row_out = []
            for s, i in zip(srow.tolist(), irow.tolist()):
                if i < 0:
                    continue
                m = self.meta.iloc[i]
                pid = m.get("patient_id")
                row_out.append(
                    Neighbour(
                        row=int(i),
                        path=str(m["path"]),
                        similarity=float(s),
                        patient_id=None if pd.isna(pid) else str(pid),
                        labels=positives(labels[i]),
                        prompt="" if pd.isna(m.get("prompt")) else str(m.get("prompt")),
                    )
                )
            out.append(row_out)
        return out

    # -- statistics ---------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, np.ndarray]:
        if self._stats is None:
            with np.load(self.dir / "stats.npz", allow_pickle=False) as data:
                self._stats = {k: data[k] for k in data.files}
        return self._stats

    def feature_stats(self, pathology: str | None = None) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(mean, covariance, n) of all indexed features, or of one pathology's positives (None if absent)."""
        key = "all" if pathology is None else f"p{LABEL_INDEX[pathology]}"
        if f"{key}_mu" not in self.stats:
            return None
        return self.stats[f"{key}_mu"], self.stats[f"{key}_sigma"], int(self.stats[f"{key}_n"])

    # -- UMAP -------------------------------------------------------------------------------------------
    @property
    def has_umap(self) -> bool:
        return (self.dir / "umap.npy").is_file()

    @property
    def umap_coords(self) -> np.ndarray:
        if self._coords is None:
            if not self.has_umap:
                raise InputError(f"The index at {self.dir} was built without a UMAP map; rebuild it without --no-umap.")
            self._coords = np.load(self.dir / "umap.npy")
        return self._coords

    def umap_transform(self, features: np.ndarray) -> np.ndarray:
        """2-D map coordinates for new images' features (placed among the reference points)."""
        if self._umap is None:
            if not (self.dir / "umap.pkl").is_file():
                raise InputError(f"The index at {self.dir} has no fitted UMAP reducer; rebuild it without --no-umap.")
            with open(self.dir / "umap.pkl", "rb") as fh:
                self._umap = pickle.load(fh)  # written by build_index into a local index folder
        return np.asarray(self._umap.transform(l2_normalise(np.atleast_2d(features))), dtype=np.float32)


def _check_index_encoder(encoder) -> None:
    """Refuse encoders whose features serve one metric only (``radiomics``: FRD) as an index's encoder."""
    from .metrics.registry import claimed_encoders

    name = getattr(encoder, "name", encoder)
    if name in claimed_encoders():
        raise InputError(
            f"The {name!r} encoder's features serve FRD only (raw radiomic values: cosine neighbours, the embedding "
            "map and the memorisation search mean nothing in them); build the index with another encoder (raddino, "
            "xrv-densenet, demo...) and add the encoder to fidelity runs (--encoder radiomics) for FRD."
        )


def build_index(
    image_set,
    encoder,
    out_dir: str | Path,
    *,
    index_type: str = "flat",
    umap: bool = True,
    umap_neighbors: int = 15,
    seed: int = 0,
    batch_size: int = 64,
    num_workers: int | None = None,
    skip_bad: bool = False,
    progress: Progress | None = None,
    show_progress: bool = True,
) -> ReferenceIndex | None:
    """Encode ``image_set`` (through the feature cache) and write a reference index to ``out_dir``.

    Under a multi-process launch every process encodes its share; only the main process writes the
    index (the others return None).
    """
    if index_type not in INDEX_TYPES:
        raise InputError(f"Unknown index type {index_type!r}; use one of {', '.join(INDEX_TYPES)}.")
    if len(image_set) == 0:
        raise InputError(f"The reference set {image_set.name!r} has no images; nothing to index.")
    _check_index_encoder(encoder)
    t0 = time.perf_counter()
    feats = extract_features(
        list(image_set.paths),
        encoder,
        batch_size=batch_size,
        num_workers=num_workers,
        progress=progress,
        skip_bad=skip_bad,
        show_progress=show_progress,
    )
    if settings.get("RANK") != 0:
        return None
    t_features = time.perf_counter() - t0
    table = image_set.table.iloc[feats.index].reset_index(drop=True)
    x = feats.features.astype(np.float32)
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    table.to_csv(tmp / "metadata.csv", index=False)
    np.save(tmp / "features.npy", x)
    normed = l2_normalise(x)
    if progress:
        progress(0, 3, "building nearest-neighbour index")
    import faiss

    faiss.write_index(_faiss_index(normed, index_type, seed), str(tmp / "faiss.index"))

    stats: dict[str, np.ndarray] = {}
    mu, sigma = _mean_cov(x)
    stats.update(all_mu=mu, all_sigma=sigma, all_n=np.asarray(len(x)))
    labels = table[list(PATHOLOGIES)].to_numpy(dtype=np.float32)
    for p in PATHOLOGIES:
        pos = labels[:, LABEL_INDEX[p]] == 1.0
        if pos.sum() >= 2:
            mu, sigma = _mean_cov(x[pos])
            j = LABEL_INDEX[p]
            stats.update({f"p{j}_mu": mu, f"p{j}_sigma": sigma, f"p{j}_n": np.asarray(int(pos.sum()))})
    np.savez(tmp / "stats.npz", **stats)

    t_umap = 0.0
    if umap:
        if progress:
            progress(1, 3, "fitting the UMAP map")
        t1 = time.perf_counter()
        coords = _fit_umap(normed, tmp, neighbors=umap_neighbors, seed=seed)
        np.save(tmp / "umap.npy", coords)
        t_umap = time.perf_counter() - t1

    info = {
        "encoder": feats.metadata,
        "encoder_key": encoder.cache_key(),
        "reference": {
            "name": getattr(image_set, "name", ""),
            "source_format": getattr(image_set, "source_format", ""),
            "root": str(getattr(image_set, "root", "") or ""),
            "patient_ids_source": getattr(image_set, "patient_ids_source", None),
        },
        "n": len(x),
        "dim": int(x.shape[1]),
        "index_type": index_type,
        "umap": {"fitted": umap, "n_neighbors": umap_neighbors, "metric": "cosine", "seed": seed},
        "skipped": [str(b) for b in feats.skipped],
        "timings_s": {
            "features": round(t_features, 3),
            "umap": round(t_umap, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
        "forward_images": feats.forward_images,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    (tmp / "index.json").write_text(json.dumps(info, indent=2, default=str))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    if progress:
        progress(3, 3, "index ready")
    return ReferenceIndex(out)


def index_key(image_set, encoder) -> str:
    """The one cache key of a reference index: the encoder (with its preprocessing) and every image's path, size and
    modification time, plus the patient ids when any are given (they decide the patient-disjoint calibration, so
    a CSV that gains a patient_id column gets a fresh index; its features come from the feature cache)."""
    from .filehashes import hash_files

    h = hashlib.sha256(encoder.cache_key().encode())
    hash_files(h, image_set.paths)
    pids = image_set.patient_ids
    if any(p is not None for p in pids):
        h.update(("patients\0" + "\0".join("" if p is None else p for p in pids)).encode())
    return f"privacy-{encoder.name}-{h.hexdigest()[:16]}"


def patient_ids(table) -> list[str] | None:
    """Patient ids of a table as strings, or None when any is missing."""
    if "patient_id" not in table.columns:
        return None
    col = table["patient_id"]
    if col.isna().any() or (col.astype(str).str.strip() == "").any():
        return None
    return col.astype(str).tolist()


def cached_index(image_set, encoder, *, umap: bool = False, progress: Progress | None = None) -> ReferenceIndex:
    """The reference index of ``image_set`` under ``CHEXGEN_HOME/indexes/<index_key>``, built on first use; with
    ``umap`` a map is added to an index built without one. The app, the fidelity and the privacy commands all come
    here, so one set encoded once has one index."""
    from .settings import subdir

    folder = subdir("indexes") / index_key(image_set, encoder)
    if (folder / "index.json").is_file():
        index = ReferenceIndex(folder)
        # an index cached before the key held the ids may hold other ids: rebuilt
        if len(index) == len(image_set) and patient_ids(index.meta) == patient_ids(image_set.table):
            if umap and not index.has_umap:
                add_umap(index, progress=progress)
            return index
    return build_index(image_set, encoder, folder, umap=umap, show_progress=progress is None, progress=progress)


def add_umap(index: ReferenceIndex, *, neighbors: int = 15, seed: int = 0, progress: Progress | None = None) -> None:
    """Fit the UMAP map of an index built without one (the map files are written last, so a reader never sees a
    reducer without coordinates)."""
    if progress:
        progress(1, 3, "fitting the UMAP map")
    t0 = time.perf_counter()
    coords = _fit_umap(index.normed, index.dir, neighbors=neighbors, seed=seed)
    np.save(index.dir / "umap.npy.partial.npy", coords)
    (index.dir / "umap.npy.partial.npy").replace(index.dir / "umap.npy")
    info = dict(index.info)
    info["umap"] = {"fitted": True, "n_neighbors": neighbors, "metric": "cosine", "seed": seed}
    info.setdefault("timings_s", {})["umap"] = round(time.perf_counter() - t0, 3)
    (index.dir / "index.json").write_text(json.dumps(info, indent=2, default=str))
    index.info = info
    if progress:
        progress(3, 3, "index ready")


def _fit_umap(normed: np.ndarray, folder: Path, *, neighbors: int, seed: int) -> np.ndarray:
    import umap

    n = len(normed)
    reducer = umap.UMAP(
        n_neighbors=max(2, min(neighbors, n - 1)),
        min_dist=0.1,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
    )
    if n > UMAP_FIT_MAX:
        rng = np.random.default_rng(seed)
        fit_rows = np.sort(rng.choice(n, size=UMAP_FIT_MAX, replace=False))
        reducer.fit(normed[fit_rows])
        coords = np.asarray(reducer.transform(normed), dtype=np.float32)
        coords[fit_rows] = reducer.embedding_
    else:
        coords = np.asarray(reducer.fit_transform(normed), dtype=np.float32)
    with open(folder / "umap.pkl", "wb") as fh:
        pickle.dump(reducer, fh)
    return coords


def query_index(index: ReferenceIndex, items: Sequence, encoder, *, k: int = 5, **kwargs) -> list[list[Neighbour]]:
    """Nearest indexed images for images (paths or arrays), encoded through the cache."""
    if encoder.cache_key() != index.encoder_key:
        raise InputError(
            f"The index at {index.dir} was built with encoder {index.encoder!r} "
            f"(key {index.encoder_key}); load that encoder to query it."
        )
    feats = extract_features(list(items), encoder, **kwargs)
    return index.neighbours(feats.features, k)
