"""Planner inputs measured from a model: its profile, exit-head seconds, and exit behaviour (from held-out data or
the artifact's calibration table).

Computation only (torch, no files): callers load the artifact and the data. The clock is a parameter, as in
``edgeflow.core.profile``. :func:`planning_inputs` is what both the device's live planner (``edgeflow.agent.measure``)
and the scenario runner's planning (``edgeflow.scenario.planning``) measure before they build a cost model.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from edgeflow.core.codecs import get_codec
from edgeflow.core.exits import ExitHead, confidence, partition_tap
from edgeflow.core.partition import Partition
from edgeflow.core.profile import ModelProfile, profile_model

from .exitmodel import DEFAULT_EXIT_GRID, ExitModel

__all__ = ["PlanningInputs", "planning_inputs", "exit_model_from_heads", "exit_head_seconds"]


@dataclass
class PlanningInputs:
    """What a cost model needs measured from the model on one host.

    Attributes:
        profile: per-position compute, bytes and codec costs.
        exit_head_s: seconds of each exit head (with its confidence), by position.
        exits: the exit behaviour (None without heads or calibration).
    """

    profile: ModelProfile
    exit_head_s: dict[int, float]
    exits: ExitModel | None


def planning_inputs(
    p: Partition,
    inputs: tuple[torch.Tensor, ...],
    heads: Mapping[int, nn.Module],
    calibration: Any,
    *,
    activation_codecs: Sequence[str],
    input_codecs: Sequence[str],
    name: str = "model",
    repeats: int = 3,
    head_repeats: int = 5,
    codec_fit_points: int | None = None,
    exit_grid: Sequence[float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> PlanningInputs:
    """Profile ``p`` on ``inputs`` (codecs timed as served, one repeat), time its exit heads, and read the exit
    behaviour from ``calibration`` (a ``CalibrationTable``: exact joint statistics when it keeps per-sample data).

    Args:
        codec_fit_points: see :func:`edgeflow.core.profile.profile_model` (fast: the live planner's start-up, which
            then skips counting FLOPs: the cost model reads seconds, not FLOPs).
        exit_grid: thresholds the exit model offers (default: ``DEFAULT_EXIT_GRID``).
    """
    prof = profile_model(
        p, inputs, name=name, activation_codecs=[get_codec(c) for c in activation_codecs],
        input_codecs=[get_codec(c) for c in input_codecs], repeats=repeats, codec_repeats=1,
        codec_fit_points=codec_fit_points, count_flops=codec_fit_points is None, clock=clock,
    )  # fmt: skip
    ordered = [heads[k] for k in sorted(heads)]
    head_s = exit_head_seconds(p, ordered, inputs[0], repeats=head_repeats, clock=clock) if ordered else {}
    exits = None
    if ordered and calibration is not None:
        exits = ExitModel.from_calibration(calibration, tuple(exit_grid) if exit_grid is not None else DEFAULT_EXIT_GRID)
    return PlanningInputs(prof, head_s, exits)


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
