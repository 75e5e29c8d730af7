"""Training the small captioner on image/report pairs: resumable, seeded, early-stopped.

Same conventions as the classification utility (:mod:`evaluators.utility.train`): images preloaded once per run
(:func:`evaluators.utility.data.preload`), a validation set from the training sets' 'valid' rows or a
patient-disjoint hold-out, the whole loop state (model, optimizer, LR schedule, RNGs, epoch, best score,
early-stopping counter) written after every epoch (:mod:`evaluators.utility.checkpoint`), shuffling and
augmentation seeded per (seed, epoch) so a killed run resumes to the same numbers, and the best epoch's weights
saved as ``model.safetensors`` + ``model.json`` (architecture, vocabulary). The monitored score is the
validation clinical-finding F1 macro of greedy-decoded reports (minus the validation loss where no validation
report is positive for any label).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..pathologies import binarize
from ..utility import checkpoint as ckpt
from ..utility.data import Preloaded, concat, fingerprint, preload, split_train_val
from .text import Vocab

Progress = Callable[[dict], None]
MODEL_FILE, CONFIG_FILE = "model.safetensors", "model.json"


@dataclass
class Pairs:
    """Preloaded images with one report per image (and the report's labels, by the project's labeler)."""

    data: Preloaded
    reports: np.ndarray  # object [N]

    def __len__(self) -> int:
        return len(self.data)

    def subset(self, idx: np.ndarray) -> Pairs:
        return Pairs(self.data.subset(idx), self.reports[np.asarray(idx, dtype=np.int64)])


def load_pairs(image_set: Any, image_size: int, *, name: str, progress: Progress | None = None,
               show_bar: bool = True) -> Pairs:
    """Images + reports of a set: the report is the set's prompt/report column (a synthetic image's prompt)."""
    table = getattr(image_set, "table", None)
    if table is None or "prompt" not in table.columns:
        raise InputError(f"Image set {name!r} has no report column; report generation needs one text per image "
                         "(a CSV column named prompt, report, annotated_prompt, caption or text).")
    reports = np.array(["" if not isinstance(v, str) else v.strip() for v in table["prompt"].tolist()], dtype=object)
    blank = np.flatnonzero(reports == "")
    if len(blank) == len(reports):
        raise InputError(f"Image set {name!r}: every report is blank; give a set whose prompt/report column is filled.")
    if len(blank):
        first = getattr(image_set, "paths", [""] * len(reports))[int(blank[0])] if hasattr(image_set, "paths") else ""
        raise InputError(f"Image set {name!r}: {len(blank)} image(s) have a blank report (first: {first or blank[0]}); "
                         "fill the prompt/report column or leave those rows out.")
    data = preload(image_set, image_size, name=name, progress=progress, show_bar=show_bar)
    return Pairs(data, reports)


def concat_pairs(parts: Sequence[Pairs], name: str) -> Pairs:
    if len(parts) == 1:
        return parts[0]
    return Pairs(concat([p.data for p in parts], name), np.concatenate([p.reports for p in parts]))


@dataclass
class ReportTrainResult:
    model_dir: str
    model: str
    epochs_run: int
    best_epoch: int
    best_score: float
    monitor: str
    stopped_early: bool
    resumed_from_epoch: int
    n_train: int
    n_val: int
    validation: str
    vocab_size: int
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def _tokens(vocab: Vocab, reports: Sequence[str], max_len: int) -> np.ndarray:
    out = np.zeros((len(reports), max_len), dtype=np.int64)
    for i, r in enumerate(reports):
        ids = vocab.encode(r, max_len)
        out[i, : len(ids)] = ids
    return out


def report_labels(reports: Sequence[str]) -> np.ndarray:
    """[N, 14] labels of reports by the project's rule labeler (4-valued)."""
    from .scores import label_texts

    unique = list(dict.fromkeys(reports))
    lab = label_texts(unique)
    row = {r: i for i, r in enumerate(unique)}
    return lab[[row[r] for r in reports]] if len(reports) else np.zeros((0, lab.shape[1]), np.float32)


def generate(net: Any, images: np.ndarray, vocab: Vocab, *, device: str, batch_size: int = 64,
             max_len: int | None = None) -> list[str]:
    """Greedy reports for uint8 images [N, S, S]."""
    import torch

    from ..utility.train import _normalise

    net.eval()
    out: list[str] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = _normalise(torch.from_numpy(images[start: start + batch_size]).to(device))
            for ids in net.generate(x, bos=vocab.stoi["<bos>"], eos=vocab.stoi["<eos>"], max_len=max_len):
                out.append(vocab.decode(ids))
    return out


