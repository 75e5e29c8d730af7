"""Training the utility classifier: resumable, seeded, early-stopped on validation AUC.

As CheXGenBench: BCE over the 14 labels, Adam (weight decay 1e-5), small rotations as augmentation, and
(``scheduler='plateau'``) ReduceLROnPlateau on the validation loss. Differences, on purpose: masked BCE
(labels a set never annotates do not count as negatives), early stopping on validation macro AUC, a
checkpoint every epoch so a killed run resumes, a patient-disjoint validation split, and by default a cosine
learning-rate decay over the epochs (``scheduler='cosine'``), which converges in fewer epochs on a CPU.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import jobs
from ..errors import InputError
from ..pathologies import PATHOLOGIES, UNCERTAIN_POLICIES
from . import checkpoint as ckpt
from .data import (
    GRAY_MEAN,
    GRAY_STD,
    TEST_SPLIT_NAMES,
    Preloaded,
    concat,
    fingerprint,
    preload,
    split_train_val,
    targets,
)
from .evaluate import classification_metrics, predict
from .models import build_model, default_model, resolve_weights, save_classifier

Progress = Callable[[dict], None]
SCHEDULERS = {
    "cosine": "CosineAnnealingLR(T_max=epochs, eta_min=lr/100), stepped per epoch",
    "plateau": "ReduceLROnPlateau(val_loss, factor=0.1, patience=2) (CheXGenBench)",
}


@dataclass
class TrainResult:
    """What a training run produced (also written to ``<out_dir>/result.json``)."""

    model_dir: str
    model: str
    weights: str
    epochs_run: int
    best_epoch: int
    best_val_auc: float
    stopped_early: bool
    resumed_from_epoch: int
    n_train: int
    n_val: int
    validation: str
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    """python random, numpy and torch (CPU and CUDA) from one seed."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    """DataLoader worker seeds derive from the loader's generator (torch.initial_seed differs per worker)."""
    import torch

    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _augment(x: Any, generator: Any, max_degrees: float = 10.0, max_shift: float = 0.05) -> Any:
    """Batched random rotation (±10°, as CheXGenBench), shift (±5%) and scale (0.95-1.05); no flips."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    u = torch.rand((n, 4), generator=generator).to(x.device)
    angle = (u[:, 0] * 2 - 1) * math.radians(max_degrees)
    scale = 0.95 + 0.1 * u[:, 1]
    tx, ty = (u[:, 2] * 2 - 1) * max_shift * 2, (u[:, 3] * 2 - 1) * max_shift * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _normalise(batch: Any) -> Any:
    return (batch.float().unsqueeze(1) / 255.0 - GRAY_MEAN) / GRAY_STD


def _val_score(y: np.ndarray, scores: np.ndarray, mask: np.ndarray, val_loss: float) -> tuple[float, str]:
    """Validation macro AUC when some class has both outcomes, else minus the loss (monitor named)."""
    try:
        m = classification_metrics(y, scores, mask)
    except InputError:
        return -val_loss, "val_loss"
    if m["per_class_auc"]:
        return float(m["macro_auc"]), "val_auc"
    return -val_loss, "val_loss"


def _masked_bce(logits: Any, y: Any, mask: Any) -> Any:
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(logits, y, reduction="none") * mask
    return loss.sum() / mask.sum().clamp(min=1.0)


def _subsample(data: Preloaded, n: int | None, seed: int) -> Preloaded:
    if n is None or n >= len(data):
        return data
    idx = np.sort(np.random.default_rng(seed).choice(len(data), size=n, replace=False))
    return data.subset(idx)


def train_classifier(
    train_sets: Sequence[Any],
    *,
    val_set: Any | None = None,
    model: str | None = None,
    epochs: int = 20,
    image_size: int = 128,
    batch_size: int = 32,
    lr: float | None = None,
    weight_decay: float = 1e-5,
    seed: int = 0,
    out_dir: str | os.PathLike = "utility_model",
    device: str | None = None,
    progress: Progress | None = None,
    patience: int = 4,
    policy: str = "zeros",
    scheduler: str = "cosine",
    pretrained: bool | str = False,
    val_fraction: float = 0.1,
    max_train_samples: int | None = None,
    num_workers: int = 0,
    resume: bool = True,
    deterministic: bool = True,
    show_bars: bool = True,
    preloaded: Sequence[Preloaded] | None = None,
    names: Sequence[str] | None = None,
) -> TrainResult:
    """Train a 14-label classifier on the concatenation of ``train_sets`` and save the best epoch.

    Validation: ``val_set`` if given, else each training set's 'valid' rows, else a patient-disjoint hold-out
    of ``val_fraction``. Best weights (highest validation macro AUC) go to ``out_dir/model.safetensors``; the
    full loop state to ``out_dir/checkpoint.safetensors`` after every epoch. With ``resume`` a run finds that
    checkpoint and continues where it stopped (same data, model and settings required). ``progress`` is
    called with a dict per batch (``stage='batch'``) and after each epoch's checkpoint (``stage='epoch'``).
    ``preloaded`` (optional) are the already-loaded training sets (same order), to load images once per run.
    """
    import torch

    from ..settings import select_device

    started = time.time()
    if policy not in UNCERTAIN_POLICIES:
        raise InputError(f"Unknown label policy {policy!r}; use one of {', '.join(UNCERTAIN_POLICIES)}.")
    if scheduler not in SCHEDULERS:
        raise InputError(f"Unknown scheduler {scheduler!r}; use one of {', '.join(SCHEDULERS)}.")
    if epochs < 1 or batch_size < 1 or image_size < 16:
        raise InputError("epochs and batch_size must be >= 1 and image_size >= 16.")
    if not train_sets and not preloaded:
        raise InputError("No training set given.")
    dev = select_device(device)
    model_name = model or default_model(dev)
    weights_file, weights_desc = resolve_weights(model_name, pretrained)
    lr = lr if lr is not None else (1e-4 if weights_file else 1e-3)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    names = list(names) if names else [f"train{i}" for i in range(len(preloaded or train_sets))]

    # ---- data: preload once, split, targets
    parts = list(preloaded) if preloaded else [
        preload(s, image_size, name=n, progress=progress, show_bar=show_bars) for s, n in zip(train_sets, names)
    ]
    for p in parts:
        if p.images.shape[1:] != (image_size, image_size):
            raise InputError(f"Preloaded set {p.name!r} is {p.images.shape[1:]}, not {image_size}px.")
    train_parts, val_parts, how = [], [], []
    for i, p in enumerate(parts):
        if val_set is not None:
            keep = np.flatnonzero(~np.isin(p.splits, TEST_SPLIT_NAMES))
            train_parts.append(p.subset(keep))
            continue
        tr, va, desc = split_train_val(p, val_fraction=val_fraction, seed=seed + i)
        train_parts.append(p.subset(tr))
        val_parts.append(p.subset(va))
        how.append(f"{p.name}: {desc}")
    if val_set is not None:
        val_parts = [preload(val_set, image_size, name="validation", progress=progress, show_bar=show_bars)]
        how = ["given validation set"]
    train_data = _subsample(concat(train_parts, "train"), max_train_samples, seed)
    val_data = concat(val_parts, "validation")
    y_tr, m_tr = targets(train_data, policy)
    y_va, m_va = targets(val_data, policy)
    if m_tr.sum() == 0:
        raise InputError("The training sets annotate none of the 14 labels; nothing to learn.")

    config = {
        "model": model_name,
        "weights": weights_desc,
        "classes": list(PATHOLOGIES),
        "in_chans": 1,
        "image_size": image_size,
        "normalisation": {"mean": GRAY_MEAN, "std": GRAY_STD, "range": "[0,1] before normalising"},
        "policy": policy,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "optimizer": "Adam",
        "scheduler": SCHEDULERS[scheduler],
        "patience": patience,
        "seed": seed,
        "device": dev,
        "validation": "; ".join(how),
        "train_sets": [p.name for p in parts],
        "max_train_samples": max_train_samples,
        "data_fingerprint": fingerprint(train_data.images, y_tr, m_tr, val_data.images, y_va, m_va),
    }

    # ---- model, optimizer, scheduler (seeded before building so init weights repeat)
    prev_det = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if dev.startswith("cuda"):
            torch.backends.cudnn.benchmark = False
    try:
        seed_everything(seed)
        net = build_model(model_name, weights_file=weights_file).to(dev)
        optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
        if scheduler == "plateau":
            sched: Any = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=2)
        else:
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr * 0.01)
        state = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [],
                 "monitor": None, "done": False, "stopped_early": False}
        resumed_from = 0
        ckpt_path = out / ckpt.CHECKPOINT_FILE
        if ckpt_path.is_file() and resume:
            tensors, header = ckpt.read_checkpoint(ckpt_path)
            old = header["state"].get("config", {})
            keys = ["model", "weights", "image_size", "policy", "seed", "batch_size", "lr", "scheduler",
                    "data_fingerprint", *(["epochs"] if scheduler == "cosine" else [])]
            diff = [k for k in keys if old.get(k) != config.get(k)]
            if diff:
                raise InputError(
                    f"{ckpt_path} belongs to a different run (differs in: {', '.join(diff)}). "
                    "Use another output folder, or restart (--restart) to overwrite it."
                )
            state = ckpt.restore(tensors, header, model=net, optimizer=optimizer, scheduler=sched)
            resumed_from = int(state["epoch"])
        state["config"] = config

        train_ds = torch.utils.data.TensorDataset(
            torch.from_numpy(train_data.images), torch.from_numpy(y_tr), torch.from_numpy(m_tr)
        )
        n_batches = math.ceil(len(train_ds) / batch_size)
        drop_last = len(train_ds) % batch_size == 1 and len(train_ds) > 1  # BatchNorm cannot train on 1 image

        start_epoch = int(state["epoch"]) + 1
        if state.get("done"):
            start_epoch = epochs + 1
        for epoch in range(start_epoch, epochs + 1):
            # a generator per epoch, seeded from (seed, epoch): shuffling and augmentation repeat on resume
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            loader = torch.utils.data.DataLoader(
                train_ds,
                batch_size=batch_size,
                shuffle=True,
                drop_last=drop_last,
                generator=gen,
                num_workers=num_workers,
                worker_init_fn=_worker_init if num_workers else None,
            )
            aug_gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7919)
            net.train()
            total, count = 0.0, 0
            bar: Any = loader
            if show_bars:
                from tqdm.auto import tqdm

                bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, total=n_batches)
            for step, (xb, yb, mb) in enumerate(bar, start=1):
                if progress is None:  # the caller's own progress callback reports otherwise
                    jobs.tick((epoch - 1) * n_batches + step - 1, epochs * n_batches, f"training, epoch {epoch}/{epochs}")
                else:
                    jobs.check()
                x = _augment(_normalise(xb.to(dev)), aug_gen)
                logits = net(x)
                loss = _masked_bce(logits.float(), yb.to(dev), mb.to(dev))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(xb)
                count += len(xb)
                if progress is not None:
                    progress({"stage": "batch", "epoch": epoch, "epochs": epochs, "step": step,
                              "steps": n_batches, "loss": float(loss.detach())})
            train_loss = total / max(count, 1)

            scores = predict(net, val_data.images, device=dev, batch_size=max(batch_size, 64))
            with torch.no_grad():
                s = torch.from_numpy(np.clip(scores, 1e-7, 1 - 1e-7))
                logit = torch.log(s) - torch.log1p(-s)
                val_loss = float(_masked_bce(logit, torch.from_numpy(y_va), torch.from_numpy(m_va)))
            score, monitor = _val_score(y_va, scores, m_va, val_loss)
            lr_used = optimizer.param_groups[0]["lr"]
            if scheduler == "plateau":
                sched.step(val_loss)
            else:
                sched.step()
            record, improved, stop = ckpt.end_epoch(
                state, epoch=epoch, epochs=epochs, patience=patience, score=score, monitor=monitor,
                train_loss=train_loss, val_loss=val_loss, lr=lr_used,
                save_best=lambda meta: save_classifier(net, out, {**config, **meta}))
            ckpt.save_checkpoint(ckpt_path, model=net, optimizer=optimizer, scheduler=sched, state=state)
            if show_bars:
                from tqdm.auto import tqdm

                tqdm.write(
                    f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                    f"{monitor} {abs(score):.4f}{' (best)' if improved else ''}"
                )
            if progress is not None:
                progress({"stage": "epoch", **record, "epochs": epochs, "best_epoch": state["best_epoch"]})
            if stop:
                break
    finally:
        if deterministic:
            torch.use_deterministic_algorithms(prev_det)

    best = state["best_score"]
    result = TrainResult(
        model_dir=str(out),
        model=model_name,
        weights=weights_desc,
        epochs_run=int(state["epoch"]),
        best_epoch=int(state["best_epoch"]),
        best_val_auc=float(best) if state.get("monitor") == "val_auc" else float("nan"),
        stopped_early=bool(state.get("stopped_early")),
        resumed_from_epoch=resumed_from,
        n_train=len(train_data),
        n_val=len(val_data),
        validation=config["validation"],
        history=list(state["history"]),
        config=config,
        seconds=time.time() - started,
    )
    import json

    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result
