"""A small Vision Transformer (Dosovitskiy et al., 2020, "An Image is Worth 16x16 Words"),
sized like DeiT-Tiny (Touvron et al., 2021) but shallower.

Attention is written with plain Linear/LayerNorm/matmul — not ``nn.MultiheadAttention`` or
``nn.TransformerEncoder``, which fx keeps as single leaf nodes — so a cut can fall inside a block.
Heads are split with ``unflatten(-1, (heads, -1))`` rather than ``reshape(B, T, heads, d)``: no int
derived from a shape is carried between ops, which keeps every boundary in the graph cuttable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .resnet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["ViTConfig", "Attention", "Block", "ViT", "build_vit"]


@dataclass(frozen=True)
class ViTConfig:
    num_classes: int = 1000  # ImageNet-1k
    image_size: int = 224  # fixed: the position embedding has (image_size / patch_size)^2 + 1 rows
    patch_size: int = 16  # 14×14 = 196 tokens at 224, as ViT-B/16
    dim: int = 192  # DeiT-Tiny's width
    depth: int = 6  # half of DeiT-Tiny's 12: enough blocks to cut between, cheap on a CPU
    num_heads: int = 3  # DeiT-Tiny: 64 dims per head
    mlp_ratio: float = 4.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = 1.0 / math.sqrt(dim // num_heads)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, -1))  # (B, T, 3, h, d)
        qkv = qkv.permute(2, 0, 3, 1, 4)  # (3, B, h, T, d)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, h, T, d) each
        attn = (q @ k.transpose(-2, -1)) * self.scale  # (B, h, T, T)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).flatten(2)  # (B, T, C)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm encoder block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C)
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))  # (B, T, C)


class ViT(nn.Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if config.image_size % config.patch_size:
            raise ValueError(
                f"image_size {config.image_size} is not a multiple of patch_size {config.patch_size}"
            )
        self.config = config
        num_patches = (config.image_size // config.patch_size) ** 2
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.patch_embed = nn.Conv2d(3, config.dim, config.patch_size, config.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, config.dim))
        self.blocks = nn.Sequential(
            *[Block(config.dim, config.num_heads, config.mlp_ratio) for _ in range(config.depth)]
        )
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1]
        x = (x - self.mean) / self.std
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, T, C), T = (H/p)(W/p)
        # expand_as on a (B, 1, C) slice gives the batch size without a shape-derived int.
        cls = self.cls_token.expand_as(x[:, :1])  # (B, 1, C)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, T+1, C)
        x = self.blocks(x)  # (B, T+1, C)
        x = self.norm(x[:, 0])  # (B, C) the class token
        return self.head(x)  # (B, num_classes)


def build_vit(config: ViTConfig) -> ViT:
    return ViT(config)
