"""What every encoder offers: CPU preprocessing, a batched forward pass, metadata and a cache key.

An encoder turns canonical images (``float32 [H, W]`` in ``[0, 1]``, see ``evaluators.imageio``) into
feature vectors. ``preprocess`` is a small picklable object (not a bound method), so DataLoader
workers receive it without the model. ``forward`` always returns float32 CPU tensors, whatever the
device and dtype, so the feature cache and the metrics never see half precision.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from .. import settings
from ..errors import InputError

VOLATILE_KEYS = ("weights_id", "weights_path", "library_versions", "device", "inference_graph")
"""Metadata fields that do not change the features (where the weights came from - their sha256 is what
counts -, library upgrades, which GPU, batch norm folded into the convolutions: same function, float rounding
apart)."""
PLAIN_ENV = "CHEXGEN_PLAIN_FORWARD"
"""Set to 1 to run every encoder's module as loaded (no batch-norm folding, no channels_last)."""

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
ENCODER_DTYPES = ("float32", "float16", "bfloat16")  # what the CLIs offer (half precision: CUDA only)


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """The project's one resize (``evaluators.imageio.resize``: PIL 'F' bicubic), or the same done locally."""
    try:
        from ..imageio import resize as _resize
    except ImportError:  # pragma: no cover - imageio is part of the engine; kept for partial checkouts
        from PIL import Image

        w, h = (size, size) if isinstance(size, int) else size
        arr = np.ascontiguousarray(img, dtype=np.float32)
        if arr.shape == (h, w):
            return arr.copy()
        out = Image.fromarray(arr).resize((w, h), resample=Image.Resampling.BICUBIC)
        return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)
    return _resize(img, size)


def as_gray(img: np.ndarray) -> np.ndarray:
    """Check the canonical image contract (2-D float in [0, 1]) and return it as float32."""
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise InputError(f"Encoders expect a 2-D gray image (float32 in [0, 1]); got shape {arr.shape}.")
    return np.clip(arr.astype(np.float32, copy=False), 0.0, 1.0)


