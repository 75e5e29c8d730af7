"""``inception``: the FID InceptionV3 of torch-fidelity / torchmetrics (2048-d pool features + logits).

The network is torch-fidelity's ``FeatureExtractorInceptionV3`` (a port of the TensorFlow FID graph),
with the weights file ``weights-inception-2015-12-05-6726825d.pth``. torch-fidelity downloads that
file by URL; here the state dict is read from a local file with ``torch.load(weights_only=True)`` and
handed to the constructor, so no download is ever attempted offline.

Inputs follow CheXGenBench: the image is resized to 299x299 and quantised to uint8 RGB before the
network (which then does its own TF1-style bilinear resize - a no-op at 299 - and scales to [-1, 1]).
"features" is the 2048-d pool ("2048"); "logits" is "logits_unbiased" (1008 classes, no bias),
what torchmetrics' Inception Score uses.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from .. import settings
from ..settings import is_offline
from .base import Encoder, as_gray, library_versions, resize
from .spec import Availability, EncoderSpec

FILENAME = "weights-inception-2015-12-05-6726825d.pth"
URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{FILENAME}"
SHA256_PREFIX = "6726825d"
ENV = "CHEXGEN_INCEPTION_WEIGHTS"
SIZE = 299
FEATURES = ("2048", "logits_unbiased")
_LOCK = threading.Lock()


def default_path() -> Path:
    """Where torch-fidelity / torch.hub keep the file: ``torch.hub.get_dir()/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FILENAME


def how_to_provide() -> str:
    return (f"copy {FILENAME} (from {URL}) to {default_path()}, or pass --weights FILE, or set {ENV}=FILE")


def locate(weights: str | Path | None = None) -> tuple[Path | None, str]:
    given = weights or settings.get(ENV)
    path = Path(given).expanduser() if given else default_path()
    source = "--weights" if weights else (f"${ENV}" if given else "the torch hub cache")
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        return None, f"Inception FID weights not found at {path} ({source})"
    return path, f"{source} {path}"


def check(weights: str | Path | None = None) -> Availability:
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        return Availability(False, "torch-fidelity is not installed", "pip install torch-fidelity")
    path, why = locate(weights)
    if path is not None:
        return Availability(True, f"weights from {why}")
    if not weights and not settings.get(ENV) and not is_offline():
        return Availability(True, f"{why}; it will be downloaded on first use (network allowed)", download=True)
    return Availability(False, why, how_to_provide())


def _to_uint8(img: np.ndarray) -> np.ndarray:
    try:
        from ..imageio import to_uint8
    except ImportError:  # pragma: no cover
        return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return to_uint8(img)


class InceptionPreprocess:
    """float32 [H, W] -> uint8 [3, 299, 299] (bicubic resize, then 8 bits, gray copied to RGB)."""

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        u8 = _to_uint8(resize(as_gray(img), SIZE))
        return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(u8, (3, SIZE, SIZE))))


def build_model(state_dict: dict) -> torch.nn.Module:
    """torch-fidelity's InceptionV3 with the given state dict (its downloader replaced, never called)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    def _no_download(*_args, **_kwargs):
        return state_dict

    with _LOCK:
        original = fe.load_state_dict_from_url
        fe.load_state_dict_from_url = _no_download
        try:
            return fe.FeatureExtractorInceptionV3("inception-v3-compat", list(FEATURES))
        finally:
            fe.load_state_dict_from_url = original


class InceptionEncoder(Encoder):
    name = "inception"
    dim = 2048
    input_size = SIZE
    outputs = ("features", "logits")
    foldable = True
    feature_key = "2048 (pool3); logits = logits_unbiased (1008)"
    normalisation = "uint8 RGB 299x299, then (x - 128) / 128 inside the network"

    def __init__(self, model, path: Path, device: str, dtype: str):
        super().__init__(model, InceptionPreprocess(), device=device, dtype=dtype, weights_path=path,
                         weights_files=[path])
        self.weights_id = FILENAME

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if batch.dtype != torch.uint8:
            raise TypeError("the inception encoder takes uint8 batches from its own preprocess")
        pool, logits = self.net(batch)
        return {"features": pool, "logits": logits}

    def reference_preprocess(self):
        """chexgenbench mode: the reference's uint8 299 px tensor (PIL RGB, bilinear, truncation)."""
        from .chexgenbench import InceptionReference

        return InceptionReference()

    def extra_metadata(self) -> dict:
        return {"official_weights": self.weights_sha256().startswith(SHA256_PREFIX),
                "preprocessing": "PIL bicubic (float) to 299x299, uint8, gray->RGB"}

    def libraries(self) -> dict[str, str]:
        return library_versions("torch-fidelity", "pillow")


def load(weights: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> InceptionEncoder:
    path, _why = locate(weights)
    if path is None:  # only reached online (check() refused otherwise)
        path = default_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(URL, str(path), hash_prefix=SHA256_PREFIX)
    from ..checkpoints import load_state_dict

    state_dict = load_state_dict(path)  # safetensors or weights_only=True; a pickle with code: InputError
    return InceptionEncoder(build_model(state_dict), path, device, dtype)


SPEC = EncoderSpec(
    name="inception",
    description="InceptionV3 FID network (torch-fidelity weights), 2048-d pool + 1008 logits",
    loader=load,
    dim=2048,
    outputs=("features", "logits"),
    check=check,
)
