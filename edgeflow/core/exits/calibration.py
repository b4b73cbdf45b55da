"""The calibration table the planner reads: per exit and threshold, measured on held-out data, the exit rate, the
accuracy of exited samples and the overall accuracy (and, optionally, the per-sample data for exact joint
statistics). Stored in the artifact as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from edgeflow.core.exits.heads import CRITERIA, ExitHead, FeatureTap, confidence, head_logits

__all__ = ["DEFAULT_THRESHOLDS", "CalibrationRow", "CalibrationSamples", "CalibrationTable", "calibrate"]

DEFAULT_THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(20)) + (
    0.96, 0.97, 0.98, 0.99, 0.995, 0.999,
)  # fmt: skip


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
    exit_logits, final = head_logits(tap, heads, images, batch_size)
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
