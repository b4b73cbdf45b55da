"""Models a user brings: defined here, in a test module, and known to no part of edgeflow.

The agents that serve them load only the exported artifact; nothing imports this file but the exporter and
the test (for the unsplit reference). Factories seed their own weights, so every process builds the same model.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallNet(nn.Module):
    """A small conv net with batch norm and a residual connection; one float32 image input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.head = nn.Linear(8, 5)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.stem(image)))  # (B, 8, H, W)
        h = torch.relu(h + self.block(h))
        return self.head(h.mean((2, 3)))  # (B, 5)


class TinyEncoder(nn.Module):
    """A two-layer text encoder: int64 token ids and an int64 attention mask in, a pooled embedding out."""

    def __init__(self, vocab: int = 64, dim: int = 16, heads: int = 2, layers: int = 2, seq: int = 8) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, seq, dim) * 0.02)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(layers))
        self.qkv = nn.ModuleList(nn.Linear(dim, 3 * dim) for _ in range(layers))
        self.proj = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        self.out = nn.Linear(dim, 4)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids) + self.pos  # (B, T, C)
        B, T, C = h.shape
        bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -1e4  # (B, 1, 1, T)
        for norm, qkv, proj in zip(self.norms, self.qkv, self.proj):
            q, k, v = qkv(norm(h)).split(C, dim=-1)
            q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
            att = torch.softmax(q @ k.transpose(-1, -2) / (C // self.heads) ** 0.5 + bias, dim=-1)
            h = h + proj((att @ v).transpose(1, 2).reshape(B, T, C))
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return self.out((h * m).sum(1) / m.sum(1).clamp(min=1.0))  # (B, 4)


class DataDependent(nn.Module):
    """Python control flow on a tensor's value: torch.export cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return x


def small_net() -> nn.Module:
    torch.manual_seed(1)
    return SmallNet().eval()


def tiny_encoder() -> nn.Module:
    torch.manual_seed(2)
    return TinyEncoder().eval()


def text_batch(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (B, 8) and a padding mask with a different length per row."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (batch, 8), generator=g)
    lengths = torch.randint(1, 9, (batch,), generator=g)
    mask = (torch.arange(8)[None, :] < lengths[:, None]).long()
    return ids, mask
