"""Early-exit heads (BranchyNet: Teerapittayanon et al., 2016) attached at cut positions.

An exit head reads the *primary* tensor crossing a position (``CutInfo.primary``) and classifies it.
When its confidence passes a threshold the request can stop at that tier and skip the rest of the model.
This module holds the heads, the confidence rule the runtime applies, joint or head-only training, and the
calibration table the planner reads (per exit and threshold: exit rate, accuracy of exited samples,
overall accuracy).

Training and calibration reach features through a *tap*: ``tap(x) -> (features, output)``, the primary
tensors at the exit positions plus the model output from one forward pass. :func:`partition_tap` builds one
from a :class:`~edgeflow.core.partition.Partition` (slices share the model's parameters, so gradients reach
the backbone); tests can pass any callable.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PartitionError
from .partition import Partition

__all__ = [
    "CRITERIA",
    "DEFAULT_THRESHOLDS",
    "ExitSpec",
    "ExitHead",
    "FeatureTap",
    "partition_tap",
    "position_after",
    "exit_specs_for",
    "check_exits",
    "confidence",
    "TrainConfig",
    "train_with_exits",
    "CalibrationSamples",
    "evaluate",
    "CalibrationRow",
    "CalibrationTable",
    "calibrate",
]

# Both criteria are confidences in [0, 1] and a sample exits when confidence >= threshold, so a higher
# threshold never exits more samples, whichever criterion is used.
CRITERIA = ("max_prob", "entropy")
DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20)) + (
    0.96, 0.97, 0.98, 0.99, 0.995, 0.999,
)  # fmt: skip

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


# ------------------------------------------------------------------------------------- training


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


@torch.no_grad()
def _logits(
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


def evaluate(
    tap: FeatureTap, heads: Sequence[ExitHead], images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256
) -> dict[str, float]:
    """Accuracy of the final output (``"final"``) and of every exit on all samples (``"exit@<position>"``)."""
    exit_logits, final = _logits(tap, heads, images, batch_size)
    acc = {"final": (final.argmax(1) == labels).float().mean().item()}
    for h, lg in zip(heads, exit_logits):
        acc[f"exit@{h.position}"] = (lg.argmax(1) == labels).float().mean().item()
    return acc


# ------------------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class CalibrationRow:
    """One exit at one threshold, measured on the calibration split.

    Attributes:
        position: exit position.
        criterion: confidence rule (see :func:`confidence`).
        threshold: a sample exits when confidence >= threshold.
        exit_rate: fraction of samples that exit here.
        exit_accuracy: accuracy of the samples that exit (None when none do).
        overall_accuracy: accuracy when exited samples take this exit's answer and the rest the model's.
    """

    position: int
    criterion: str
    threshold: float
    exit_rate: float
    exit_accuracy: float | None
    overall_accuracy: float


@dataclass(frozen=True, eq=False)
class CalibrationSamples:
    """Per-sample exit data (``max_prob`` criterion), from which the planner computes the exact *joint*
    behaviour of several exits enabled at once (the table's rows are per-exit marginals).

    Attributes:
        positions: exit positions, increasing.
        confidence: (S, E) each head's confidence on each sample (:func:`calibrate` floors it to 1e-4 steps, which
            keeps every ``>=`` test against a threshold on that grid and keeps the JSON small).
        exit_correct: (S, E) bool, head j's answer is right.
        final_correct: (S,) bool, the model output is right.
    """

    positions: tuple[int, ...]
    confidence: np.ndarray
    exit_correct: np.ndarray
    final_correct: np.ndarray

    def __post_init__(self) -> None:
        s, e = len(self.final_correct), len(self.positions)
        if self.confidence.shape != (s, e) or self.exit_correct.shape != (s, e):
            raise ValueError(f"calibration samples: confidence {self.confidence.shape} and exit_correct "
                             f"{self.exit_correct.shape} must be ({s}, {e})")  # fmt: skip
        if list(self.positions) != sorted(set(self.positions)):
            raise ValueError(f"calibration samples: positions {list(self.positions)} must increase")

    def to_json(self) -> dict[str, Any]:
        return {
            "positions": list(self.positions),
            "confidence": self.confidence.tolist(),
            "exit_correct": self.exit_correct.astype(int).tolist(),
            "final_correct": self.final_correct.astype(int).tolist(),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CalibrationSamples):
            return NotImplemented
        return self.positions == other.positions and all(
            np.array_equal(a, b) for a, b in ((self.confidence, other.confidence),
                                              (self.exit_correct, other.exit_correct),
                                              (self.final_correct, other.final_correct)))  # fmt: skip

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CalibrationSamples:
        """Raises: ValueError/KeyError/TypeError on malformed input."""
        positions = tuple(int(k) for k in d["positions"])
        e = len(positions)
        conf = np.asarray(d["confidence"], dtype=np.float64).reshape(-1, e)
        return cls(positions, conf, np.asarray(d["exit_correct"], dtype=bool).reshape(-1, e),
                   np.asarray(d["final_correct"], dtype=bool).reshape(-1))  # fmt: skip


@dataclass
class CalibrationTable:
    """Exit behaviour measured on held-out data: the table the planner uses.

    Attributes:
        rows: one per (exit position, criterion, threshold), sorted that way.
        final_accuracy: accuracy of the full model on the same samples.
        exit_accuracy: position -> accuracy of that exit's head on all samples (threshold 0).
        num_samples: samples measured.
        split: name of the data they came from.
        samples: the per-sample data behind the rows (None in artifacts written before it was kept).
    """

    rows: list[CalibrationRow]
    final_accuracy: float
    exit_accuracy: dict[int, float] = field(default_factory=dict)
    num_samples: int = 0
    split: str = "calibration"
    samples: CalibrationSamples | None = None

    @property
    def positions(self) -> list[int]:
        return sorted({r.position for r in self.rows})

    def rows_for(self, position: int, criterion: str = "max_prob") -> list[CalibrationRow]:
        return [r for r in self.rows if r.position == position and r.criterion == criterion]

    def threshold_for(self, position: int, min_overall_accuracy: float, criterion: str = "max_prob") -> CalibrationRow | None:
        """The row with the highest exit rate whose overall accuracy is at least ``min_overall_accuracy``.

        Returns None when no threshold at this exit keeps that accuracy.
        """
        ok = [r for r in self.rows_for(position, criterion) if r.overall_accuracy >= min_overall_accuracy]
        return max(ok, key=lambda r: (r.exit_rate, -r.threshold), default=None)

    def to_json(self) -> str:
        return json.dumps(
            {
                "rows": [asdict(r) for r in self.rows],
                "final_accuracy": self.final_accuracy,
                "exit_accuracy": {str(k): v for k, v in self.exit_accuracy.items()},
                "num_samples": self.num_samples,
                "split": self.split,
                **({"samples": self.samples.to_json()} if self.samples is not None else {}),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> CalibrationTable:
        """Raises: ValueError/KeyError/TypeError on malformed input."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"calibration table must be a JSON object, got {type(d).__name__}")
        return cls(
            rows=[CalibrationRow(**r) for r in d["rows"]],
            final_accuracy=float(d["final_accuracy"]),
            exit_accuracy={int(k): float(v) for k, v in d.get("exit_accuracy", {}).items()},
            num_samples=int(d.get("num_samples", 0)),
            split=str(d.get("split", "calibration")),
            samples=CalibrationSamples.from_json(d["samples"]) if d.get("samples") is not None else None,
        )

    def summary(self, criterion: str = "max_prob", thresholds: Sequence[float] = (0.5, 0.8, 0.9, 0.95, 0.99)) -> str:
        """A short text table: exit rate / overall accuracy per exit at a few thresholds."""
        lines = [f"final accuracy {self.final_accuracy:.4f} on {self.num_samples} {self.split} samples ({criterion})"]
        for k in self.positions:
            cells = []
            for r in self.rows_for(k, criterion):
                if any(abs(r.threshold - t) < 1e-9 for t in thresholds):
                    cells.append(f"t={r.threshold:g}: exit {r.exit_rate:.2f} acc {r.overall_accuracy:.3f}")
            lines.append(f"exit@{k} (head acc {self.exit_accuracy.get(k, float('nan')):.3f}): " + "; ".join(cells))
        return "\n".join(lines)


