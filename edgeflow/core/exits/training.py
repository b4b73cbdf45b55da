"""Training exit heads: BranchyNet joint training of backbone and heads, or the heads alone on a frozen backbone,
and accuracy over a data set. Offline only (``scripts/train_demo.py``); the runtime never imports it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeflow.core.exits.heads import ExitHead, FeatureTap, head_logits

__all__ = ["TrainConfig", "train_with_exits", "evaluate"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40  # ~1 s/epoch for the demo model on 2 cores; accuracy plateaus near 35
    batch_size: int = 64
    lr: float = 3e-3  # AdamW peak of a one-cycle schedule
    weight_decay: float = 5e-4
    # 0: smoothing (0.1 tried) cost no accuracy but capped softmax confidence near 0.9, which squeezed the
    # useful exit thresholds into a narrow band; fresh augmentations each epoch already curb over-fitting.
    label_smoothing: float = 0.0
    exit_weights: tuple[float, ...] | None = None  # BranchyNet weights w_i; None = 1.0 each
    freeze_backbone: bool = False  # True: train the heads only, the backbone stays as it is
    seed: int = 0


def train_with_exits(
    model: nn.Module,
    tap: FeatureTap,
    heads: Sequence[ExitHead],
    epoch_data: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train backbone and exit heads jointly (loss = sum_i w_i CE(exit_i) + CE(final)), or heads only.

    Args:
        model: the backbone whose parameters ``tap`` uses.
        tap: features at the heads' positions (same order as ``heads``) and the model output.
        heads: exit heads.
        epoch_data: ``epoch -> (images (N, 3, H, W), labels (N,))``; may render fresh augmentations.
        config: hyper-parameters.
        on_epoch: called with (epoch, mean loss) after each epoch.

    Returns:
        Mean training loss per epoch.
    """
    weights = config.exit_weights or (1.0,) * len(heads)
    if len(weights) != len(heads):
        raise ValueError(f"{len(weights)} exit weights for {len(heads)} heads")
    gen = torch.Generator().manual_seed(config.seed)
    params = [p for h in heads for p in h.parameters()]
    saved_requires_grad = {p: p.requires_grad for p in model.parameters()}
    if config.freeze_backbone:
        model.requires_grad_(False)
    else:
        params += [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    images, labels = epoch_data(0)
    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.2
    )
    history = []
    try:
        for epoch in range(config.epochs):
            if epoch:
                images, labels = epoch_data(epoch)
            # A frozen backbone stays in eval mode so its batch-norm statistics do not move.
            model.train(not config.freeze_backbone)
            for h in heads:
                h.train()
            perm = torch.randperm(len(labels), generator=gen)
            total, count = 0.0, 0
            for i in range(0, len(labels), config.batch_size):
                idx = perm[i : i + config.batch_size]
                x, y = images[idx], labels[idx]
                feats, out = tap(x)
                loss = F.cross_entropy(out, y, label_smoothing=config.label_smoothing)
                for w, h, f in zip(weights, heads, feats):
                    loss = loss + w * F.cross_entropy(h(f), y, label_smoothing=config.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
                count += len(idx)
            history.append(total / count)
            if on_epoch is not None:
                on_epoch(epoch, history[-1])
    finally:
        for p, flag in saved_requires_grad.items():
            p.requires_grad_(flag)
        model.eval()
        for h in heads:
            h.eval()
    return history


def evaluate(
    tap: FeatureTap, heads: Sequence[ExitHead], images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> dict[str, float]:
    """Accuracy of the final output (``"final"``) and of every exit on all samples (``"exit@<position>"``)."""
    exit_logits, final = head_logits(tap, heads, images, batch_size)
    acc = {"final": (final.argmax(1) == labels).float().mean().item()}
    for h, lg in zip(heads, exit_logits):
        acc[f"exit@{h.position}"] = (lg.argmax(1) == labels).float().mean().item()
    return acc
