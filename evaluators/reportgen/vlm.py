"""LLaVA-Rad-style vision-language models through transformers, fine-tuned with LoRA (peft).

An entry of kind ``llava`` names a folder (or Hub id, looked up in the local cache only when offline) holding a
``LlavaForConditionalGeneration`` and its processor, as ``save_pretrained`` writes them. Fine-tuning trains LoRA
adapters on the language model's attention projections only (the vision tower and projector stay frozen), with
the prompt's tokens masked out of the loss, so the model learns to write the report that follows the prompt.
Checkpoints hold only the trainable (LoRA) tensors, the optimizer, the LR schedule and the RNGs, written every
epoch through :mod:`evaluators.utility.checkpoint`; a killed run resumes from the last epoch. The best epoch
(lowest validation loss) is saved with peft's ``save_pretrained`` under ``adapter/``.

A 7B model needs a GPU; the code path is exercised on CPU with a tiny random model of the same classes
(``tests/tiny_vlm.py``).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UnavailableError
from ..utility import checkpoint as ckpt
from .entry import ReportModelEntry

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _weights_path(weights: str) -> str | None:
    """A local folder holding config.json for ``weights`` (a folder or a Hub id in the local cache), else None."""
    p = Path(weights).expanduser()
    if p.is_dir():
        return str(p) if (p / "config.json").is_file() else None
    if weights.startswith(("/", "~", ".")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(weights, "config.json")
    except Exception:  # a malformed id
        return None
    return str(Path(found).parent) if isinstance(found, str) and os.path.isfile(found) else None


def llava_availability(entry: ReportModelEntry, device: str | None = None) -> tuple[bool, str]:
    try:
        import peft  # noqa: F401
        from transformers import LlavaForConditionalGeneration  # noqa: F401
    except ImportError as exc:
        return False, f"needs transformers with Llava and peft ({exc}); pip install -r requirements.txt"
    weights = str(entry.get("weights"))
    if _weights_path(weights) is None:
        return False, (f"weights {weights!r} are not on this machine (not a folder with config.json, not in the "
                       "Hugging Face cache); nothing is downloaded offline")
    want = str(entry.get("device", "cuda"))
    if want.startswith("cuda"):
        import torch

        have = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if not have.startswith("cuda"):
            return False, "needs a GPU (entry device = 'cuda'): a 7B model does not fine-tune on this CPU"
    return True, f"transformers Llava from {weights}, LoRA fine-tuning (peft)"


def load_llava(entry: ReportModelEntry, device: str) -> tuple[Any, Any]:
    """(model, processor) of an entry, from local files only."""
    import torch
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    ok, why = llava_availability(entry, device)
    if not ok:
        raise UnavailableError(f"Report model {entry.name!r} is unavailable: {why}. {entry.how_to_provide}".strip())
    folder = _weights_path(str(entry.get("weights")))
    dtype = getattr(torch, DTYPES[str(entry.get("dtype", "fp32"))])
    if not device.startswith("cuda") and dtype != torch.float32:
        dtype = torch.float32  # half precision matmuls are slow or missing on CPU
    try:
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
        model = LlavaForConditionalGeneration.from_pretrained(folder, dtype=dtype, local_files_only=True)
    except Exception as exc:  # wrong folder layout, missing processor files
        raise InputError(f"Could not load a Llava model and processor from {folder}: {exc}. The folder must be "
                         "written by LlavaForConditionalGeneration.save_pretrained and processor.save_pretrained.") from exc
    return model.to(device), processor


def add_lora(model: Any, entry: ReportModelEntry) -> Any:
    """LoRA adapters on the language model's attention projections only (vision tower frozen)."""
    from peft import LoraConfig, get_peft_model

    spec = dict(entry.get("lora") or {})
    names = list(spec.get("target_modules") or ["q_proj", "k_proj", "v_proj", "o_proj"])
    pattern = r".*language_model.*\.(" + "|".join(re.escape(n) for n in names) + r")$"
    cfg = LoraConfig(r=int(spec.get("r", 16)), lora_alpha=int(spec.get("alpha", 32)),
                     lora_dropout=float(spec.get("dropout", 0.05)), target_modules=pattern, bias="none")
    return get_peft_model(model, cfg)


class _Trainable:
    """The trainable tensors of a peft model, as the model argument of evaluators.utility.checkpoint."""

    def __init__(self, model: Any):
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        params = dict(self.model.named_parameters())
        missing = [n for n in self.state_dict() if n not in state]
        if missing:
            raise InputError(f"Checkpoint lacks {len(missing)} LoRA tensor(s) (first: {missing[0]}); restart the run.")
        import torch

        with torch.no_grad():
            for n, v in state.items():
                params[n].copy_(v.to(params[n].device, params[n].dtype))


def _pil(images: np.ndarray) -> list[Any]:
    from PIL import Image

    return [Image.fromarray(im).convert("RGB") for im in images]


def _batch(processor: Any, images: np.ndarray, prompt: str, reports: Sequence[str], device: str) -> dict[str, Any]:
    """Inputs with labels: the prompt's tokens (and padding) are -100, so only the report is learned."""
    eos = processor.tokenizer.eos_token or ""
    full = [f"{prompt} {r}{eos}" for r in reports]
    processor.tokenizer.padding_side = "right"
    enc = processor(images=_pil(images), text=full, return_tensors="pt", padding=True)
    head = processor(images=_pil(images[:1]), text=[prompt], return_tensors="pt")
    n_prompt = int(head["attention_mask"].sum())
    labels = enc["input_ids"].clone()
    labels[:, :n_prompt] = -100
    labels[enc["attention_mask"] == 0] = -100
    enc["labels"] = labels
    return {k: v.to(device) for k, v in enc.items()}


