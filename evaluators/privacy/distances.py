"""Distances between a generated image and the training image of the same prompt (CheXGenBench protocol).

The protocol: for each training prompt, several images are generated (one per seed); each is compared with
the training image of that prompt, and the mean and the minimum over seeds are reported per prompt.

Done right here, unlike the reference code:

- every image becomes float32 in [0, 1] *before* subtracting (subtracting uint8 arrays wraps around:
  5 - 10 = 251), so ``d(a, b) == d(b, a)`` and black vs white is the largest distance;
- both images are resized to one common size with the project's one resize (PIL ``F`` bicubic), and
- each generated image is compared with the real one (the reference compared the last generated
  image for every seed).

Pixel distance ``rmse`` is CheXGenBench's ``||a - b|| / sqrt(#pixels)`` (0 = identical, 1 = black vs
white); ``mse`` is its square; ``l2`` the plain Euclidean norm. Latent distances take feature vectors
(e.g. RadDino ``pooler_output``): ``rmse`` is CheXGenBench's ``||u - v|| / sqrt(dim)``, also ``l2`` and
``cosine`` (1 - cosine similarity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError

PIXEL_KINDS = ("rmse", "mse", "l2")
LATENT_KINDS = ("rmse", "l2", "cosine")


def as_gray01(img: object, *, name: str = "image") -> np.ndarray:
    """A 2-D float32 array in [0, 1] from a grayscale or RGB(A) array or PIL image.

    Integer images are scaled by their type's maximum (uint8 / 255, uint16 / 65535); RGB is averaged
    over channels (identical to the gray value for the replicated-gray images X-ray models produce);
    float images must already lie in [0, 1].
    """
    if hasattr(img, "mode") and hasattr(img, "size") and not isinstance(img, np.ndarray):
        img = np.asarray(img)
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        arr = arr[..., :3]
    elif arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InputError(f"{name}: expected a 2-D grayscale or H x W x 3 image, got shape {arr.shape}.")
    if arr.dtype == bool:
        out = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min < 0:
            raise InputError(
                f"{name}: signed integer pixels ({arr.dtype}) are ambiguous; give uint8/uint16 or float in [0, 1]."
            )
        out = arr.astype(np.float32) / np.float32(info.max)
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise InputError(f"{name}: float image has NaN or infinite pixels.")
        lo, hi = float(out.min()), float(out.max())
        if lo < -1e-4 or hi > 1 + 1e-4:
            raise InputError(
                f"{name}: float pixels must lie in [0, 1] (found {lo:.3g}..{hi:.3g}); divide by 255 first?"
            )
        out = np.clip(out, 0.0, 1.0)
    else:
        raise InputError(f"{name}: unsupported pixel type {arr.dtype}.")
    if out.ndim == 3:
        out = out.mean(axis=-1, dtype=np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


def _pil_resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.float32))  # 2-D float32 -> mode "F"
    return np.asarray(pil.resize((hw[1], hw[0]), Image.Resampling.BICUBIC), dtype=np.float32)


def resize_to(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize a 2-D float image to ``size`` (int: square; (H, W)) with the project's one resize.

    Uses ``evaluators.imageio.resize`` (PIL ``F`` bicubic) when present, else the same operation here;
    the result is clipped to [0, 1] (bicubic overshoots at edges).
    """
    hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if img.shape[:2] == hw:
        return img.astype(np.float32, copy=False)
    try:
        from ..imageio import resize as project_resize
    except ImportError:  # the engine's image module absent: the same operation, done here
        out = _pil_resize(img, hw)
    else:
        out = np.asarray(project_resize(img, (hw[1], hw[0])), dtype=np.float32)  # PIL order (W, H)
    return np.clip(out, 0.0, 1.0)


