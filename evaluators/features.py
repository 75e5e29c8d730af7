"""The feature cache: every image is encoded once per (content hash, encoder, weights, preprocessing).

The preprocessing mode (``clean`` / ``chexgenbench``, :mod:`evaluators.encoders.chexgenbench`) is part of the
encoder's cache key, so features of one mode are never read for the other.

Features live under ``CHEXGEN_HOME/features/<encoder cache key>/`` as ``.npz`` shards, each holding the
content hashes of its images and one array per encoder output ("features", "logits", ...). A shard is
written atomically after every chunk, so a run killed half-way keeps what it finished and a rerun
encodes only what is missing. A rerun over the same images makes no forward pass at all.

With several processes (``accelerate launch`` / ``torchrun``), each process encodes its share of the
missing images into its own shards; after a barrier every process reads the full result from the
cache, so the gathered features equal a single-process run.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import jobs, settings
from .errors import BadFile, InputError
from .settings import subdir

Progress = Callable[[int, int, str], None]
"""progress(done, total, description): called as batches finish (the UI turns it into a progress bar)."""

CHUNK = 512  # images per shard: what a killed run can lose at most


@dataclass
class FeatureSet:
    """Encoder outputs for an ordered list of images (row i belongs to image i)."""

    encoder: str
    outputs: dict[str, np.ndarray]
    hashes: list[str]
    metadata: dict = field(default_factory=dict)
    skipped: list[BadFile] = field(default_factory=list)
    forward_images: int = 0  # images that needed an encoder pass in this call (0 on a warm cache)
    index: np.ndarray | None = None  # row i came from input item index[i] (differs only when files were skipped)

    @property
    def features(self) -> np.ndarray:
        return self.outputs["features"]

    def __len__(self) -> int:
        return len(self.hashes)

    def subset(self, index: np.ndarray | Sequence[int]) -> FeatureSet:
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return FeatureSet(
            encoder=self.encoder,
            outputs={k: v[idx] for k, v in self.outputs.items()},
            hashes=[self.hashes[i] for i in idx.tolist()],
            metadata=self.metadata,
            index=None if self.index is None else self.index[idx],
        )


# --------------------------------------------------------------------------------------------------
# Content hashes


def array_hash(img: np.ndarray) -> str:
    """sha256 of an in-memory image (dtype, shape and bytes): the cache key of a generated image."""
    arr = np.ascontiguousarray(img)
    h = hashlib.sha256()
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


ImageSource = str | Path | np.ndarray


def source_hashes(items: Sequence[ImageSource]) -> list[str]:
    """Cache key of each item: :func:`array_hash` for arrays, the file's sha256 for paths (remembered per folder,
    so that unchanged files are not read again: :mod:`evaluators.filehashes`)."""
    from .filehashes import file_hashes

    files = [i for i, it in enumerate(items) if not isinstance(it, np.ndarray)]
    out = [array_hash(it) if isinstance(it, np.ndarray) else "" for it in items]
    for i, h in zip(files, file_hashes([items[i] for i in files]), strict=True):
        out[i] = h
    return out


# --------------------------------------------------------------------------------------------------
# The shard store


class FeatureStore:
    """On-disk shards of one encoder's outputs, keyed by image content hash."""

    def __init__(self, encoder_key: str, root: Path | None = None):
        self.dir = (root or subdir("features")) / encoder_key
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[Path, int]] | None = None
        self._arrays: dict[Path, dict[str, np.ndarray]] = {}

    def _scan(self) -> dict[str, tuple[Path, int]]:
        rows: dict[str, tuple[Path, int]] = {}
        for shard in sorted(self.dir.glob("shard-*.npz")):
            try:
                with np.load(shard, allow_pickle=False) as data:
                    hashes = data["hashes"].tolist()
            except Exception:  # a shard cut short by a kill: ignore it, its images get re-encoded
                continue
            for i, h in enumerate(hashes):
                rows.setdefault(h, (shard, i))
        return rows

    def refresh(self) -> None:
        with self._lock:
            self._rows = self._scan()

    @property
    def rows(self) -> dict[str, tuple[Path, int]]:
        if self._rows is None:
            self.refresh()
        assert self._rows is not None
        return self._rows

    def missing(self, hashes: Sequence[str]) -> list[str]:
        rows = self.rows
        return [h for h in dict.fromkeys(hashes) if h not in rows]

    def write(self, hashes: Sequence[str], outputs: dict[str, np.ndarray]) -> Path:
        """Write one shard atomically (temp file then rename)."""
        name = f"shard-{uuid.uuid4().hex}.npz"
        tmp = self.dir / f".tmp-{name}"
        with open(tmp, "wb") as fh:
            np.savez(fh, hashes=np.asarray(list(hashes)), **outputs)
        os.replace(tmp, self.dir / name)
        with self._lock:
            if self._rows is not None:
                for i, h in enumerate(hashes):
                    self._rows.setdefault(h, (self.dir / name, i))
        return self.dir / name

    def _shard(self, path: Path) -> dict[str, np.ndarray]:
        if path not in self._arrays:
            with np.load(path, allow_pickle=False) as data:
                self._arrays[path] = {k: data[k] for k in data.files if k != "hashes"}
        return self._arrays[path]

    def read(self, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        """Stack the stored outputs for these hashes, in order (all must be present)."""
        rows = self.rows
        first = self._shard(rows[hashes[0]][0]) if hashes else {}
        out = {k: np.empty((len(hashes), *v.shape[1:]), dtype=v.dtype) for k, v in first.items()}
        for j, h in enumerate(hashes):
            shard, i = rows[h]
            arrays = self._shard(shard)
            for k in out:
                if k not in arrays or arrays[k].shape[1:] != out[k].shape[1:]:
                    raise InputError(
                        f"The feature cache {self.dir} holds {k!r} of different shapes ({shard.name}: "
                        f"{arrays[k].shape[1:] if k in arrays else 'absent'}, others: {out[k].shape[1:]}): it was "
                        "written by different encoder settings under one key. Delete that folder; its images are "
                        "re-encoded on the next run.")
                out[k][j] = arrays[k][i]
        return out

    def write_metadata(self, metadata: dict) -> None:
        path = self.dir / "encoder.json"
        if not path.exists():
            path.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str))