def generate_llava(model: Any, processor: Any, images: np.ndarray, *, prompt: str, max_new_tokens: int,
                   device: str, batch_size: int = 8) -> list[str]:
    import torch

    model.eval()
    processor.tokenizer.padding_side = "left"
    out: list[str] = []
    with torch.no_grad():
        for s in range(0, len(images), batch_size):
            part = images[s: s + batch_size]
            enc = processor(images=_pil(part), text=[prompt] * len(part), return_tensors="pt", padding=True).to(device)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
            out += [t.strip() for t in processor.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    return out


def finetune_llava(
    entry: ReportModelEntry,
    train_images: np.ndarray,
    train_reports: Sequence[str],
    val_images: np.ndarray,
    val_reports: Sequence[str],
    *,
    out_dir: str | os.PathLike,
    device: str,
    seed: int = 0,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    max_steps: int | None = None,
    resume: bool = True,
    progress: Any = None,
) -> dict[str, Any]:
    """LoRA fine-tuning; returns the run summary (history, best epoch, adapter folder)."""
    import torch

    from ..utility.data import fingerprint
    from ..utility.train import seed_everything

    started = time.time()
    epochs = int(epochs or entry.get("epochs", 1))
    batch_size = int(batch_size or entry.get("batch_size", 4))
    lr = float(lr or entry.get("lr", 2e-4))
    prompt = str(entry.get("prompt", "USER: <image>\nWrite the report. ASSISTANT:"))
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    model, processor = load_llava(entry, device)
    model = add_lora(model, entry)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(train_images) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    config = {"model": entry.name, "weights": str(entry.get("weights")), "lora": entry.get("lora"), "seed": seed,
              "epochs": epochs, "batch_size": batch_size, "lr": lr, "prompt": prompt, "max_steps": max_steps,
              "data_fingerprint": fingerprint(train_images, np.array(list(train_reports), dtype=str))}
    state: dict[str, Any] = {"epoch": 0, "best_score": -math.inf, "best_epoch": 0, "history": [], "done": False}
    ckpt_path = out / ckpt.CHECKPOINT_FILE
    resumed_from = 0
    if ckpt_path.is_file() and resume:
        tensors, header = ckpt.read_checkpoint(ckpt_path)
        old = header["state"].get("config", {})
        diff = [k for k in config if old.get(k) != config[k]]
        if diff:
            raise InputError(f"{ckpt_path} belongs to a different run (differs in: {', '.join(diff)}). Use another "
                             "output folder, or restart (--restart).")
        state = ckpt.restore(tensors, header, model=_Trainable(model), optimizer=optimizer, scheduler=sched)
        resumed_from = int(state["epoch"])
    state["config"] = config
    reports = list(train_reports)
    for epoch in range(int(state["epoch"]) + 1, epochs + 1):
        if state.get("done"):
            break
        order = np.random.default_rng(seed * 1_000_003 + epoch).permutation(len(train_images))
        model.train()
        total, count = 0.0, 0
        for step, s in enumerate(range(0, len(order), batch_size), start=1):
            if max_steps is not None and step > max_steps:
                break
            idx = order[s: s + batch_size]
            enc = _batch(processor, train_images[idx], prompt, [reports[i] for i in idx], device)
            loss = model(**enc).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
            if progress is not None:
                progress({"stage": "batch", "epoch": epoch, "epochs": epochs, "step": step, "steps": steps_per_epoch,
                          "loss": float(loss.detach())})
        model.eval()
        with torch.no_grad():
            vl, vn = 0.0, 0
            for s in range(0, len(val_images), batch_size):
                enc = _batch(processor, val_images[s: s + batch_size], prompt, list(val_reports[s: s + batch_size]),
                             device)
                vl += float(model(**enc).loss) * len(enc["labels"])
                vn += len(enc["labels"])
        val_loss = vl / max(vn, 1)
        improved = -val_loss > state["best_score"] + 1e-9 or state["best_epoch"] == 0
        if improved:
            state.update(best_score=-val_loss, best_epoch=epoch)
            model.save_pretrained(str(out / "adapter"))
        state["history"].append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_loss,
                                 "best": improved})
        state["epoch"] = epoch
        state["done"] = epoch == epochs
        ckpt.save_checkpoint(ckpt_path, model=_Trainable(model), optimizer=optimizer, scheduler=sched, state=state)
        if progress is not None:
            progress({"stage": "epoch", **state["history"][-1], "epochs": epochs, "best_epoch": state["best_epoch"]})
    summary = {"model_dir": str(out / "adapter"), "model": entry.name, "epochs_run": int(state["epoch"]),
               "best_epoch": int(state["best_epoch"]), "best_score": -float(state["best_score"]),
               "monitor": "val_loss", "resumed_from_epoch": resumed_from, "n_train": len(train_images),
               "n_val": len(val_images), "history": state["history"], "seconds": time.time() - started}
    (out / "result.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def load_finetuned(entry: ReportModelEntry, adapter_dir: str | os.PathLike, device: str) -> tuple[Any, Any]:
    """The entry's model with a saved LoRA adapter applied, and its processor."""
    from peft import PeftModel

    model, processor = load_llava(entry, device)
    return PeftModel.from_pretrained(model, str(adapter_dir)).to(device).eval(), processor
