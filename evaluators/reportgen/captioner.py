"""The small captioner: a CNN image encoder trained from random weights + a small transformer decoder.

Why this design: the utility question is whether synthetic image/report pairs teach a model to read *real*
images. A frozen pretrained image encoder (the shipped demo encoder was trained on real demo-world images)
would already know the real images before any setting trains, so every setting would share what only the
real data should teach. Here everything, pixels to words, is learned from the setting's own pairs.

- Encoder: a timm CNN (default ``resnet18``, one input channel, random init); its last feature map (4x4 at
  128 px) becomes 16 visual tokens, plus one token made from a 14-label head on the pooled features. The label
  head is trained on the training reports' own labels (the project's labeler run on the training reports), so
  the image encoder gets a direct signal about findings, as classification-guided report generators do.
- Decoder: ``nn.TransformerDecoder`` (pre-norm, causal self-attention + cross-attention to the image tokens),
  word-level vocabulary built from the training reports, greedy decoding.

13M parameters with resnet18 (11M of them the CNN), d_model 256 and 2 decoder layers; on a 2-core CPU it trains
on about a thousand 128 px pairs in a few minutes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..pathologies import N_LABELS


class Captioner(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        *,
        encoder: str = "resnet18",
        image_size: int = 128,
        d_model: int = 256,
        layers: int = 2,
        heads: int = 4,
        ff: int = 512,
        max_len: int = 96,
        dropout: float = 0.1,
    ):
        super().__init__()
        import timm

        self.max_len = max_len
        self.cnn = timm.create_model(encoder, pretrained=False, in_chans=1, num_classes=0, global_pool="")
        channels = int(self.cnn.num_features)
        with torch.no_grad():
            was = self.cnn.training
            self.cnn.eval()
            grid = self.cnn(torch.zeros(1, 1, image_size, image_size)).shape[-2:]
            self.cnn.train(was)
        n_tokens = int(grid[0] * grid[1])
        self.proj = nn.Linear(channels, d_model)
        self.vis_pos = nn.Parameter(torch.randn(1, n_tokens, d_model) * 0.02)
        self.label_head = nn.Linear(channels, N_LABELS)
        self.label_proj = nn.Linear(N_LABELS, d_model)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.pos = nn.Embedding(max_len, d_model)
        layer = nn.TransformerDecoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(memory [B, T, D], label logits [B, 14]) for normalised images [B, 1, S, S]."""
        f = self.cnn(x)
        tokens = self.proj(f.flatten(2).transpose(1, 2)) + self.vis_pos
        logits = self.label_head(f.mean(dim=(2, 3)))
        label_token = self.label_proj(torch.sigmoid(logits)).unsqueeze(1)
        return torch.cat([tokens, label_token], dim=1), logits

    def decode(self, memory: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits [B, L, V] for token ids [B, L] (0 = padding)."""
        n = ids.shape[1]
        pos = torch.arange(n, device=ids.device)
        h = self.embed(ids) + self.pos(pos)[None]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=ids.device), diagonal=1)
        h = self.decoder(h, memory, tgt_mask=causal, tgt_key_padding_mask=ids == 0)
        return self.out(self.norm(h))

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory, label_logits = self.encode(x)
        return self.decode(memory, ids), label_logits

    @torch.no_grad()
    def generate(self, x: torch.Tensor, *, bos: int, eos: int, max_len: int | None = None) -> list[list[int]]:
        """Greedy decoding; token ids without <bos>, cut at <eos>."""
        limit = min(max_len or self.max_len, self.max_len)
        memory, _ = self.encode(x)
        ids = torch.full((x.shape[0], 1), bos, dtype=torch.long, device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(limit - 1):
            nxt = self.decode(memory, ids)[:, -1].argmax(-1)
            nxt = torch.where(done, torch.zeros_like(nxt), nxt)  # padding after <eos>
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            done |= nxt == eos
            if bool(done.all()):
                break
        out = []
        for row in ids[:, 1:].tolist():
            seq = []
            for t in row:
                if t == eos or t == 0:
                    break
                seq.append(t)
            out.append(seq)
        return out


def build_captioner(vocab_size: int, spec: dict[str, Any], image_size: int) -> Captioner:
    return Captioner(
        vocab_size,
        encoder=str(spec.get("encoder", "resnet18")),
        image_size=image_size,
        d_model=int(spec.get("d_model", 256)),
        layers=int(spec.get("layers", 2)),
        heads=int(spec.get("heads", 4)),
        ff=int(spec.get("ff", 512)),
        max_len=int(spec.get("max_len", 96)),
        dropout=float(spec.get("dropout", 0.1)),
    )
