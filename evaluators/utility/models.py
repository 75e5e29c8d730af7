"""The classifier: a timm model with one input channel and 14 outputs, and where its starting weights came from.

Offline, nothing is downloaded: a model starts from random weights unless ImageNet weights are asked for,
and those are looked up in the local Hugging Face / timm cache (or given as a file). The result always
records which start it had. A trained classifier is saved as ``model.safetensors`` + ``model.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import InputError, UnavailableError
from ..pathologies import N_LABELS

# CheXGenBench's classifier on a GPU; on a 2-core CPU resnet18 at 128 px trains ~80 images/s.
GPU_DEFAULT_MODEL = "resnet50"
CPU_DEFAULT_MODEL = "resnet18"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "model.json"


def default_model(device: str) -> str:
    """resnet50 (as CheXGenBench) where a GPU trains it, resnet18 on a CPU."""
    return GPU_DEFAULT_MODEL if device.startswith("cuda") else CPU_DEFAULT_MODEL


def _check_name(name: str) -> None:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        hint = f" Similar: {', '.join(close)}." if close else ""
        raise InputError(f"Unknown timm model {name!r}.{hint} See timm.list_models().")


def cached_pretrained_file(name: str) -> str | None:
    """Path of the model's ImageNet weights in the local HF cache, or None (never downloads)."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(hub_id, filename)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


def resolve_weights(name: str, pretrained: bool | str) -> tuple[str | None, str]:
    """(file to load or None, description): 'random init' or 'imagenet (<file>)'.

    ``pretrained`` is False (random), True (ImageNet weights from the local cache, else UnavailableError) or
    a path to a weights file.
    """
    _check_name(name)
    if not pretrained:
        return None, "random init"
    if isinstance(pretrained, str | os.PathLike) and not isinstance(pretrained, bool):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise InputError(f"Pretrained weights file {str(path)!r} does not exist.")
        return str(path), f"imagenet ({path})"
    found = cached_pretrained_file(name)
    if found is None:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        where = f"the Hugging Face repo {hub_id!r}" if hub_id else "timm"
        raise UnavailableError(
            f"ImageNet weights for {name!r} are not in the local cache (offline, nothing is downloaded). "
            f"Download them once from {where} on a machine with network (e.g. "
            f"`huggingface-cli download {hub_id or name}`), pass a weights file, or train from random "
            "init (drop --pretrained)."
        )
    return found, f"imagenet ({found})"


def build_model(name: str, *, weights_file: str | None = None, num_classes: int = N_LABELS) -> Any:
    """A timm model with one input channel; ImageNet weights from ``weights_file`` when given."""
    import timm

    _check_name(name)
    if weights_file is None:
        return timm.create_model(name, pretrained=False, in_chans=1, num_classes=num_classes)
    try:
        return timm.create_model(
            name,
            pretrained=True,
            pretrained_cfg_overlay={"file": weights_file},
            in_chans=1,
            num_classes=num_classes,
        )
    except Exception as exc:  # corrupt or mismatched file
        raise InputError(f"Could not load weights {weights_file!r} into {name!r}: {exc}") from exc


def save_classifier(model: Any, out_dir: Path, config: dict) -> None:
    """Weights as safetensors (no pickled code) and the config needed to rebuild and apply them."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = out_dir / (MODEL_FILE + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, out_dir / MODEL_FILE)
    tmp_json = out_dir / (CONFIG_FILE + ".tmp")
    tmp_json.write_text(json.dumps(config, indent=2))
    os.replace(tmp_json, out_dir / CONFIG_FILE)


def load_classifier(model_dir: str | os.PathLike, device: str = "cpu") -> tuple[Any, dict]:
    """(model in eval mode, config) from a folder written by train_classifier."""
    from safetensors.torch import load_file

    folder = Path(model_dir).expanduser()
    cfg_path, weights = folder / CONFIG_FILE, folder / MODEL_FILE
    if not cfg_path.is_file() or not weights.is_file():
        raise InputError(
            f"{str(folder)!r} is not a trained classifier folder (needs {CONFIG_FILE} and {MODEL_FILE}); "
            "train one with `python -m evaluators utility`."
        )
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{cfg_path}: not valid JSON ({exc}).") from exc
    model = build_model(config["model"], num_classes=len(config["classes"]))
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval(), config
