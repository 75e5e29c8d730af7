"""CheXbert (Smit et al. 2020), the report labeler behind "CheXbert F1", when its weights are on this machine.

Architecture as in stanfordmlgroup/CheXbert ``src/models/bert_labeler.py``: ``bert-base-uncased``, the [CLS]
hidden state through dropout into 13 linear heads of 4 classes (blank, positive, negative, uncertain) for the
conditions and Support Devices, and one head of 2 classes (blank, positive) for No Finding. The published
checkpoint ``chexbert.pth`` is a ``torch.save`` dict whose ``model_state_dict`` keys carry DataParallel's
``module.`` prefix; it is read with ``torch.load(weights_only=True)`` (no pickled code runs).

Looked for: ``weights=`` / ``--chexbert FILE``, else ``$CHEXGEN_CHEXBERT_WEIGHTS``. The tokenizer and BERT
config come from a folder next to the checkpoint holding ``vocab.txt`` + ``config.json`` (``bert-base-uncased``
saved with ``save_pretrained``), else ``$CHEXGEN_CHEXBERT_BERT``, else the local Hugging Face cache of
``bert-base-uncased``. Nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import settings
from ..errors import UnavailableError
from ..pathologies import INDEX, N_LABELS

WEIGHTS_ENV, BERT_ENV = "CHEXGEN_CHEXBERT_WEIGHTS", "CHEXGEN_CHEXBERT_BERT"
# CheXbert's head order (src/constants.py CONDITIONS)
CONDITIONS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation",
              "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture",
              "Support Devices", "No Finding")
# head class -> CheXpert value: 0 blank, 1 positive, 2 negative, 3 uncertain
CLASS_VALUES = (np.nan, 1.0, 0.0, -1.0)
HOW_TO_PROVIDE = (f"Download chexbert.pth (stanfordmlgroup/CheXbert's README links it) and bert-base-uncased on a "
                  f"machine with network, then set {WEIGHTS_ENV}=/path/chexbert.pth (and {BERT_ENV}=folder of "
                  "bert-base-uncased if it is not in the Hugging Face cache), or pass --chexbert FILE.")


def _bert_folder(weights: Path) -> str | None:
    for cand in (weights.parent / "bert-base-uncased", Path(settings.get(BERT_ENV) or "/nonexistent")):
        if (cand / "config.json").is_file() and (cand / "vocab.txt").is_file():
            return str(cand)
    try:
        from huggingface_hub import try_to_load_from_cache

        cfg = try_to_load_from_cache("bert-base-uncased", "config.json")
        voc = try_to_load_from_cache("bert-base-uncased", "vocab.txt")
    except Exception:
        return None
    if isinstance(cfg, str) and isinstance(voc, str):
        return str(Path(cfg).parent)
    return None


def find(weights: str | os.PathLike | None = None) -> tuple[Path | None, str | None, str]:
    """(checkpoint, BERT folder, reason): both found, or a reason naming what is missing."""
    w = weights or settings.get(WEIGHTS_ENV)
    if not w:
        return None, None, f"CheXbert weights not given (--chexbert FILE or {WEIGHTS_ENV}); {HOW_TO_PROVIDE}"
    path = Path(w).expanduser()
    if not path.is_file():
        return None, None, f"CheXbert weights {str(path)!r} do not exist; {HOW_TO_PROVIDE}"
    bert = _bert_folder(path)
    if bert is None:
        return path, None, f"bert-base-uncased (tokenizer and config) not found for CheXbert; {HOW_TO_PROVIDE}"
    return path, bert, "found"


class CheXbert:
    """A loaded CheXbert labeler: ``label(texts) -> [N, 14]`` in the project's label order (1/0/-1/NaN)."""

    def __init__(self, checkpoint: Path, bert_folder: str, device: str = "cpu", batch_size: int = 32):
        import torch
        from torch import nn
        from transformers import BertConfig, BertModel, BertTokenizer

        class _Labeler(nn.Module):
            def __init__(self, config: Any):
                super().__init__()
                self.bert = BertModel(config, add_pooling_layer=True)
                self.dropout = nn.Dropout(0.1)
                hidden = config.hidden_size
                self.linear_heads = nn.ModuleList([nn.Linear(hidden, 4) for _ in range(13)] + [nn.Linear(hidden, 2)])

            def forward(self, ids: Any, mask: Any) -> list[Any]:
                cls = self.dropout(self.bert(ids, attention_mask=mask)[0][:, 0, :])
                return [head(cls) for head in self.linear_heads]

        self.tokenizer = BertTokenizer.from_pretrained(bert_folder, local_files_only=True)
        config = BertConfig.from_pretrained(bert_folder, local_files_only=True)
        net = _Labeler(config)
        blob = torch.load(str(checkpoint), map_location="cpu", weights_only=True)
        state = blob.get("model_state_dict", blob) if isinstance(blob, dict) else blob
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
        state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
        net.load_state_dict(state, strict=True)
        self.net = net.to(device).eval()
        self.device, self.batch_size = device, batch_size

    def label(self, texts: list[str]) -> np.ndarray:
        import torch

        out = np.full((len(texts), N_LABELS), np.nan, dtype=np.float32)
        with torch.no_grad():
            for s in range(0, len(texts), self.batch_size):
                part = [" ".join(str(t).split()) for t in texts[s: s + self.batch_size]]
                enc = self.tokenizer(part, padding=True, truncation=True, max_length=512, return_tensors="pt")
                heads = self.net(enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device))
                for h, name in enumerate(CONDITIONS):
                    cls = heads[h].argmax(-1).cpu().numpy()
                    out[s: s + len(part), INDEX[name]] = [CLASS_VALUES[int(c)] for c in cls]
        return out


def load_chexbert(weights: str | os.PathLike | None = None, device: str = "cpu") -> CheXbert:
    path, bert, why = find(weights)
    if path is None or bert is None:
        raise UnavailableError(why)
    return CheXbert(path, bert, device)


def try_load(weights: str | os.PathLike | None = None, device: str = "cpu") -> tuple[CheXbert | None, str]:
    """(labeler, 'loaded from ...') or (None, why it is unavailable)."""
    try:
        model = load_chexbert(weights, device)
    except UnavailableError as exc:
        return None, str(exc)
    return model, f"CheXbert loaded from {find(weights)[0]}"
