"""``dinov2``: Meta's DINOv2 ViT-B/14 (``facebook/dinov2-base``), the feature space dgm-eval recommends.

Stein et al. (NeurIPS 2023, "Exposing flaws of generative model evaluation metrics", code: dgm-eval) found
DINOv2 features track human judgement better than Inception's; their default is the ViT-L/14, this encoder
uses the ViT-B/14 the issue asks for (a ``facebook/dinov2-large`` folder given as weights works too: the
dimension comes from its config.json).

Features are ``pooler_output`` of the transformers ``Dinov2Model``: the CLS token after the final layer norm,
which is what dgm-eval's ``DINOv2Encoder`` returns (the torch hub model's forward is ``x_norm_clstoken``).
Preprocessing is dgm-eval's, not the checkpoint's ``preprocessor_config.json`` (shortest edge 256 + centre
crop 224): the whole image resized to 224 x 224 with bicubic interpolation (a radiograph is not cropped),
then ImageNet mean/std. The resize is the project's one (PIL bicubic on the float image, as dgm-eval's
``clean_resize`` option) and gray is repeated to RGB.

Weights come from, in order: ``--weights DIR``, ``$CHEXGEN_DINOV2``, the Hugging Face cache
(``HF_HOME`` / ``HF_HUB_CACHE``), or a download from the Hub when the network is allowed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .base import PoolerEncoder, as_gray, resize
from .hub_weights import HubWeights
from .spec import EncoderSpec

HF_ID = "facebook/dinov2-base"
ENV = "CHEXGEN_DINOV2"
NEEDED = ("config.json",)
INPUT_SIZE = 224  # dgm-eval: TF.Resize((224, 224), BICUBIC)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOW = (f"put the {HF_ID} snapshot (config.json, model.safetensors; 346 MB) in a folder and pass --weights DIR "
       f"or set {ENV}=DIR; or, with network, `hf download {HF_ID}` to fill the Hugging Face cache (HF_HOME)")


WEIGHTS = HubWeights(HF_ID, ENV, NEEDED, HOW)
locate = WEIGHTS.locate
check = WEIGHTS.check


class Dinov2Preprocess:
    """float32 [H, W] -> [3, 224, 224]: whole image resized (bicubic), gray to RGB, ImageNet mean/std."""

    def __init__(self, size: int = INPUT_SIZE):
        self.size = int(size)
        self.mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(IMAGENET_STD, np.float32).reshape(-1, 1, 1)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        x = resize(as_gray(img), (self.size, self.size))
        rgb = np.broadcast_to(x, (3, *x.shape))
        return torch.from_numpy(np.ascontiguousarray((rgb - self.mean) / self.std, dtype=np.float32))

    def summary(self) -> dict:
        return {"resize": [self.size, self.size], "center_crop": None, "mean": list(IMAGENET_MEAN),
                "std": list(IMAGENET_STD), "resample": "bicubic (PIL, float)", "channels": "gray repeated to RGB",
                "as": "dgm-eval DINOv2Encoder"}


class Dinov2Encoder(PoolerEncoder):
    name = "dinov2"
    outputs = ("features",)
    feature_key = "pooler_output"

    def __init__(self, model, folder: Path, weights_id: str, device: str, dtype: str):
        preprocess = Dinov2Preprocess()
        files = WEIGHTS.files(folder)
        super().__init__(model, preprocess, device=device, dtype=dtype, weights_path=folder, weights_files=files)
        self._pre = preprocess.summary()
        self.dim = int(model.config.hidden_size)
        self.input_size = preprocess.size
        self.normalisation = f"(x - {list(IMAGENET_MEAN)}) / {list(IMAGENET_STD)}"
        self.weights_id = weights_id


def load(weights: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> Dinov2Encoder:
    from transformers import Dinov2Model

    folder, weights_id = WEIGHTS.folder(weights)
    model = Dinov2Model.from_pretrained(str(folder), local_files_only=True)
    return Dinov2Encoder(model, folder, weights_id, device, dtype)


SPEC = EncoderSpec(
    name="dinov2",
    description="DINOv2 ViT-B/14 (facebook/dinov2-base) CLS pooler_output, 768-d: dgm-eval's feature space "
                "(general images, self-supervised)",
    loader=load,
    dim=768,
    check=check,
)
