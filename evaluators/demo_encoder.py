"""``demo``: a small CNN trained on the demo world (14 CheXpert logits + a 256-d embedding).

It ships with the app (``assets/demo_encoder.safetensors``, trained by
``scripts/train_demo_encoder.py`` on seed-1 and seed-2 demo worlds, so seed-0 worlds are out of sample) so that
every metric has a learned, X-ray-shaped feature space even where no real encoder can be downloaded.

- "features": the 256-d embedding, trained with a supervised-contrastive loss whose positives are two
  augmented views of one image and the other studies of the same patient. Near-copies of a training
  image (shifted, cropped, brighter, noisier, re-compressed) therefore stay nearest to their source,
  which is what the memorisation search needs; cosine similarity is the intended distance.
- "logits": a linear head on the pooled features for the 14 labels (:data:`PATHOLOGIES` order),
  trained with BCE (uncertain labels masked). ``encoder.pathologies`` names them.

Only meaningful on demo-world-like images; on real radiographs it is a weak, out-of-domain model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .encoders.base import Encoder, as_gray, library_versions, resize
from .encoders.registry import DEMO_WEIGHTS, Availability, EncoderSpec, register_encoder
from .errors import InputError
from .pathologies import N_LABELS, PATHOLOGIES

SIZE = 128
EMBED_DIM = 256
WIDTHS = (16, 32, 64, 128)
MEAN, STD = 0.5, 0.25  # fixed input normalisation (inside the model, so preprocess stays plain)
REQUIRED_KEYS = ("head.weight", "embed.weight")


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DemoNet(nn.Module):
    """Conv-BN-ReLU stages (stride-2 stem, then [stride-2 conv, conv] per width), global average pool.

    ``pooled -> embed`` (Linear, 256-d "features"); ``pooled -> head`` (Linear, 14 "logits").
    """

    def __init__(self, widths: tuple[int, ...] = WIDTHS, embed_dim: int = EMBED_DIM, n_labels: int = N_LABELS):
        super().__init__()
        layers = [_block(1, widths[0], 2)]  # 128 -> 64
        c = widths[0]
        for w in widths[1:]:  # 64 -> 32 -> 16 -> 8
            layers += [_block(c, w, 2), _block(w, w, 1)]
            c = w
        self.body = nn.Sequential(*layers)
        self.embed = nn.Linear(c, embed_dim)
        self.head = nn.Linear(c, n_labels)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - MEAN) / STD).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.pooled(x)
        return self.embed(h), self.head(h)


class DemoPreprocess:
    """float32 [H, W] in [0, 1] -> [1, 128, 128] (the project's one resize: PIL bicubic)."""

    def __init__(self, size: int = SIZE):
        self.size = size

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(resize(as_gray(img), self.size)).unsqueeze(0)


class DemoEncoder(Encoder):
    name = "demo"
    dim = EMBED_DIM
    input_size = SIZE
    outputs = ("features", "logits")
    foldable = True
    feature_key = "embedding (Linear on the global-average-pooled CNN features); logits = 14-label head"
    normalisation = f"(x - {MEAN}) / {STD} inside the model; compare features by cosine similarity"
    weights_id = "chexgen demo encoder (trained on demo worlds seed 1 and 2)"

    def __init__(self, model: DemoNet, weights_path: Path, training: dict, device: str = "cpu",
                 dtype: str = "float32"):
        super().__init__(model, DemoPreprocess(SIZE), device=device, dtype=dtype, weights_path=weights_path,
                         weights_files=[weights_path])
        self.pathologies = list(PATHOLOGIES)
        self.training = training

    def _forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        features, logits = self.net(batch.float())
        return {"features": features, "logits": logits}

    def extra_metadata(self) -> dict:
        return {"pathologies": self.pathologies, "architecture": {"widths": list(WIDTHS), "embed_dim": EMBED_DIM}}

    def libraries(self) -> dict[str, str]:
        return library_versions("safetensors")


def weights_path(weights: str | Path | None = None) -> Path:
    """The weights file: ``weights`` if given (a file, or a folder holding demo_encoder.safetensors), else assets/."""
    if weights:
        path = Path(weights).expanduser()
        return path / DEMO_WEIGHTS if path.is_dir() else path
    from .settings import assets_dir

    return assets_dir() / DEMO_WEIGHTS


def _read_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return list(fh.keys())


def check(weights: str | Path | None = None) -> Availability:
    """Cheap: the file exists and is a safetensors file with the demo net's tensors (header only)."""
    path = weights_path(weights)
    how = ("run `python scripts/train_demo_encoder.py` (writes assets/demo_encoder.safetensors), "
           "or pass --weights FILE")
    if not path.is_file():
        return Availability(False, f"demo encoder weights not found at {path}", how)
    try:
        keys = _read_keys(path)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        return Availability(False, f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})", how)
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        return Availability(False, f"{path} lacks the demo encoder's tensors {missing}", how)
    return Availability(True, f"weights at {path}")


def build_model() -> DemoNet:
    return DemoNet()


def load(weights: str | Path | None = None, device: str = "cpu", dtype: str = "float32") -> DemoEncoder:
    """The demo encoder from its safetensors file (InputError naming the file if it does not fit)."""
    from safetensors.torch import load_file

    path = weights_path(weights)
    av = check(path)
    if not av.available:
        raise InputError(f"{av.reason}. {av.how_to_provide}")
    model = build_model()
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise InputError(f"{path} does not fit the demo encoder's architecture: {exc}") from None
    sidecar = path.with_suffix(".json")
    training: dict = {}
    if sidecar.is_file():
        try:
            training = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            training = {}
    return DemoEncoder(model, path, training, device=device, dtype=dtype)


SPEC = EncoderSpec(
    name="demo",
    description="small CNN trained on the demo world: 256-d embedding + 14 CheXpert logits",
    loader=load,
    dim=EMBED_DIM,
    outputs=("features", "logits"),
    check=check,
)

register_encoder(SPEC)
