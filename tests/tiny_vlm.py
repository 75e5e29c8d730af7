"""Tiny random models of the report-generation side's architectures, saved in their real on-disk formats.

- a transformers ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama language model) with its
  ``LlavaProcessor`` (CLIP image processor + a word-level fast tokenizer holding ``<image>``), via save_pretrained;
- a CheXbert checkpoint (``bert_labeler``: BertModel + 13 four-class heads + one two-class head) as the published
  ``chexbert.pth`` is laid out: ``torch.save({'model_state_dict': {'module.' + key: tensor}})``, with a
  ``bert-base-uncased``-style folder (config.json + vocab.txt) next to it.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "USER", ":", "ASSISTANT", "write", "the", "report", "no",
         "effusion", ".", "small", "left", "pleural", "heart", "size", "is", "normal", "enlarged", "pneumothorax"]


def make_tiny_llava(folder: str | Path, *, image_size: int = 32, seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    folder = Path(folder)
    vocab = {w: i for i, w in enumerate(WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tk.decoder = decoders.WordPiece(prefix="##")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    patch = 8
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=image_size, patch_size=patch, projection_dim=16)
    text = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                       pad_token_id=3, bos_token_id=1, eos_token_id=2)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=vocab["<image>"],
                      vision_feature_layer=-1, vision_feature_select_strategy="default",
                      image_seq_length=(image_size // patch) ** 2)
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    proc = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                           crop_size={"height": image_size, "width": image_size}),
        tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default", image_token="<image>",
        num_additional_image_tokens=1)
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def make_tiny_chexbert(folder: str | Path, *, seed: int = 0, force: dict[int, int] | None = None) -> Path:
    """``folder/chexbert.pth`` + ``folder/bert-base-uncased/``; ``force`` {head: class} sets that head's bias so it
    always predicts ``class`` (weights zeroed), to check which head is read as which label."""
    from torch import nn
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    bert_dir = folder / "bert-base-uncased"
    bert_dir.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "effusion", ".", "heart", "is", "enlarged"]
    (bert_dir / "vocab.txt").write_text("\n".join(words) + "\n")
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    config.save_pretrained(bert_dir)
    torch.manual_seed(seed)
    bert = BertModel(config)
    heads = nn.ModuleList([nn.Linear(16, 4) for _ in range(13)] + [nn.Linear(16, 2)])
    for h, cls in (force or {}).items():
        with torch.no_grad():
            heads[h].weight.zero_()
            heads[h].bias.fill_(-10.0)
            heads[h].bias[cls] = 10.0
    state = {f"module.bert.{k}": v for k, v in bert.state_dict().items()}
    state |= {f"module.linear_heads.{k}": v for k, v in heads.state_dict().items()}
    torch.save({"epoch": 8, "model_state_dict": state}, folder / "chexbert.pth")
    return folder / "chexbert.pth"
