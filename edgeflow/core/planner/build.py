"""Planner inputs measured from a model: exit behaviour on held-out data and exit-head seconds.

Computation only (torch, no files): callers load the artifact and the data. The clock is a parameter, as in
``edgeflow.core.profile``.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from edgeflow.core.exits import ExitHead, confidence, partition_tap
from edgeflow.core.partition import Partition

from .exitmodel import DEFAULT_EXIT_GRID, ExitModel

__all__ = ["exit_model_from_heads", "exit_head_seconds"]


@torch.no_grad()
def exit_model_from_heads(
    p: Partition,
    heads: Sequence[ExitHead],
    images: torch.Tensor,
    labels: torch.Tensor,
    grid: Sequence[float] = DEFAULT_EXIT_GRID,
    *,
    criterion: str = "max_prob",
    max_enabled: int | None = None,
    batch_size: int = 256,
) -> ExitModel:
    """The exact joint exit model (:meth:`ExitModel.from_samples`) measured on ``images`` (N, 3, H, W).

    Each sample is scored alone, as the runtime does with batch 1 (a batch exits only if all its samples are
    confident).
    """
    heads = sorted(heads, key=lambda h: h.position)
    tap = partition_tap(p, [h.position for h in heads])
    conf, ok_exit, ok_final = [], [], []
    for i in range(0, len(images), batch_size):
        feats, out = tap(images[i : i + batch_size])
        y = labels[i : i + batch_size]
        logits = [h(f) for h, f in zip(heads, feats)]
        conf.append(torch.stack([confidence(lg, criterion) for lg in logits], 1).numpy())  # (B, E)
        ok_exit.append(torch.stack([lg.argmax(1) == y for lg in logits], 1).numpy())
        ok_final.append((out.argmax(1) == y).numpy())
    return ExitModel.from_samples(
        [h.position for h in heads], np.concatenate(conf), np.concatenate(ok_exit), np.concatenate(ok_final),
        grid, max_enabled,
    )  # fmt: skip


@torch.no_grad()
def exit_head_seconds(
    p: Partition,
    heads: Sequence[nn.Module],
    example: torch.Tensor,
    *,
    repeats: int = 20,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, float]:
    """Median seconds of each head (with its confidence) on the primary tensor at its position, batch 1."""
    values = p.activations(example[:1], positions=[h.position for h in heads])
    out = {}
    for h in heads:
        feat = values[h.position][p.cut_info(h.position).primary]
        times = []
        for r in range(repeats + 2):
            t0 = clock()
            confidence(h(feat))
            if r >= 2:
                times.append(clock() - t0)
        out[h.position] = float(statistics.median(times))
    return out
