"""``raddino``: Microsoft's RadDino (``microsoft/rad-dino``), the CLS embedding CheXGenBench uses.

Features are ``pooler_output`` of the transformers ``Dinov2Model`` (the layer-normed CLS token,
768-d), as in CheXGenBench's "FID (RadDino)", "KID (RadDino)" and PRDC. Preprocessing follows the
model's own ``preprocessor_config.json`` (resize, center crop, mean/std), applied to the canonical
float image with the project's one resize (PIL bicubic in float) instead of an 8-bit round trip.

Weights come from, in order: ``--weights DIR``, ``$CHEXGEN_RADDINO``, the Hugging Face cache
(``HF_HOME`` / ``HF_HUB_CACHE``), or a download from the Hub when the network is allowed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import PoolerEncoder, as_gray, center_crop, resize, resize_shortest_edge
from .hub_weights import HubWeights
from .spec import EncoderSpec

HF_ID = "microsoft/rad-dino"
ENV = "CHEXGEN_RADDINO"
NEEDED = ("config.json", "preprocessor_config.json")
HOW = (f"put the {HF_ID} snapshot (config.json, model.safetensors, preprocessor_config.json) in a folder and "
       f"pass --weights DIR or set {ENV}=DIR; or, with network, `hf download {HF_ID}` to fill the Hugging Face "
       "cache (HF_HOME)")


WEIGHTS = HubWeights(HF_ID, ENV, NEEDED, HOW)
locate = WEIGHTS.locate
check = WEIGHTS.check


class RadDinoPreprocess:
    """float32 [H, W] -> normalised [3, crop, crop], with the settings of preprocessor_config.json."""

    def __init__(self, resize_to: dict, crop: tuple[int, int] | None, mean: list[float], std: list[float]):
        self.resize_to, self.crop = resize_to, crop
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        x = as_gray(img)
        if self.resize_to.get("shortest_edge"):
            x = resize_shortest_edge(x, int(self.resize_to["shortest_edge"]))
        elif self.resize_to.get("height"):
            x = resize(x, (int(self.resize_to["width"]), int(self.resize_to["height"])))
        if self.crop:
            x = center_crop(x, *self.crop)
        rgb = np.broadcast_to(x, (3, *x.shape))
        return torch.from_numpy(np.ascontiguousarray((rgb - self.mean) / self.std, dtype=np.float32))


def preprocess_from_processor(processor) -> tuple[RadDinoPreprocess, dict]:
    """Our preprocessing from a transformers image processor (BitImageProcessor) and a summary of it."""

    def as_dict(size) -> dict:
        if size is None:
            return {}
        items = size.items() if hasattr(size, "items") else vars(size).items()
        return {k: v for k, v in items if v is not None}

    resize_to = as_dict(processor.size) if getattr(processor, "do_resize", True) else {}
    crop_d = as_dict(getattr(processor, "crop_size", None)) if getattr(processor, "do_center_crop", False) else {}
    crop = (int(crop_d["height"]), int(crop_d["width"])) if crop_d else None
    if getattr(processor, "do_normalize", True):
        mean, std = list(processor.image_mean), list(processor.image_std)
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    rescale = float(getattr(processor, "rescale_factor", 1 / 255))
    if getattr(processor, "do_rescale", True) and abs(rescale * 255 - 1) > 1e-6:
        raise ValueError(f"unexpected rescale_factor {rescale} (expected 1/255) in the RadDino image processor")
    summary = {"resize": resize_to, "center_crop": crop, "mean": mean, "std": std,
               "resample": "bicubic (PIL, float)", "channels": "gray repeated to RGB"}
    return RadDinoPreprocess(resize_to, crop, mean, std), summary


class RadDinoEncoder(PoolerEncoder):
    name = "raddino"
    outputs = ("features",)
    feature_key = "pooler_output"

    def __init__(self, model, processor, folder: Path, weights_id: str, device: str, dtype: str):
        preprocess, self._pre = preprocess_from_processor(processor)
        files = WEIGHTS.files(folder)
        super().__init__(model, preprocess, device=device, dtype=dtype, weights_path=folder, weights_files=files)
        self.dim = int(model.config.hidden_size)
        self.input_size = preprocess.crop[0] if preprocess.crop else int(preprocess.resize_to.get("shortest_edge", 0))
        self.normalisation = f"(x - {self._pre['mean']}) / {self._pre['std']}"
        self.weights_id = weights_id
        self._folder = folder

    def reference_preprocess(self):
        """chexgenbench mode: the 299 px uint8 chain, then this snapshot's processor on PIL (as the reference)."""
        from .chexgenbench import RadDinoReference, raddino_processor

        return RadDinoReference(raddino_processor(self._folder))


def load(weights: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> RadDinoEncoder:
    from transformers import AutoImageProcessor, AutoModel

    folder, weights_id = WEIGHTS.folder(weights)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True)
    processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    return RadDinoEncoder(model, processor, folder, weights_id, device, dtype)


SPEC = EncoderSpec(
    name="raddino",
    description="RadDino (microsoft/rad-dino) CLS pooler_output, 768-d: CheXGenBench's FID/KID/PRDC space",
    loader=load,
    dim=768,
    check=check,
)