def calibrate(
    tap: FeatureTap,
    heads: Sequence[ExitHead],
    images: torch.Tensor,
    labels: torch.Tensor,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    criteria: Sequence[str] = CRITERIA,
    split: str = "calibration",
    batch_size: int = 256,
) -> CalibrationTable:
    """Measure every exit over a grid of thresholds on held-out data.

    Each exit is measured on its own (the request exits there or runs to the end), which is how the planner
    uses an exit: one per plan, at the tier that ends at its position.

    Args:
        tap: features at the heads' positions and the model output.
        heads: exit heads, in tap order.
        images: (N, 3, H, W) held-out images; labels: (N,).
        thresholds: confidence thresholds to tabulate.
        criteria: confidence rules to tabulate.

    Returns:
        The :class:`CalibrationTable`.
    """
    exit_logits, final = _logits(tap, heads, images, batch_size)
    labels_np = labels.numpy()
    final_ok = final.argmax(1).numpy() == labels_np
    rows = []
    exit_acc = {}
    per_sample: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for h, lg in zip(heads, exit_logits):
        exit_ok = lg.argmax(1).numpy() == labels_np
        exit_acc[h.position] = float(exit_ok.mean())
        per_sample[h.position] = (np.floor(confidence(lg, "max_prob").double().numpy() * 1e4) / 1e4, exit_ok)
        for criterion in criteria:
            conf = confidence(lg, criterion).numpy()
            for t in sorted(thresholds):
                exits = conf >= t
                n_exit = int(exits.sum())
                rows.append(
                    CalibrationRow(
                        position=h.position,
                        criterion=criterion,
                        threshold=float(t),
                        exit_rate=n_exit / len(labels_np),
                        exit_accuracy=float(exit_ok[exits].mean()) if n_exit else None,
                        overall_accuracy=float(np.where(exits, exit_ok, final_ok).mean()),
                    )
                )
    order = sorted(per_sample)
    samples = CalibrationSamples(
        tuple(order),
        np.stack([per_sample[k][0] for k in order], 1) if order else np.zeros((len(labels_np), 0)),
        np.stack([per_sample[k][1] for k in order], 1) if order else np.zeros((len(labels_np), 0), dtype=bool),
        final_ok,
    )  # fmt: skip
    return CalibrationTable(
        rows=rows,
        final_accuracy=float(final_ok.mean()),
        exit_accuracy=exit_acc,
        num_samples=len(labels_np),
        split=split,
        samples=samples,
    )