def save_model(net: Any, out_dir: Path, config: dict) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (MODEL_FILE + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(tmp))
    os.replace(tmp, out_dir / MODEL_FILE)
    tmp_json = out_dir / (CONFIG_FILE + ".tmp")
    tmp_json.write_text(json.dumps(config, indent=2))
    os.replace(tmp_json, out_dir / CONFIG_FILE)


def load_model(model_dir: str | os.PathLike, device: str = "cpu") -> tuple[Any, Vocab, dict]:
    """(captioner in eval mode, vocabulary, config) from a folder written by :func:`train_captioner`."""
    from safetensors.torch import load_file

    from .captioner import build_captioner

    folder = Path(model_dir).expanduser()
    if not (folder / CONFIG_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise InputError(f"{str(folder)!r} is not a trained captioner folder (needs {CONFIG_FILE} and {MODEL_FILE}); "
                         "train one with `python -m evaluators report-utility`.")
    config = json.loads((folder / CONFIG_FILE).read_text())
    vocab = Vocab(config["vocab"][4:])
    net = build_captioner(len(vocab), config["architecture"], int(config["image_size"]))
    net.load_state_dict(load_file(str(folder / MODEL_FILE)))
    return net.to(device).eval(), vocab, config


def train_captioner(
    parts: Sequence[Pairs],
    *,
    architecture: dict[str, Any],
    model_name: str = "captioner",
    epochs: int = 15,
    image_size: int = 128,
    batch_size: int = 32,
    lr: float = 5e-4,
    weight_decay: float = 1e-4,
    label_loss: float = 1.0,
    seed: int = 0,
    out_dir: str | os.PathLike = "captioner",
    device: str = "cpu",
    patience: int = 4,
    val_fraction: float = 0.1,
    max_train_samples: int | None = None,
    resume: bool = True,
    deterministic: bool = True,
    progress: Progress | None = None,
    show_bars: bool = True,
) -> ReportTrainResult:
    """Train a captioner on the concatenation of ``parts``; best epoch by validation clinical F1 macro."""
    import torch
    import torch.nn.functional as F

    from ..utility.train import _augment, _normalise, seed_everything
    from .captioner import build_captioner
    from .scores import clinical_f1

    started = time.time()
    if epochs < 1 or batch_size < 1:
        raise InputError("epochs and batch_size must be >= 1.")
    if not parts:
        raise InputError("No training pairs given.")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    max_len = int(architecture.get("max_len", 96))

    train_parts, val_parts, how = [], [], []
    for i, p in enumerate(parts):
        tr, va, desc = split_train_val(p.data, val_fraction=val_fraction, seed=seed + i)
        train_parts.append(p.subset(tr))
        val_parts.append(p.subset(va))
        how.append(f"{p.data.name}: {desc}")
    train = concat_pairs(train_parts, "train")
    if max_train_samples is not None and max_train_samples < len(train):
        keep = np.sort(np.random.default_rng(seed).choice(len(train), size=max_train_samples, replace=False))
        train = train.subset(keep)
    val = concat_pairs(val_parts, "validation")
    vocab = Vocab.build(train.reports.tolist())
    tok_tr = _tokens(vocab, train.reports.tolist(), max_len)
    tok_va = _tokens(vocab, val.reports.tolist(), max_len)
    y_tr = np.nan_to_num(binarize(report_labels(train.reports.tolist()), "zeros"), nan=0.0).astype(np.float32)
    val_ref_labels = report_labels(val.reports.tolist())

    config = {
        "model": model_name,
        "architecture": dict(architecture),
        "image_size": image_size,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "label_loss": label_loss,
        "optimizer": "AdamW",
        "scheduler": "CosineAnnealingLR(T_max=epochs, eta_min=lr/100), stepped per epoch",
        "patience": patience,
        "seed": seed,
        "device": device,
        "validation": "; ".join(how),
        "train_sets": [p.data.name for p in parts],
        "max_train_samples": max_train_samples,
        "vocab": vocab.itos,
        "data_fingerprint": fingerprint(train.data.images, tok_tr, y_tr, val.data.images, tok_va),
    }

    prev_det = torch.are_deterministic_algorithms_enabled()
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        seed_everything(seed)
        net = build_captioner(len(vocab), architecture, image_size).to(device)
        optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=lr * 0.01)
        state: dict[str, Any] = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "bad_epochs": 0,
                                 "history": [], "monitor": None, "done": False, "stopped_early": False}
        resumed_from = 0
        ckpt_path = out / ckpt.CHECKPOINT_FILE
        if ckpt_path.is_file() and resume:
            tensors, header = ckpt.read_checkpoint(ckpt_path)
            old = header["state"].get("config", {})
            keys = ["model", "architecture", "image_size", "seed", "batch_size", "lr", "label_loss", "epochs",
                    "data_fingerprint"]
            diff = [k for k in keys if old.get(k) != config.get(k)]
            if diff:
                raise InputError(f"{ckpt_path} belongs to a different run (differs in: {', '.join(diff)}). "
                                 "Use another output folder, or restart (--restart) to overwrite it.")
            state = ckpt.restore(tensors, header, model=net, optimizer=optimizer, scheduler=sched)
            resumed_from = int(state["epoch"])
        state["config"] = config

        ds = torch.utils.data.TensorDataset(torch.from_numpy(train.data.images), torch.from_numpy(tok_tr),
                                            torch.from_numpy(y_tr))
        n_batches = math.ceil(len(ds) / batch_size)
        drop_last = len(ds) % batch_size == 1 and len(ds) > 1
        start_epoch = epochs + 1 if state.get("done") else int(state["epoch"]) + 1
        for epoch in range(start_epoch, epochs + 1):
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, drop_last=drop_last,
                                                 generator=gen)
            aug_gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch + 7919)
            net.train()
            total = count = 0.0
            bar: Any = loader
            if show_bars:
                from tqdm.auto import tqdm

                bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, total=n_batches)
            for step, (xb, tb, yb) in enumerate(bar, start=1):
                x = _augment(_normalise(xb.to(device)), aug_gen)
                length = int((tb != 0).sum(1).max())
                tb = tb[:, :length].to(device)
                logits, label_logits = net(x, tb[:, :-1])
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tb[:, 1:].reshape(-1),
                                       ignore_index=0)
                if label_loss:
                    loss = loss + label_loss * F.binary_cross_entropy_with_logits(label_logits.float(), yb.to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                optimizer.step()
                total += float(loss.detach()) * len(xb)
                count += len(xb)
                if progress is not None:
                    progress({"stage": "batch", "epoch": epoch, "epochs": epochs, "step": step, "steps": n_batches,
                              "loss": float(loss.detach())})
            train_loss = total / max(count, 1)

            # validation: teacher-forced loss and greedy reports' clinical F1
            net.eval()
            with torch.no_grad():
                vl, vn = 0.0, 0
                for s in range(0, len(val), 64):
                    x = _normalise(torch.from_numpy(val.data.images[s: s + 64]).to(device))
                    tb = torch.from_numpy(tok_va[s: s + 64]).to(device)
                    lg, _ = net(x, tb[:, :-1])
                    vl += float(F.cross_entropy(lg.reshape(-1, lg.shape[-1]).float(), tb[:, 1:].reshape(-1),
                                                ignore_index=0, reduction="sum"))
                    vn += int((tb[:, 1:] != 0).sum())
                val_loss = vl / max(vn, 1)
            texts = generate(net, val.data.images, vocab, device=device)
            try:
                val_f1 = clinical_f1(report_labels(texts), val_ref_labels)["f1_macro"]
                score, monitor = float(val_f1), "val_f1_macro"
            except InputError:
                score, monitor = -val_loss, "val_loss"
            lr_used = optimizer.param_groups[0]["lr"]
            sched.step()
            record, improved, stop = ckpt.end_epoch(
                state, epoch=epoch, epochs=epochs, patience=patience, score=score, monitor=monitor,
                train_loss=train_loss, val_loss=val_loss, lr=lr_used,
                save_best=lambda meta: save_model(net, out, {**config, **meta}))
            ckpt.save_checkpoint(ckpt_path, model=net, optimizer=optimizer, scheduler=sched, state=state)
            if show_bars:
                from tqdm.auto import tqdm

                tqdm.write(f"epoch {epoch}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                           f"{monitor} {abs(score):.4f}{' (best)' if improved else ''}")
            if progress is not None:
                progress({"stage": "epoch", **record, "epochs": epochs, "best_epoch": state["best_epoch"]})
            if stop:
                break
    finally:
        if deterministic:
            torch.use_deterministic_algorithms(prev_det)

    result = ReportTrainResult(
        model_dir=str(out), model=model_name, epochs_run=int(state["epoch"]), best_epoch=int(state["best_epoch"]),
        best_score=abs(float(state["best_score"])), monitor=str(state.get("monitor")),
        stopped_early=bool(state.get("stopped_early")), resumed_from_epoch=resumed_from, n_train=len(train),
        n_val=len(val), validation=config["validation"], vocab_size=len(vocab), history=list(state["history"]),
        config={k: v for k, v in config.items() if k != "vocab"}, seconds=time.time() - started,
    )
    (out / "result.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result