def _common(a: object, b: object, size: int | tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    x, y = as_gray01(a, name="first image"), as_gray01(b, name="second image")
    if size is None:
        if x.shape == y.shape:
            return x, y
        size = (min(x.shape[0], y.shape[0]), min(x.shape[1], y.shape[1]))
    return resize_to(x, size), resize_to(y, size)


def pixel_distance(
    a: object, b: object, *, size: int | tuple[int, int] | None = None, kind: str = "rmse"
) -> float:
    """Distance between two images after both are float32 in [0, 1] and the same size.

    ``size``: the common size (int or (H, W)); None keeps equal shapes as they are and otherwise
    resizes both to the smaller height and width.
    """
    if kind not in PIXEL_KINDS:
        raise InputError(f"Unknown pixel distance {kind!r}; use one of {PIXEL_KINDS}.")
    x, y = _common(a, b, size)
    diff = (x - y).astype(np.float64)
    sq = float(np.sum(diff * diff))
    if kind == "l2":
        return float(np.sqrt(sq))
    mse = sq / diff.size
    return mse if kind == "mse" else float(np.sqrt(mse))


def pixel_distances(
    real: object,
    generated: Sequence[object],
    *,
    size: int | tuple[int, int] | None = None,
    kind: str = "rmse",
) -> np.ndarray:
    """Distance of each generated image (one per seed) to the real image: shape [len(generated)]."""
    x = as_gray01(real, name="real image")
    return np.array([pixel_distance(x, g, size=size, kind=kind) for g in generated], dtype=np.float64)


def _vectors(u: object, name: str) -> np.ndarray:
    arr = np.asarray(u, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None]
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"{name}: expected a feature vector or an N x D matrix, got shape {np.shape(u)}.")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: features contain NaN or infinite values.")
    return arr


def latent_distances(u: object, v: object, *, kind: str = "rmse") -> np.ndarray:
    """Row-wise distances between feature vectors: u [N, D] (or [D]) against v [N, D] (or [D], broadcast).

    Larger dimensions (e.g. [N, 1, D] pooled outputs) are flattened per row.
    """
    if kind not in LATENT_KINDS:
        raise InputError(f"Unknown latent distance {kind!r}; use one of {LATENT_KINDS}.")
    a, b = _vectors(u, "first features"), _vectors(v, "second features")
    if a.shape[1] != b.shape[1] or (a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0])):
        raise InputError(
            f"Feature shapes differ: {a.shape} vs {b.shape}; both must come from the same encoder."
        )
    if kind == "cosine":
        na = np.linalg.norm(a, axis=1)
        nb = np.linalg.norm(b, axis=1)
        if np.any(na == 0) or np.any(nb == 0):
            raise InputError("Cosine distance is undefined for an all-zero feature vector.")
        return 1.0 - np.sum(a * b, axis=1) / (na * nb)
    d = np.linalg.norm(a - b, axis=1)
    return d / np.sqrt(a.shape[1]) if kind == "rmse" else d


def latent_distance(u: object, v: object, *, kind: str = "rmse") -> float:
    """Distance between two feature vectors (see :func:`latent_distances`)."""
    return float(latent_distances(u, v, kind=kind)[0])


def over_seeds(distances: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Mean and minimum distance over the seeds of one prompt (the closest seed is the privacy risk)."""
    d = np.asarray(distances, dtype=np.float64).ravel()
    if d.size == 0:
        raise InputError("No distances to summarise: the prompt has no generated images.")
    return {"mean": float(d.mean()), "min": float(d.min()), "n_seeds": int(d.size)}


def per_prompt_distances(
    prompts: Sequence[str],
    real_images: Sequence[object],
    generated: Sequence[Sequence[object]],
    *,
    size: int | tuple[int, int] | None = None,
    kind: str = "rmse",
    real_features: object | None = None,
    generated_features: Sequence[object] | None = None,
    latent_kind: str = "rmse",
):
    """One row per prompt: mean and min pixel distance over its seeds (and latent, when features are given).

    ``generated[i]`` holds the images generated for ``prompts[i]`` (one per seed);
    ``real_features[i]`` / ``generated_features[i]`` (optional) are the matching feature vectors.
    Returns a pandas DataFrame with CheXGenBench's column names.
    """
    import pandas as pd

    if not (len(prompts) == len(real_images) == len(generated)):
        raise InputError(
            f"prompts ({len(prompts)}), real images ({len(real_images)}) and generated lists "
            f"({len(generated)}) must have the same length."
        )
    rows = []
    for i, prompt in enumerate(prompts):
        pix = over_seeds(pixel_distances(real_images[i], generated[i], size=size, kind=kind))
        row = {
            "Prompt": prompt,
            "Mean_pixel_distance": pix["mean"],
            "Min_pixel_distance": pix["min"],
            "n_seeds": pix["n_seeds"],
        }
        if real_features is not None and generated_features is not None:
            lat = over_seeds(
                latent_distances(generated_features[i], np.asarray(real_features)[i], kind=latent_kind)
            )
            row["Mean_latent_distance"] = lat["mean"]
            row["Min_latent_distance"] = lat["min"]
        rows.append(row)
    return pd.DataFrame(rows)
