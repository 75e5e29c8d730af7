"""``xrv-densenet``: torchxrayvision's DenseNet-121 ``densenet121-res224-all`` (1024-d + 18 pathologies).

Features are ``model.features2(x)`` (ReLU + global average pool of the last dense block, 1024-d).
"logits" are the classifier's raw outputs; "probs" what ``model(x)`` returns (sigmoid, then xrv's
operating-point calibration ``op_norm``, so 0.5 is each pathology's chosen threshold). Pathology names
are in the metadata. Preprocessing is xrv's documented one: ``xrv.datasets.normalize`` to
[-1024, 1024], ``XRayCenterCrop`` and ``XRayResizer(224)``.

Weights: torchxrayvision would download them from GitHub into ``~/.torchxrayvision/models_data/``.
The file is checked *before* the model is built, so nothing is downloaded offline. That file is a
pickled full model which xrv loads with ``torch.load(weights_only=False)`` (it can run code): it is
only loaded from xrv's own cache folder or from a path the user names explicitly (``--weights`` /
``$CHEXGEN_XRV_WEIGHTS``).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from ..settings import is_offline
from .base import Encoder, as_gray, library_versions
from .registry import Availability, EncoderSpec

WEIGHTS = "densenet121-res224-all"
FILENAME = "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt"
ENV = "CHEXGEN_XRV_WEIGHTS"
SIZE = 224


def default_dir() -> Path:
    """torchxrayvision's cache folder (``~/.torchxrayvision/models_data/``)."""
    try:
        from torchxrayvision.utils import get_cache_dir

        return Path(get_cache_dir())
    except ImportError:
        return Path("~/.torchxrayvision/models_data").expanduser()


def how_to_provide() -> str:
    return (f"pip install torchxrayvision, then put {FILENAME} (torchxrayvision's {WEIGHTS} release file) in "
            f"{default_dir()}, or pass --weights FILE_OR_DIR, or set {ENV}")


def locate(weights: str | Path | None = None) -> tuple[Path | None, str]:
    given = weights or os.environ.get(ENV)
    path = Path(given).expanduser() if given else default_dir() / FILENAME
    source = "--weights" if weights else (f"${ENV}" if given else "the torchxrayvision cache")
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        return None, f"torchxrayvision weights {WEIGHTS} not found at {path} ({source})"
    if path.name != FILENAME:
        return None, f"{path} ({source}) must be named {FILENAME} (torchxrayvision loads it by that name)"
    return path, f"{source} {path}"


def check(weights: str | Path | None = None) -> Availability:
    try:
        import torchxrayvision  # noqa: F401
    except ImportError:
        return Availability(False, "torchxrayvision is not installed", "pip install torchxrayvision")
    path, why = locate(weights)
    if path is not None:
        return Availability(True, f"weights from {why}")
    if not weights and not os.environ.get(ENV) and not is_offline():
        return Availability(
            True, f"{why}; torchxrayvision will download it on first use (network allowed)", download=True
        )
    return Availability(False, why, how_to_provide())


class XrvPreprocess:
    """float32 [H, W] in [0, 1] -> [1, 224, 224] in [-1024, 1024] (xrv normalize, center crop, resize)."""

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        import torchxrayvision as xrv

        x = (2.0 * as_gray(img) - 1.0) * 1024.0  # == xrv.datasets.normalize(img * maxval, maxval)
        x = xrv.datasets.XRayCenterCrop()(x[None])
        x = xrv.datasets.XRayResizer(SIZE)(x)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


class XrvEncoder(Encoder):
    name = "xrv-densenet"
    dim = 1024
    input_size = SIZE
    outputs = ("features", "logits", "probs")
    feature_key = "features2 (1024); logits = classifier; probs = sigmoid + op_norm"
    normalisation = "xrv.datasets.normalize: (2x - 1) * 1024, XRayCenterCrop, XRayResizer(224, skimage)"

    def __init__(self, model, path: Path, device: str, dtype: str):
        super().__init__(model, XrvPreprocess(), device=device, dtype=dtype, weights_path=path, weights_files=[path])
        self.weights_id = f"torchxrayvision:{WEIGHTS}"
        self.pathologies = list(model.pathologies)

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        from torchxrayvision.models import op_norm

        # == model.features2(batch) at 224 px, without its print-once resolution / range warnings
        feats = torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.model.features(batch)), 1).flatten(1)
        logits = self.model.classifier(feats)
        probs = torch.sigmoid(logits.float())
        if getattr(self.model, "op_threshs", None) is not None:
            probs = op_norm(probs, self.model.op_threshs.to(probs.device))
        return {"features": feats, "logits": logits, "probs": probs}

    def extra_metadata(self) -> dict:
        return {"pathologies": self.pathologies}

    def libraries(self) -> dict[str, str]:
        return library_versions("torchxrayvision", "scikit-image")


def load(weights: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> XrvEncoder:
    import torchxrayvision as xrv

    path, _why = locate(weights)
    cache_dir = str(path.parent) if path is not None else None  # None only online: xrv downloads it
    with contextlib.redirect_stdout(io.StringIO()):  # xrv prints download hints and resize warnings
        model = xrv.models.DenseNet(weights=WEIGHTS, cache_dir=cache_dir)
    path = Path(model.weights_filename_local)
    return XrvEncoder(model, path, device, dtype)


SPEC = EncoderSpec(
    name="xrv-densenet",
    description="torchxrayvision DenseNet-121 (densenet121-res224-all), 1024-d + 18 pathology outputs",
    loader=load,
    dim=1024,
    outputs=("features", "logits", "probs"),
    check=check,
)
