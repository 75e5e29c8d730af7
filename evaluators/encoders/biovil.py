"""``biovil``: the BioViL-T image encoder (``microsoft/BiomedVLP-BioViL-T``), 128-d joint image-text space.

CheXGenBench measures image-text alignment with BioViL-T (``health_multimodal``). The network code
comes from the ``hi-ml-multimodal`` package (import name ``health_multimodal``) when it is installed;
its weights file ``biovil_t_image_model_proj_size_128.pt`` (a plain state dict) is read locally with
``torch.load(weights_only=True)``. "features" is the L2-normalised ``projected_global_embedding``, as
the package's ``ImageInferenceEngine.get_projected_global_embedding`` returns it.
Preprocessing as the package's inference transform: shorter side to 512, center crop 448, gray
repeated to 3 channels, no normalisation (resize: the project's bicubic; the package uses bilinear).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from .. import settings
from ..settings import is_offline
from .base import Encoder, as_gray, center_crop, hf_cache_dir, library_versions, resize_shortest_edge
from .spec import Availability, EncoderSpec

HF_ID = "microsoft/BiomedVLP-BioViL-T"
FILENAME = "biovil_t_image_model_proj_size_128.pt"
REVISION = "v1.0"
ENV = "CHEXGEN_BIOVIL_WEIGHTS"
RESIZE, CROP, JOINT = 512, 448, 128
INSTALL = "pip install hi-ml-multimodal (imports as health_multimodal)"


def _cached() -> Path | None:
    """The weights in the Hugging Face cache or where health_multimodal downloads them (the temp dir)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        for rev in (REVISION, None):
            hit = try_to_load_from_cache(HF_ID, FILENAME, cache_dir=hf_cache_dir(), revision=rev)
            if isinstance(hit, str) and Path(hit).is_file():
                return Path(hit)
    except Exception:
        pass
    tmp = Path(tempfile.gettempdir()) / FILENAME
    return tmp if tmp.is_file() else None


def locate(weights: str | Path | None = None) -> tuple[Path | None, str]:
    given = weights or settings.get(ENV)
    if given:
        path = Path(given).expanduser()
        path = path / FILENAME if path.is_dir() else path
        source = "--weights" if weights else f"${ENV}"
        return (path, f"{source} {path}") if path.is_file() else (None, f"{FILENAME} not found at {path} ({source})")
    hit = _cached()
    if hit is not None:
        return hit, f"cache {hit}"
    return None, f"{HF_ID}/{FILENAME} is not in the Hugging Face cache nor in {tempfile.gettempdir()}"


def _package_missing() -> str | None:
    try:
        from health_multimodal.image.model.model import ImageModel  # noqa: F401
    except ImportError as exc:
        return f"the hi-ml-multimodal package is not importable ({exc})"
    return None


def check(weights: str | Path | None = None) -> Availability:
    missing = _package_missing()
    if missing:
        return Availability(False, missing, INSTALL)
    path, why = locate(weights)
    if path is not None:
        return Availability(True, f"weights from {why}")
    how = (f"put {FILENAME} from {HF_ID} (revision {REVISION}) in the Hugging Face cache (`hf download {HF_ID} "
           f"{FILENAME} --revision {REVISION}`), or pass --weights FILE, or set {ENV}=FILE")
    if not weights and not settings.get(ENV) and not is_offline():
        return Availability(True, f"{why}; it will be downloaded from the Hub on first use (network allowed)", download=True)
    return Availability(False, why, how)


class BiovilPreprocess:
    """float32 [H, W] -> [3, 448, 448] in [0, 1]."""

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        x = center_crop(resize_shortest_edge(as_gray(img), RESIZE), CROP, CROP)
        return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(x, (3, *x.shape))))


def build_model(state_dict: dict | None) -> torch.nn.Module:
    """BioViL-T's ImageModel (ResNet-50 multi-image encoder + 128-d projector) with ``state_dict``."""
    from health_multimodal.image.model.model import ImageModel
    from health_multimodal.image.model.types import ImageEncoderType

    model = ImageModel(img_encoder_type=ImageEncoderType.RESNET50_MULTI_IMAGE, joint_feature_size=JOINT)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


class BiovilEncoder(Encoder):
    name = "biovil"
    dim = JOINT
    input_size = CROP
    outputs = ("features",)
    feature_key = "projected_global_embedding (L2-normalised)"
    normalisation = "none ([0, 1], gray repeated to 3 channels)"

    def __init__(self, model, path: Path, device: str, dtype: str):
        super().__init__(model, BiovilPreprocess(), device=device, dtype=dtype, weights_path=path,
                         weights_files=[path])
        self.weights_id = f"{HF_ID}/{FILENAME}"

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        emb = self.model(batch).projected_global_embedding
        return {"features": torch.nn.functional.normalize(emb.float(), dim=-1)}

    def libraries(self) -> dict[str, str]:
        return library_versions("hi-ml-multimodal", "torchvision", "timm")


def load(weights: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> BiovilEncoder:
    path, _why = locate(weights)
    if path is None:  # only reached online (check() refused otherwise)
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(HF_ID, FILENAME, revision=REVISION, cache_dir=hf_cache_dir()))
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return BiovilEncoder(build_model(state_dict), path, device, dtype)


SPEC = EncoderSpec(
    name="biovil",
    description="BioViL-T image encoder (microsoft/BiomedVLP-BioViL-T), 128-d joint image-text space",
    loader=load,
    dim=JOINT,
    check=check,
)
