"""``pixels``: the image itself, downsampled to 32x32 (1024-d), zero-mean and unit-norm per image.

Always available (no weights): a baseline that tells whether a metric sees more than brightness and
layout, and the encoder of last resort when no learned one is installed.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Encoder, as_gray, resize
from .spec import Availability, EncoderSpec

SIZE = 32


class PixelPreprocess:
    """float32 [H, W] -> [1, 32, 32] (PIL bicubic, the project's one resize)."""

    def __init__(self, size: int = SIZE):
        self.size = size

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(resize(as_gray(img), self.size)).unsqueeze(0)


class PixelEncoder(Encoder):
    name = "pixels"
    dim = SIZE * SIZE
    input_size = SIZE
    outputs = ("features",)
    feature_key = "pixels 32x32, minus the image mean, divided by the L2 norm"
    normalisation = "per image: x - mean(x), then / ||x||"
    weights_id = "none"

    def __init__(self, device: str = "cpu", dtype: str = "float32"):
        super().__init__(None, PixelPreprocess(SIZE), device=device, dtype="float32")

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        x = batch.float().flatten(1)
        x = x - x.mean(dim=1, keepdim=True)
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)  # a flat image stays the zero vector
        return {"features": x}


def load(weights=None, device: str = "cpu", dtype: str = "float32") -> PixelEncoder:
    return PixelEncoder(device=device, dtype=dtype)


SPEC = EncoderSpec(
    name="pixels",
    description="32x32 downsampled pixels, zero-mean unit-norm (baseline, no weights)",
    loader=load,
    dim=SIZE * SIZE,
    optional=False,
    check=lambda weights: Availability(True, "no weights needed"),
)