# --------------------------------------------------------------------------------------------------
# Extraction


class _Images(torch.utils.data.Dataset):
    """Reads and preprocesses images in DataLoader workers; a bad file yields None and is reported."""

    def __init__(self, items: Sequence[ImageSource], preprocess: Callable):
        self.items = items
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        item = self.items[i]
        try:
            if getattr(self.preprocess, "reads_source", False):  # e.g. the chexgenbench chain opens files with PIL
                return i, self.preprocess(item), None
            if isinstance(item, np.ndarray):
                img = _as_float_gray(item)
            else:
                from .imageio import read_image

                img = read_image(item)
            return i, self.preprocess(img), None
        except InputError as exc:
            return i, None, str(exc)


def _as_float_gray(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3].mean(axis=-1) if arr.shape[-1] in (3, 4) else arr[..., 0]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def _describe(item: ImageSource, i: int) -> str:
    return f"array #{i}" if isinstance(item, np.ndarray) else str(item)


def _collate(batch):
    idx = [b[0] for b in batch if b[1] is not None]
    tensors = [b[1] for b in batch if b[1] is not None]
    errors = [(b[0], b[2]) for b in batch if b[1] is None]
    return idx, (torch.stack(tensors) if tensors else None), errors


def loader_workers(n_images: int, on_cuda: bool) -> int:
    """DataLoader worker processes for decoding ``n_images``.

    On a GPU the forward pass leaves the CPU free, so up to 4 workers decode ahead. On the CPU the
    forward pass already uses ``torch.get_num_threads()`` cores: workers only help on cores beyond
    those; on a 2-core machine they made the forward pass 2-3x slower (threads pre-empted), so
    decoding runs in the main process there. Small sets never pay the workers' start-up.
    """
    if n_images <= 256:
        return 0
    cores = os.cpu_count() or 1
    spare = cores if on_cuda else cores - torch.get_num_threads()
    return max(0, min(4, spare))


