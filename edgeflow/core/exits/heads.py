"""Early-exit heads (BranchyNet: Teerapittayanon et al., 2016) as the runtime uses them: the head, where it
attaches, and the confidence rule.

An exit head reads the *primary* tensor crossing a position (``CutInfo.primary``) and classifies it. When its
confidence passes a threshold the request can stop at that tier and skip the rest of the model.

Training and calibration reach features through a *tap*: ``tap(x) -> (features, output)``, the primary tensors at
the exit positions plus the model output from one forward pass. :func:`partition_tap` builds one from a
:class:`~edgeflow.core.partition.Partition` (slices share the model's parameters, so gradients reach the backbone);
tests can pass any callable.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgeflow.core.partition import Partition
from edgeflow.errors import PartitionError

__all__ = [
    "CRITERIA",
    "ExitSpec",
    "ExitHead",
    "FeatureTap",
    "partition_tap",
    "position_after",
    "exit_specs_for",
    "check_exits",
    "confidence",
    "head_logits",
]

# Both criteria are confidences in [0, 1] and a sample exits when confidence >= threshold, so a higher
# threshold never exits more samples, whichever criterion is used.
CRITERIA = ("max_prob", "entropy")

FeatureTap = Callable[[torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]
"""``tap(x) -> (features at each exit position, model output)``."""


@dataclass(frozen=True)
class ExitSpec:
    """Where an exit head attaches and what it looks like (plain data, stored in artifacts).

    Attributes:
        position: cut position whose primary tensor the head reads.
        in_channels: channels C of that tensor: (B, C, H, W) or (B, T, C).
        num_classes: classifier outputs.
        rank: 4 for feature maps (global average pool), 3 for token sequences (mean over tokens).
        hidden: channels of a 1×1 conv (or per-token Linear) + ReLU before pooling; None for none.
        pool: side of the average-pool grid for feature maps: 1 is global average pooling; 2 or 4 keep
            a coarse layout (early feature maps say *where* strokes are, which a global mean forgets).
            Token sequences are always averaged over tokens (pool must be 1).
        tensor: graph node name of the primary tensor, to check the head sits where it was trained.
    """

    position: int
    in_channels: int
    num_classes: int
    rank: int = 4
    hidden: int | None = None
    pool: int = 1
    tensor: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ExitSpec:
        return cls(**d)


class ExitHead(nn.Module):
    """Pool + classifier. Takes (B, C, H, W) or (B, T, C) features, returns (B, num_classes) logits."""

    def __init__(self, spec: ExitSpec) -> None:
        super().__init__()
        if spec.rank not in (3, 4):
            raise ValueError(f"exit at position {spec.position}: rank must be 3 or 4, got {spec.rank}")
        if spec.pool < 1 or (spec.rank == 3 and spec.pool != 1):
            raise ValueError(f"exit at position {spec.position}: pool {spec.pool} invalid for rank {spec.rank}")
        self.spec = spec
        c = spec.in_channels
        self.shrink: nn.Module | None = None
        if spec.hidden:
            layer = nn.Conv2d(c, spec.hidden, 1) if spec.rank == 4 else nn.Linear(c, spec.hidden)
            self.shrink = nn.Sequential(layer, nn.ReLU())
            c = spec.hidden
        self.fc = nn.Linear(c * spec.pool**2, spec.num_classes)

    @property
    def position(self) -> int:
        return self.spec.position

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) or (B, T, C)
        if x.dim() != self.spec.rank:
            raise ValueError(f"exit at position {self.spec.position} expects rank {self.spec.rank}, got {tuple(x.shape)}")
        if self.shrink is not None:
            x = self.shrink(x)
        if self.spec.rank == 3:
            x = x.mean(1)  # (B, C)
        elif self.spec.pool == 1:
            x = x.mean((2, 3))  # (B, C)
        else:
            x = F.adaptive_avg_pool2d(x, self.spec.pool).flatten(1)  # (B, C * pool * pool)
        return self.fc(x)  # (B, num_classes)


# ------------------------------------------------------------------------------------- attaching


def position_after(p: Partition, module_prefix: str) -> int:
    """The position right after the last graph node belonging to module ``module_prefix``.

    E.g. ``position_after(p, "layer2")`` is the boundary after a ResNet's stage 2.

    Raises:
        PartitionError: no node belongs to that module, or the position is not a candidate cut.
    """
    last = -1
    for i in range(p.num_positions):
        label = p.node_label(i)
        if label == module_prefix or label.startswith(module_prefix + "."):
            last = i
    if last < 0:
        raise PartitionError(f"no graph node belongs to module {module_prefix!r}")
    pos = last + 1
    if pos not in p.cuts:
        raise PartitionError(f"position {pos} after {module_prefix!r} is not a candidate cut")
    return pos


def exit_specs_for(
    p: Partition,
    positions: Sequence[int],
    num_classes: int,
    hidden: int | Sequence[int | None] | None = None,
    pool: int | Sequence[int] = 1,
) -> list[ExitSpec]:
    """Exit specs for ``positions``, reading channels and rank from the partition's primary tensors.

    ``hidden`` and ``pool`` are one value for all exits or one per position (see :class:`ExitSpec`).

    Raises:
        PartitionError: a position is not a candidate cut, or its primary tensor is not rank 3 or 4.
    """
    hiddens = list(hidden) if isinstance(hidden, Sequence) else [hidden] * len(positions)
    pools = list(pool) if isinstance(pool, Sequence) else [pool] * len(positions)
    if len(hiddens) != len(positions) or len(pools) != len(positions):
        raise ValueError(f"{len(hiddens)} hidden sizes and {len(pools)} pools for {len(positions)} positions")
    specs = []
    for k, h, g in zip(positions, hiddens, pools):
        if k not in p.cuts:
            raise PartitionError(f"exit position {k} is not a candidate cut")
        info = p.cut_info(k)
        t = info.tensors[info.primary]
        if len(t.shape) not in (3, 4):
            raise PartitionError(f"exit position {k}: primary tensor {t.name} has shape {t.shape}, not rank 3 or 4")
        c = t.shape[1] if len(t.shape) == 4 else t.shape[-1]
        specs.append(ExitSpec(k, c, num_classes, rank=len(t.shape), hidden=h, pool=g if len(t.shape) == 4 else 1, tensor=t.name))
    return specs


def partition_tap(p: Partition, positions: Sequence[int]) -> FeatureTap:
    """A tap giving the primary tensors at ``positions`` and the model output, from one pass.

    The slices share parameters with ``p.model``: gradients flow into the backbone, and train/eval mode
    follows the model's modules.

    Raises:
        PartitionError: positions not strictly increasing candidate cuts.
    """
    positions = list(positions)
    slices = p.split(positions)
    primaries = [p.cut_info(k).primary for k in positions]

    def tap(x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        feats: list[torch.Tensor] = []
        out: Any = (x,)
        for i, s in enumerate(slices):
            out = s(*out) if isinstance(out, tuple) else s(out)
            if i < len(primaries):
                feats.append(out[primaries[i]] if isinstance(out, tuple) else out)
        return feats, out

    return tap


def check_exits(p: Partition, heads: Iterable[ExitHead]) -> None:
    """Check each head's recorded tensor name matches the primary tensor at its position.

    Raises:
        PartitionError: a head does not fit the traced graph (the model or tracer changed).
    """
    for h in heads:
        s = h.spec
        if s.position not in p.cuts:
            raise PartitionError(f"exit position {s.position} is not a candidate cut of this model")
        info = p.cut_info(s.position)
        name = info.tensors[info.primary].name
        if s.tensor and s.tensor != name:
            raise PartitionError(f"exit at position {s.position} was trained on {s.tensor!r}, graph has {name!r}")


# ------------------------------------------------------------------------------------- confidence


def confidence(logits: torch.Tensor, criterion: str = "max_prob") -> torch.Tensor:
    """Per-sample confidence in [0, 1]; a sample exits when ``confidence >= threshold``.

    ``max_prob`` is the top softmax probability. ``entropy`` is ``1 - H(p) / log(C)``, so it too is
    1 for a one-hot prediction and 0 for a uniform one.

    Args:
        logits: (B, C).
        criterion: one of ``CRITERIA``.

    Returns:
        (B,) float tensor.
    """
    probs = logits.float().softmax(-1)  # (B, C)
    if criterion == "max_prob":
        return probs.max(-1).values
    if criterion == "entropy":
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1)  # (B,)
        return (1.0 - ent / math.log(logits.shape[-1])).clamp(0.0, 1.0)
    raise ValueError(f"unknown exit criterion {criterion!r}; expected one of {CRITERIA}")


@torch.no_grad()
def head_logits(
    tap: FeatureTap, heads: Sequence[ExitHead], images: torch.Tensor, batch_size: int
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Exit logits (one (N, C) per head) and final logits (N, C) over a dataset, in eval mode."""
    exit_chunks: list[list[torch.Tensor]] = [[] for _ in heads]
    final_chunks = []
    for i in range(0, len(images), batch_size):
        feats, out = tap(images[i : i + batch_size])
        for j, (h, f) in enumerate(zip(heads, feats)):
            exit_chunks[j].append(h(f))
        final_chunks.append(out)
    return [torch.cat(c) for c in exit_chunks], torch.cat(final_chunks)
