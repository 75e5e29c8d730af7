"""Resumable training state in one safetensors file (tensors) with a JSON header (everything else).

Holds the model, the optimizer, the LR scheduler, the torch / numpy / python RNG states, the epoch, the best
validation score and the early-stopping counter. Written to a temporary file and renamed, so a run killed
mid-write leaves the previous checkpoint intact. Nothing is pickled.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT_FILE = "checkpoint.safetensors"


def _optimizer_split(state: dict) -> tuple[dict[str, Any], dict]:
    tensors: dict[str, Any] = {}
    scalars: dict[str, dict[str, Any]] = {}
    import torch

    for pid, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_join(tensors: dict[str, Any], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optim."):
            continue
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, entries in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, Any], dict]:
    """The global RNG states: tensors for torch (and CUDA), JSON for numpy and python."""
    import torch

    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    meta = {
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, Any], meta: dict) -> None:
    import torch

    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(
    path: Path, *, model: Any, optimizer: Any, scheduler: Any, state: dict
) -> None:
    """Write model + optimizer + scheduler + RNG + loop state atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_split(optimizer.state_dict())
    tensors.update(opt_tensors)
    rng_tensors, rng_meta = rng_state()
    tensors.update(rng_tensors)
    header = {
        "state": state,
        "optimizer": opt_meta,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng_meta,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"chexgen": json.dumps(header)})
    os.replace(tmp, path)


def end_epoch(state: dict, *, epoch: int, epochs: int, patience: int, score: float, monitor: str,
              train_loss: float, val_loss: float, lr: float, save_best: Any) -> tuple[dict, bool, bool]:
    """Early stopping's bookkeeping after one epoch, shared by every trainer that checkpoints here.

    ``score`` is higher-is-better (a loss is passed negated); ``save_best(meta)`` writes the model when it
    improved, ``meta`` naming the best epoch and the monitored value.
    Updates ``state`` (best score and epoch, patience count, history, done/stopped_early) and returns
    (the epoch's history record, improved, stop).
    """
    improved = score > state["best_score"] + 1e-6 or state["best_epoch"] == 0
    if improved:
        state.update(best_score=score, best_epoch=epoch, bad_epochs=0, monitor=monitor)
        save_best({"best_epoch": epoch, monitor: abs(score)})
    else:
        state["bad_epochs"] += 1
    record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, monitor: abs(score),
              "lr": lr, "best": improved}
    state["history"].append(record)
    state["epoch"] = epoch
    stop = state["bad_epochs"] >= patience
    if stop or epoch == epochs:
        state["done"] = True
        state["stopped_early"] = stop and epoch < epochs
    return record, improved, stop


def read_checkpoint(path: Path) -> tuple[dict[str, Any], dict]:
    """(tensors, header) of a checkpoint file."""
    from safetensors import safe_open

    tensors: dict[str, Any] = {}
    with safe_open(str(path), framework="pt") as f:
        header = json.loads((f.metadata() or {})["chexgen"])
        for key in f.keys():  # noqa: SIM118 (safe_open is not a dict)
            tensors[key] = f.get_tensor(key)
    return tensors, header


def restore(tensors: dict[str, Any], header: dict, *, model: Any, optimizer: Any, scheduler: Any) -> dict:
    """Load model/optimizer/scheduler/RNG from a checkpoint; returns the loop state."""
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    optimizer.load_state_dict(_optimizer_join(tensors, header["optimizer"]))
    if scheduler is not None and header.get("scheduler") is not None:
        scheduler.load_state_dict(header["scheduler"])
    set_rng_state(tensors, header["rng"])
    return header["state"]