def center_crop(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Central ``height x width`` window (as torchvision / transformers center_crop: floor offsets)."""
    h, w = img.shape
    top, left = max((h - height) // 2, 0), max((w - width) // 2, 0)
    return img[top : top + height, left : left + width]


def resize_shortest_edge(img: np.ndarray, edge: int) -> np.ndarray:
    """Resize so the shorter side is ``edge`` (aspect kept; the longer side as transformers rounds it: int())."""
    h, w = img.shape
    if h <= w:
        new_h, new_w = edge, int(edge * w / h)
    else:
        new_h, new_w = int(edge * h / w), edge
    return resize(img, (new_w, new_h))


def parse_dtype(dtype: str | torch.dtype, device: str) -> torch.dtype:
    """torch dtype for a name; half precision only on CUDA (CPU half would be slow and inexact)."""
    if isinstance(dtype, torch.dtype):
        out = dtype
    else:
        key = str(dtype).strip().lower().removeprefix("torch.")
        if key not in DTYPES:
            raise InputError(f"Unknown dtype {dtype!r}; use float32, float16 or bfloat16.")
        out = DTYPES[key]
    if out != torch.float32 and not str(device).startswith("cuda"):
        raise InputError(f"dtype {dtype!r} needs a CUDA device (got {device!r}); use float32 on CPU.")
    return out


def hf_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once at import)."""
    env = settings.get("HF_HUB_CACHE") or settings.get("HUGGINGFACE_HUB_CACHE")
    if env:
        return str(env)
    if settings.get("HF_HOME"):
        return str(settings.get("HF_HOME") / "hub")
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def library_versions(*names: str) -> dict[str, str]:
    """Installed versions of the libraries an encoder's numbers depend on (for the record)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"torch": torch.__version__}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


# --------------------------------------------------------------------------------------------------
# Weights hashes, cached next to the weights


def _sidecar_for(path: Path) -> Path:
    """Where the sha256 of ``path`` is cached: next to it, or under CHEXGEN_HOME when that is not possible."""
    real = path.resolve()
    in_hf_cache = any(part.startswith("models--") for part in real.parts)
    if not in_hf_cache and os.access(real.parent, os.W_OK):
        return real.with_name(real.name + ".sha256.json")
    from ..settings import subdir

    digest = hashlib.sha1(str(real).encode()).hexdigest()[:20]
    return subdir("weights-sha256") / f"{real.name}-{digest}.json"


def file_sha256(path: str | Path) -> str:
    """sha256 of a weights file, computed once and cached in a sidecar keyed by size and mtime."""
    path = Path(path)
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    sidecar = _sidecar_for(path)
    with contextlib.suppress(OSError, ValueError):
        cached = json.loads(sidecar.read_text())
        if {k: cached.get(k) for k in stamp} == stamp and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with contextlib.suppress(OSError):
        tmp = sidecar.with_name(sidecar.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**stamp, "sha256": digest, "file": path.name}))
        os.replace(tmp, sidecar)
    return digest


def files_sha256(paths: Iterable[str | Path]) -> str:
    """One sha256 for several files (a model folder): each file's name and hash, sorted, hashed again."""
    items = sorted((Path(p).name, file_sha256(p)) for p in paths)
    if len(items) == 1:
        return items[0][1]
    h = hashlib.sha256()
    for name, digest in items:
        h.update(f"{name}:{digest}\n".encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# The inference graph: the same function, cheaper


def _has_batchnorm(module: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in module.modules())


def _fold_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every eval-mode BatchNorm that follows a convolution into it (torch.fx), in place where possible.

    A module whose forward cannot be traced (input checks, shape-dependent branches) keeps its forward and has
    its children folded one by one, so one untraceable wrapper does not stop the folding below it.
    """
    from torch.fx.experimental.optimization import fuse

    try:
        return fuse(module, inplace=True)
    except Exception:  # torch.fx raises many types (TraceError, TypeError, ValueError from input checks)
        for name, child in module.named_children():
            if _has_batchnorm(child):
                setattr(module, name, _fold_batchnorm(child))
        return module


def inference_graph(model: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """(a copy of an eval-mode conv net made cheaper to run, what was done).

    Batch norm folded into the preceding convolutions and weights in channels_last: 1.7x (InceptionV3) to
    2-3x (the demo CNN) on a CPU for the same outputs up to float rounding (~1e-6 relative). The copy leaves
    ``model`` itself untouched (its attributes and state dict keys stay as loaded).
    """
    import copy

    net = copy.deepcopy(model).eval()
    done = []
    if _has_batchnorm(net):
        net = _fold_batchnorm(net)
        left = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
        done.append("batch norm folded into convolutions" + (f" ({left} left unfolded)" if left else ""))
    net = net.to(memory_format=torch.channels_last)
    done.append("channels_last")
    return net, ", ".join(done)


# --------------------------------------------------------------------------------------------------
# The encoder


class Encoder:
    """A loaded feature extractor. Subclasses set the attributes and implement :meth:`_forward`.

    Attributes: ``name``, ``dim`` (length of "features"), ``input_size`` (side of the model input),
    ``outputs`` (keys :meth:`forward` returns), ``device``, ``dtype`` (compute dtype),
    ``preprocess`` (picklable callable: ``float32 [H, W]`` -> tensor ``[C, H, W]``).
    """

    name: str = "encoder"
    dim: int = 0
    input_size: int = 0
    outputs: tuple[str, ...] = ("features",)
    feature_key: str = "features"  # what "features" is, in the model's own words (e.g. pooler_output)
    normalisation: str = ""
    weights_id: str = ""
    foldable: bool = False
    """True where ``_forward`` runs only ``self.net`` on 4-D images: the loaded conv net is then replaced, for
    inference, by :func:`inference_graph` (``self.model`` stays the module as loaded)."""
    preprocess_mode: str = "clean"
    """``clean`` (the encoder's own preprocessing) or ``chexgenbench`` (:mod:`.chexgenbench`); see :meth:`with_preprocess`."""

    def __init__(self, model: torch.nn.Module | None, preprocess: Callable[[np.ndarray], torch.Tensor], *,
                 device: str = "cpu", dtype: str | torch.dtype = "float32", weights_path: str | Path | None = None,
                 weights_files: Iterable[str | Path] = ()):
        self.device = str(device)
        self.dtype = parse_dtype(dtype, self.device)
        self.preprocess = preprocess
        self._clean_preprocess = preprocess
        self.weights_path = str(weights_path) if weights_path else ""
        self._weights_files = [Path(p) for p in weights_files]
        self._sha: str | None = None
        self.model = model
        self.net = model
        self.graph = "as loaded"
        if model is not None:
            model.eval()
            model.requires_grad_(False)
            model.to(self.device)
            if self.foldable and not settings.get(PLAIN_ENV):
                self.net, self.graph = inference_graph(model)

    # subclasses implement this on a batch already on the device
    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs for a preprocessed batch ``[B, C, H, W]``: float32 CPU tensors, "features" is ``[B, dim]``."""
        if batch.ndim != 4:
            raise InputError(f"{self.name}: expected a batch [B, C, H, W], got shape {tuple(batch.shape)}.")
        on_cuda = self.device.startswith("cuda")
        amp = (torch.autocast("cuda", dtype=self.dtype) if on_cuda and self.dtype != torch.float32
               else contextlib.nullcontext())
        batch = batch.to(self.device, non_blocking=on_cuda)
        if self.net is not self.model:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), amp:
            out = self._forward(batch)
        return {k: v.detach().float().cpu() for k, v in out.items()}

    __call__ = forward

    def weights_sha256(self) -> str:
        if self._sha is None:
            self._sha = files_sha256(self._weights_files) if self._weights_files else ""
        return self._sha

    def extra_metadata(self) -> dict:
        return {}

    def reference_preprocess(self):
        """The ``chexgenbench`` preprocessing object (encoders that have one override this)."""
        from .chexgenbench import resolve_mode

        resolve_mode("chexgenbench", self.name)  # raises the explanation
        raise NotImplementedError

    def with_preprocess(self, mode: str) -> Encoder:
        """This encoder with preprocessing ``mode`` (``clean``, ``chexgenbench`` or ``auto``): ``self`` when it already
        has it, else a shallow copy sharing the network. The mode is in :meth:`metadata` and the cache key."""
        from .chexgenbench import resolve_mode

        mode = resolve_mode(mode, self.name)
        if mode == self.preprocess_mode:
            return self
        twin = copy.copy(self)
        twin.preprocess = self._clean_preprocess if mode == "clean" else self.reference_preprocess()
        twin.preprocess_mode = mode
        return twin

    def libraries(self) -> dict[str, str]:
        return library_versions()

    def metadata(self) -> dict:
        """What produced the features: enough to tell two feature sets apart, and to reproduce them."""
        meta = {
            "name": self.name,
            "weights_id": self.weights_id,
            "weights_path": self.weights_path,
            "weights_sha256": self.weights_sha256(),
            "dim": self.dim,
            "input_size": self.input_size,
            "normalisation": self.normalisation,
            "feature_key": self.feature_key,
            "outputs": list(self.outputs),
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device,
            "inference_graph": self.graph,
            "library_versions": self.libraries(),
        }
        meta.update(self.extra_metadata())
        meta["preprocess"] = self.preprocess_mode
        if self.preprocess_mode != "clean":
            meta["preprocessing"] = self.preprocess.describe()
        return meta

    def cache_key(self) -> str:
        """Stable hash of the metadata without volatile fields: the folder name of the feature cache."""
        stable = {k: v for k, v in self.metadata().items() if k not in VOLATILE_KEYS}
        if stable.get("preprocess") == "clean":  # the historical chain keeps its key: caches and indexes stay valid
            del stable["preprocess"]
        digest = hashlib.sha256(json.dumps(stable, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"{self.name}-{digest}"

    def __repr__(self) -> str:
        return f"<Encoder {self.name} dim={self.dim} device={self.device} dtype={self.dtype}>"


class PoolerEncoder(Encoder):
    """A transformers vision backbone whose ``pooler_output`` is the feature (RadDino, DINOv2); subclasses set
    ``self._pre``, the summary of their preprocessing."""

    _pre: dict

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"features": self.model(pixel_values=batch).pooler_output}

    def extra_metadata(self) -> dict:
        return {"preprocessing": self._pre, "architecture": type(self.model).__name__}

    def libraries(self) -> dict[str, str]:
        return library_versions("transformers", "huggingface_hub", "pillow")
