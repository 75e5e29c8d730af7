"""Tiny random models of the real encoders' architectures, saved in the real on-disk formats.

No real weights can be downloaded here, so the loaders are tested on these: same classes, same file
names, same folder layouts (a transformers folder, a Hugging Face cache snapshot, torch hub's
checkpoints folder, torchxrayvision's models_data), random numbers. Reusable by any test.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from unittest import mock

import torch

RADDINO_MEAN, RADDINO_STD = 0.5307, 0.2583  # microsoft/rad-dino's preprocessor_config.json values


RADDINO_FULL_SIZE = {"image_size": 518, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                     "mlp_ratio": 4}  # microsoft/rad-dino's config.json (ViT-B/14), for benchmarks


def make_tiny_raddino(folder: str | Path, *, image_size: int = 56, seed: int = 0, hidden_size: int = 32,
                      num_hidden_layers: int = 2, num_attention_heads: int = 2, mlp_ratio: int = 2) -> Path:
    """A transformers Dinov2Model (patch 14; tiny unless sized up, e.g. ``**RADDINO_FULL_SIZE``) + BitImageProcessor,
    via save_pretrained."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    folder = Path(folder)
    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                          num_attention_heads=num_attention_heads, mlp_ratio=mlp_ratio, patch_size=14,
                          image_size=image_size)
    model = Dinov2Model(config).eval()
    model.save_pretrained(folder)  # config.json + model.safetensors, as on the Hub
    BitImageProcessor(
        do_resize=True, size={"shortest_edge": image_size}, resample=3,
        do_center_crop=True, crop_size={"height": image_size, "width": image_size},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=[RADDINO_MEAN] * 3, image_std=[RADDINO_STD] * 3, do_convert_rgb=True,
    ).save_pretrained(folder)
    return folder


def make_hf_cache_snapshot(hub_cache: str | Path, repo_id: str, files: dict[str, Path], *,
                           revision: str = "0123456789abcdef0123456789abcdef01234567",
                           ref: str = "main") -> Path:
    """Lay ``files`` out as huggingface_hub does: blobs/<sha256>, snapshots/<rev>/<name> -> blob, refs/<ref>."""
    repo = Path(hub_cache) / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    for name, src in files.items():
        digest = hashlib.sha256(Path(src).read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(src, blob)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(Path("../" * (len(Path(name).parts) + 1)) / "blobs" / digest)
    return snap


def make_tiny_raddino_cache(hub_cache: str | Path, work: str | Path, **kwargs) -> Path:
    """A tiny RadDino saved as the ``microsoft/rad-dino`` snapshot of a Hugging Face cache."""
    src = make_tiny_raddino(work, **kwargs)
    names = ("config.json", "model.safetensors", "preprocessor_config.json")
    return make_hf_cache_snapshot(hub_cache, "microsoft/rad-dino", {n: src / n for n in names})


def random_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """torch-fidelity's full InceptionV3, randomly initialised (its constructor's download bypassed)."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: {}), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for m in model.modules():  # PyTorch's default init fades to zero over 90 layers; keep the signal alive
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    _randomise_batchnorm(model, seed)
    return model.state_dict()


def make_tiny_inception(path: str | Path, seed: int = 0) -> Path:
    """The FID Inception weights file (~95 MB state dict, random) at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_inception_state_dict(seed), path)
    return path


def make_tiny_xrv(folder: str | Path, seed: int = 0) -> Path:
    """torchxrayvision's densenet121-res224-all file: a pickled full DenseNet (random), as xrv ships it."""
    import torchxrayvision as xrv

    from evaluators.encoders.xrv import FILENAME

    torch.manual_seed(seed)
    model = xrv.models.DenseNet()  # the same architecture (DenseNet-121, 1 channel, 18 outputs)
    _randomise_batchnorm(model, seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model, folder / FILENAME)
    return folder / FILENAME


def make_tiny_biovil(path: str | Path, seed: int = 0) -> Path:
    """BioViL-T's image model state dict (random), needs the hi-ml-multimodal package."""
    from evaluators.encoders.biovil import build_model

    torch.manual_seed(seed)
    model = build_model(None)
    _randomise_batchnorm(model, seed)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _randomise_batchnorm(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so eval-mode outputs differ from a freshly built model's."""
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1.0 + 0.1 * torch.rand(m.running_var.shape, generator=g))


def make_tiny_dinov2(folder: str | Path, *, seed: int = 0, hidden_size: int = 32, num_hidden_layers: int = 2,
                     num_attention_heads: int = 2, mlp_ratio: int = 2, image_size: int = 56) -> Path:
    """A tiny random transformers Dinov2Model in the ``facebook/dinov2-base`` folder layout (config.json +
    model.safetensors via save_pretrained); patch 14, position embeddings interpolated to 224 at run time as
    for the real model (trained at 518)."""
    from transformers import Dinov2Config, Dinov2Model

    folder = Path(folder)
    torch.manual_seed(seed)
    config = Dinov2Config(hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                          num_attention_heads=num_attention_heads, mlp_ratio=mlp_ratio, patch_size=14,
                          image_size=image_size)
    Dinov2Model(config).eval().save_pretrained(folder)
    return folder