def _dist_state():
    """accelerate's PartialState when several processes were launched, else None."""
    if settings.get("WORLD_SIZE") <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def extract_features(
    items: Sequence[ImageSource],
    encoder,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: Progress | None = None,
    store_root: Path | None = None,
    skip_bad: bool = False,
    show_progress: bool = True,
) -> FeatureSet:
    """Features of ``items`` (paths or arrays) from the cache, encoding only what is missing.

    ``encoder`` is an :class:`evaluators.encoders.base.Encoder`. Returns every output the encoder has, in
    the order of ``items``. Unreadable files raise :class:`InputError` naming the file, or with
    ``skip_bad`` are dropped from the result and listed in ``FeatureSet.skipped``.
    """
    from tqdm.auto import tqdm

    store = FeatureStore(encoder.cache_key(), store_root)
    store.write_metadata(encoder.metadata())
    hashes = source_hashes(items)
    first_of = {}
    for i, h in enumerate(hashes):
        first_of.setdefault(h, i)
    todo_hashes = store.missing(hashes)
    todo = [first_of[h] for h in todo_hashes]

    state = _dist_state()
    if state is not None and state.num_processes > 1:
        todo = todo[state.process_index :: state.num_processes]

    bad: dict[int, str] = {}
    forward_images = 0
    if todo:
        on_cuda = str(getattr(encoder, "device", "cpu")).startswith("cuda")
        workers = num_workers if num_workers is not None else loader_workers(len(todo), on_cuda)
        loader = torch.utils.data.DataLoader(
            _Images([items[i] for i in todo], encoder.preprocess),
            batch_size=batch_size,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=on_cuda,
        )
        bar = tqdm(total=len(todo), desc=f"encoding ({encoder.name})", disable=not show_progress, leave=False)
        pending_h: list[str] = []
        pending: dict[str, list[np.ndarray]] = {}
        done = 0
        for local_idx, batch, errors in loader:
            for li, msg in errors:
                bad[todo[li]] = msg
            if batch is not None:
                jobs.check()  # a cancelled job stops between batches (what is stored so far is kept)
                out = encoder.forward(batch)
                forward_images += len(local_idx)
                for k, v in out.items():
                    pending.setdefault(k, []).append(v.detach().float().cpu().numpy())
                pending_h.extend(hashes[todo[li]] for li in local_idx)
            if len(pending_h) >= CHUNK:  # store before reporting, so a kill loses at most one chunk
                store.write(pending_h, {k: np.concatenate(v) for k, v in pending.items()})
                pending_h, pending = [], {}
            done += len(local_idx) + len(errors)
            bar.update(len(local_idx) + len(errors))
            if progress:
                progress(done, len(todo), f"encoding with {encoder.name}")
            jobs.tick(done, len(todo), f"encoding with {encoder.name}")
        if pending_h:
            store.write(pending_h, {k: np.concatenate(v) for k, v in pending.items()})
        bar.close()

    if state is not None and state.num_processes > 1:
        bad_all: list[dict] = []
        from accelerate.utils import gather_object

        bad_all = gather_object([bad])
        bad = {k: v for d in bad_all for k, v in d.items()}
        state.wait_for_everyone()
        store.refresh()

    skipped: list[BadFile] = []
    if bad:
        if not skip_bad:
            first = min(bad)
            raise InputError(
                f"{bad[first]} ({len(bad)} unreadable image(s) in all; pass skip_bad / --skip-bad to skip and list them)."
            )
        skipped = [BadFile(_describe(items[i], i), m) for i, m in sorted(bad.items())]
    keep = [i for i in range(len(items)) if i not in bad and hashes[i] in store.rows]
    kept_hashes = [hashes[i] for i in keep]
    outputs = store.read(kept_hashes) if kept_hashes else {}
    return FeatureSet(
        encoder=encoder.name,
        outputs=outputs,
        hashes=kept_hashes,
        metadata=encoder.metadata(),
        skipped=skipped,
        forward_images=forward_images,
        index=np.asarray(keep, dtype=np.int64),
    )


def set_features(image_set, encoder, **kwargs) -> FeatureSet:
    """Features for every image of an :class:`ImageSet`, in its order."""
    return extract_features(list(image_set.paths), encoder, **kwargs)
