"""Training data for the utility classifier: images preloaded once, targets with a mask, a validation hold-out.

Images are resized once per run (evaluators.imageio.resize, the project's one resize) and kept in memory as
uint8, so an epoch is pure tensor work. Labels stay 4-valued until a policy turns them into targets; a
label column that is blank in every row of a set counts as *not annotated* by that set (NIH ChestX-ray14 never
annotates Fracture, Lung Opacity...): such entries are masked out of the loss and out of the metrics instead
of being counted as negatives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import jobs
from ..errors import InputError
from ..pathologies import N_LABELS, PATHOLOGIES, binarize

VALID_SPLIT_NAMES = ("valid", "val", "validation")
TRAIN_SPLIT_NAMES = ("train", "training")
TEST_SPLIT_NAMES = ("test", "testing")

# Grayscale input normalisation: the luminance mean/std of ImageNet (what timm's RGB weights summed into one
# input channel expect), used for random-init models too so the two are interchangeable.
GRAY_MEAN, GRAY_STD = 0.449, 0.226


@dataclass
class Preloaded:
    """One image set in memory: uint8 images [N, S, S], raw 4-valued labels [N, 14], grouping keys."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray  # patient (or prompt) per row: rows of one group never straddle train/validation
    splits: np.ndarray  # lower-case split name per row ('' when unknown)
    annotated: np.ndarray  # bool [N, 14]: the row's source set annotates this label at all

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx: np.ndarray) -> Preloaded:
        idx = np.asarray(idx, dtype=np.int64)
        return Preloaded(
            self.name,
            self.images[idx],
            self.labels[idx],
            self.groups[idx],
            self.splits[idx],
            self.annotated[idx],
        )


def _column(table: Any, name: str, n: int) -> np.ndarray:
    """A string column of the image-set table ('' for missing), or all '' when the column is absent."""
    if table is None or name not in getattr(table, "columns", ()):
        return np.full(n, "", dtype=object)
    col = table[name]
    out = np.array(["" if _is_blank(v) else str(v).strip() for v in col.tolist()], dtype=object)
    return out


def _is_blank(v: object) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in ("", "nan", "none")


def group_keys(table: Any, n: int) -> np.ndarray:
    """Patient id per row; else the prompt (synthetic images of one prompt are near-duplicates); else the row."""
    patients = _column(table, "patient_id", n)
    prompts = _column(table, "prompt", n)
    keys = []
    for i in range(n):
        if patients[i]:
            keys.append(f"patient:{patients[i]}")
        elif prompts[i]:
            keys.append(f"prompt:{prompts[i]}")
        else:
            keys.append(f"row:{i}")
    return np.array(keys, dtype=object)


def preload(
    image_set: Any,
    image_size: int,
    *,
    name: str = "images",
    progress: Callable[[dict], None] | None = None,
    show_bar: bool = True,
) -> Preloaded:
    """Read, resize and quantise every image of an ImageSet once (uint8 [N, S, S])."""
    n = len(image_set)
    if n == 0:
        raise InputError(f"Image set {name!r} has no images; check its path and split.")
    labels = np.asarray(image_set.labels, dtype=np.float32)
    if labels.shape != (n, N_LABELS):
        raise InputError(
            f"Image set {name!r}: expected labels of shape ({n}, {N_LABELS}), got {labels.shape}."
        )
    from ..imageio import resize, to_uint8

    images = np.empty((n, image_size, image_size), dtype=np.uint8)
    iterator: Sequence[int] | Any = range(n)
    if show_bar:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"loading {name} at {image_size}px", unit="img", leave=False)
    for i in iterator:
        jobs.tick(i, n, f"loading {name}") if progress is None else jobs.check()
        img = np.asarray(image_set.image(i), dtype=np.float32)
        if img.ndim == 3:  # tolerate [H, W, C]
            img = img.mean(axis=-1)
        if img.shape != (image_size, image_size):
            img = resize(img, image_size)
        images[i] = to_uint8(img)
        if progress is not None and (i + 1 == n or (i + 1) % 256 == 0):
            progress({"stage": "preload", "set": name, "done": i + 1, "total": n})
    table = getattr(image_set, "table", None)
    splits = np.array([s.lower() for s in _column(table, "split", n)], dtype=object)
    annotated = np.broadcast_to(~np.all(np.isnan(labels), axis=0)[None, :], labels.shape).copy()
    return Preloaded(name, images, labels, group_keys(table, n), splits, annotated)


def targets(data: Preloaded, policy: str) -> tuple[np.ndarray, np.ndarray]:
    """Binary targets [N, 14] and a 0/1 mask: masked = column not annotated by the set, or uncertain under 'ignore'."""
    y = binarize(data.labels, policy)
    mask = data.annotated & ~np.isnan(y)
    return np.nan_to_num(y, nan=0.0).astype(np.float32), mask.astype(np.float32)


def concat(parts: Sequence[Preloaded], name: str) -> Preloaded:
    """Concatenate sets ('real + synthetic'); each row keeps its own set's annotated-label mask."""
    if len(parts) == 1:
        return parts[0]
    return Preloaded(
        name,
        np.concatenate([p.images for p in parts]),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([np.array([f"{p.name}/{g}" for g in p.groups], dtype=object) for p in parts]),
        np.concatenate([p.splits for p in parts]),
        np.concatenate([p.annotated for p in parts]),
    )


def split_train_val(
    data: Preloaded, *, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Row indices for training and validation, and how validation was chosen.

    The set's own 'valid' rows when it has them; else a patient-disjoint hold-out of about ``val_fraction``.
    Rows of a 'test' split are never trained on.
    """
    splits = data.splits
    is_val = np.isin(splits, VALID_SPLIT_NAMES)
    is_test = np.isin(splits, TEST_SPLIT_NAMES)
    if is_val.any():
        train_idx = np.flatnonzero(~is_val & ~is_test)
        if len(train_idx) == 0:
            raise InputError(f"Training set {data.name!r} has only valid/test rows; give its train split.")
        return train_idx, np.flatnonzero(is_val), "valid split"
    candidates = np.flatnonzero(~is_test)
    if len(candidates) < 2:
        raise InputError(
            f"Training set {data.name!r} has {len(candidates)} usable image(s); at least 2 are needed "
            "(one to train on, one to validate)."
        )
    groups = data.groups[candidates]
    unique = np.array(sorted(set(groups.tolist())), dtype=object)
    rng = np.random.default_rng(seed)
    order = unique[rng.permutation(len(unique))]
    target = max(1, round(val_fraction * len(candidates)))
    val_groups: set[str] = set()
    count = 0
    sizes = {g: int(c) for g, c in zip(*np.unique(groups, return_counts=True))}
    for g in order[:-1]:  # always leave at least one group for training
        if count >= target:
            break
        val_groups.add(g)
        count += sizes[g]
    in_val = np.array([g in val_groups for g in groups], dtype=bool)
    how = "patient-disjoint hold-out" if any(str(g).startswith("patient:") for g in unique) else "hold-out"
    return candidates[~in_val], candidates[in_val], f"{how} ({count} of {len(candidates)} images)"


def fingerprint(*arrays: np.ndarray) -> str:
    """Short content hash of the data a run trains on (a resumed run must see the same data)."""
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str(a.shape).encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def class_names() -> list[str]:
    return list(PATHOLOGIES)
