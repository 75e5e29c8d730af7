"""``xrv-densenet``: torchxrayvision's DenseNet-121 ``densenet121-res224-all`` (1024-d + 18 pathologies).

Features are ``model.features2(x)`` (ReLU + global average pool of the last dense block, 1024-d).
"logits" are the classifier's raw outputs; "probs" what ``model(x)`` returns (sigmoid, then xrv's
operating-point calibration ``op_norm``, so 0.5 is each pathology's chosen threshold). Pathology names
are in the metadata. Preprocessing is xrv's documented one: ``xrv.datasets.normalize`` to
[-1024, 1024], ``XRayCenterCrop`` and ``XRayResizer(224)``.

Weights: torchxrayvision would download them from GitHub into ``~/.torchxrayvision/models_data/``.
The file is checked *before* the model is built, so nothing is downloaded offline. That file is a
pickled full model, which xrv's own loader reads with ``torch.load(weights_only=False)`` (a pickle
with a payload would run it). It is never given to xrv's loader here: :func:`read_state_dict` reads
it with ``torch.load(weights_only=True)``, allowing only the DenseNet's own module classes
(torchxrayvision's DenseNet blocks and the ``torch.nn`` layers it is made of; their state is set, no
other code runs), or reads a safetensors state dict; the tensors go into a freshly built
``xrv.models.DenseNet``. Anything else in the file is refused with a one-line :class:`InputError`.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import torch

from .. import settings
from ..settings import is_offline
from .base import Encoder, as_gray, library_versions
from .spec import Availability, EncoderSpec

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
    given = weights or settings.get(ENV)
    path = Path(given).expanduser() if given else default_dir() / FILENAME
    source = "--weights" if weights else (f"${ENV}" if given else "the torchxrayvision cache")
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file() and path.with_suffix(".safetensors").is_file():
        path = path.with_suffix(".safetensors")  # the same weights converted to safetensors
    if not path.is_file():
        return None, f"torchxrayvision weights {WEIGHTS} not found at {path} ({source})"
    if path.name != FILENAME and path.suffix != ".safetensors":
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
    if not weights and not settings.get(ENV) and not is_offline():
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


def _allowed_classes() -> list[type]:
    """The classes a pickled xrv DenseNet-121 is made of: its state is set on them, no other code runs."""
    import torchxrayvision as xrv
    from torch import nn

    return [xrv.models.DenseNet, xrv.models._DenseLayer, xrv.models._DenseBlock, xrv.models._Transition,
            nn.Sequential, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Linear, nn.Dropout]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The DenseNet's tensors from ``path`` (safetensors, a state dict, or xrv's pickled model), never
    running code from the file; :class:`InputError` (one line: the file and the safe formats) otherwise."""
    import pickle
    import warnings

    from ..checkpoints import (
        _PLAIN_GLOBALS,
        _is_safetensors,
        _pickle_globals,
        load_state_dict,
        unwrap_state_dict,
    )
    from ..errors import InputError

    path = Path(path)
    if path.suffix == ".safetensors" or _is_safetensors(path):
        return load_state_dict(path)
    safe = ("safetensors (`safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')`), "
            "a state dict saved with `torch.save(model.state_dict(), ...)`, or torchxrayvision's released file")
    try:
        with torch.serialization.safe_globals(_allowed_classes()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        names = [n for n in _pickle_globals(path) if not n.startswith(_PLAIN_GLOBALS)
                 and not n.startswith(("torchxrayvision.models.", "torch.nn.modules."))]
        what = f"refers to code that is not part of the DenseNet ({', '.join(names[:3])}), which is never run" \
            if names else "is not a weights file that can be read without running code"
        raise InputError(f"{path.name} ({ENV} / xrv cache) {what}; give {safe}.") from None
    except Exception as exc:  # truncated or garbage bytes
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path.name} ({ENV} / xrv cache) is not a readable weights file ({first}); give {safe}.") from None
    if isinstance(obj, torch.nn.Module):
        for mod in obj.modules():  # as xrv does for models saved by old PyTorch versions
            if not hasattr(mod, "_non_persistent_buffers_set"):
                mod._non_persistent_buffers_set = set()
        obj = obj.state_dict()
    return unwrap_state_dict(obj, source=path.name)


def build_model(state_dict: dict[str, torch.Tensor]):
    """torchxrayvision's DenseNet-121 (``densenet121-res224-all``'s labels, thresholds, resolution) with
    the given tensors; nothing is downloaded and xrv's own (pickle-trusting) loader is not used."""
    import torchxrayvision as xrv

    from ..errors import InputError

    info = xrv.models.model_urls[WEIGHTS]
    labels = list(info["labels"])
    sd = {k: v for k, v in state_dict.items() if k != "op_threshs"}
    model = xrv.models.DenseNet(num_classes=len(labels))
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "shape mismatch"
        raise InputError(f"The xrv weights do not fit torchxrayvision's DenseNet-121 with {len(labels)} outputs "
                         f"({first}); give the {WEIGHTS} file.") from None
    model.weights = WEIGHTS
    model.targets = labels
    model.pathologies = labels
    if "op_threshs" in info:
        model.op_threshs = torch.tensor(info["op_threshs"])
    if "input_resolution" in info:
        model.input_resolution = info["input_resolution"]
    return model.eval()


def load(weights: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> XrvEncoder:
    path, _why = locate(weights)
    if path is None:  # only reached online (check() refused otherwise): xrv's downloader fetches the file
        from torchxrayvision.models import get_weights

        with contextlib.redirect_stdout(io.StringIO()):  # xrv prints download hints
            path = Path(get_weights(WEIGHTS))
    model = build_model(read_state_dict(path))
    model.weights_filename_local = str(path)
    return XrvEncoder(model, path, device, dtype)


SPEC = EncoderSpec(
    name="xrv-densenet",
    description="torchxrayvision DenseNet-121 (densenet121-res224-all), 1024-d + 18 pathology outputs",
    loader=load,
    dim=1024,
    outputs=("features", "logits", "probs"),
    check=check,
)
