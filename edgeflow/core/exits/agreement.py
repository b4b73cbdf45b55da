"""Checking an upstream's answer against an exit head the device runs itself: calibration and the two tests.

A device that sends its activations to an edge or a cloud it does not control gets back a class it cannot
recompute cheaply. What it *can* compute cheaply is an exit head on its own slice (a pooled linear classifier on
the values it already has: a few microseconds). On honest traffic that head agrees with the chain's answer at a
rate measured once on held-out data; an upstream that flips answers pushes both the per-request likelihood of
its answer and the running agreement rate below what calibration allows. Two tests follow (Fides, Li et al. 2023,
verifies outsourced inference with a small model beside the client the same way):

1. **Per request** (:meth:`PlanCheck.suspicious`): the upstream's class ``c`` is flagged when the device head's
   probability of it, ``p_head(c)``, is below the plan's threshold ``tau``: the ``false_alarm`` quantile of
   ``p_head(honest answer)`` on the calibration split. A flip to a class the head finds implausible is caught; the
   calibrated false-alarm rate is the quantile by construction. (A likelihood-ratio test of "honest" against a
   liar choosing uniformly among the other classes reduces to exactly this threshold on ``p_head(c)``.)
2. **Per plan, running** (:class:`AgreementTest`): Wald's sequential probability ratio test of the agreement rate
   ``r0`` (head top-1 equals the answer, calibrated) against ``r0 - drop``, restarted at zero whenever it leans to
   ``r0`` (Page's CUSUM form), so it reacts as fast to a liar that starts late as to one from the start. Crossing
   its upper boundary makes the upstream *suspect*; while suspect, a request whose answer merely disagrees with
   the head's top-1 is flagged too (a liar that picks plausible classes is still caught then), and the suspicion
   ends when the same test, run on, accepts ``r0`` again.

The honest answer of a plan is what the chain returns for it: the first exit past the device's slice whose head
is confident enough, else the model output (:func:`plan_answers`); lossy hops are not modelled (an int8 hop
changes a small fraction of answers; the measured false-alarm rate includes that). Calibration data is per sample
(:class:`AgreementSamples`: each head's softmax and the model's top-1), so any plan's rates are computed from it
exactly, with no re-run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from edgeflow.core.exits.heads import ExitHead, FeatureTap, head_logits

_MIN_FORWARDED = 50  # calibration samples a plan's check needs among those that go upstream (see plan_check)

__all__ = ["AgreementSamples", "AgreementTest", "PlanCheck", "measure_agreement", "plan_answers", "plan_check"]


@dataclass(frozen=True, eq=False)
class AgreementSamples:
    """Per-sample outputs of every exit head and of the model on a calibration split.

    Attributes:
        positions: exit positions, increasing.
        probs: (S, E, C) float64, softmax of each head's logits.
        final: (S,) int64, the model output's top-1 class.
        split: the data they came from (never the test split).
    """

    positions: tuple[int, ...]
    probs: np.ndarray
    final: np.ndarray
    split: str = "calibration"

    def __post_init__(self) -> None:
        s = len(self.final)
        if self.probs.ndim != 3 or self.probs.shape[:2] != (s, len(self.positions)):
            raise ValueError(f"agreement samples: probs {self.probs.shape} must be ({s}, {len(self.positions)}, C)")
        if list(self.positions) != sorted(set(self.positions)):
            raise ValueError(f"agreement samples: positions {list(self.positions)} must increase")

    @property
    def num_samples(self) -> int:
        return len(self.final)

    def head(self, position: int) -> np.ndarray:
        """(S, C) softmax of the head at ``position``.

        Raises:
            KeyError: no head there.
        """
        if position not in self.positions:
            raise KeyError(f"no exit head at position {position}; heads at {list(self.positions)}")
        return self.probs[:, self.positions.index(position)]


@torch.no_grad()
def measure_agreement(tap: FeatureTap, heads: Sequence[ExitHead], images: torch.Tensor, *, split: str,
                      batch_size: int = 128) -> AgreementSamples:  # fmt: skip
    """Run every head and the model over ``images`` (held-out data: never the split results are reported on).

    Args:
        tap: features at the heads' positions and the model output.
        heads: exit heads, in tap order (increasing positions).
        images: (N, ...) model inputs.
        split: name of the data, kept with the samples.
    """
    exit_logits, final = head_logits(tap, heads, images, batch_size)
    probs = np.stack([lg.double().softmax(-1).numpy() for lg in exit_logits], 1)  # (S, E, C)
    return AgreementSamples(tuple(h.position for h in heads), probs, final.argmax(1).numpy().astype(np.int64), split)


def plan_answers(samples: AgreementSamples, upstream_exits: Sequence[tuple[int, float]]) -> np.ndarray:
    """(S,) the class an honest chain answers for each sample under a plan whose exits past the device's slice
    are ``upstream_exits`` ((position, threshold) pairs): the first confident one, else the model output."""
    answer = samples.final.copy()
    decided = np.zeros(samples.num_samples, dtype=bool)
    for position, threshold in sorted(upstream_exits):
        if position not in samples.positions:
            continue
        p = samples.head(position)
        fire = ~decided & (p.max(1) >= threshold)
        answer[fire] = p[fire].argmax(1)
        decided |= fire
    return answer


@dataclass(frozen=True)
class PlanCheck:
    """What the device checks an upstream's answers with under one plan, calibrated.

    Attributes:
        head: position of the device's exit head (the deepest on its slice).
        agreement: calibrated rate at which the head's top-1 equals the plan's honest answer.
        threshold: an answer whose class has ``p_head < threshold`` is flagged.
        false_alarm: calibrated rate of honest answers flagged by that threshold.
        num_samples: calibration samples behind the numbers.
    """

    head: int
    agreement: float
    threshold: float
    false_alarm: float
    num_samples: int

    def suspicious(self, head_probs: torch.Tensor, classes: torch.Tensor, *, strict: bool = False) -> torch.Tensor:
        """(B,) bool: which answers ``classes`` (B,) the head's softmax ``head_probs`` (B, C) finds implausible;
        ``strict`` (the upstream is suspect) also flags every answer that is not the head's own top-1."""
        p = head_probs.gather(1, classes.view(-1, 1).long()).view(-1)  # (B,)
        flagged = p < self.threshold
        if strict:
            flagged |= head_probs.argmax(1) != classes
        return flagged


def plan_check(samples: AgreementSamples, head: int, upstream_exits: Sequence[tuple[int, float]],
               false_alarm: float, *, local_exits: Sequence[tuple[int, float]] = ()) -> PlanCheck:  # fmt: skip
    """Calibrate the per-request threshold and the agreement rate of ``head`` under a plan.

    Only the samples that would go upstream count: a sample one of the device's own exits (``local_exits``) is
    confident about never reaches the upstream, and those are the easy ones (calibrating on every sample would
    understate the false alarms among the answers actually checked). With fewer than ``_MIN_FORWARDED`` such
    samples, every sample counts.

    Args:
        samples: per-sample calibration data.
        head: the device's head position.
        upstream_exits: the plan's exits past the device's slice, (position, threshold).
        false_alarm: the target rate of honest answers flagged, in (0, 0.5).
        local_exits: the plan's exits on the device's slice, (position, threshold).

    Raises:
        KeyError: no head at ``head``.
        ValueError: ``false_alarm`` out of range.
    """
    if not 0 < false_alarm < 0.5:
        raise ValueError(f"false_alarm {false_alarm} must be in (0, 0.5)")
    probs = samples.head(head)  # (S, C)
    answers = plan_answers(samples, upstream_exits)
    forwarded = np.ones(samples.num_samples, dtype=bool)
    for position, threshold in local_exits:
        if position in samples.positions:
            forwarded &= samples.head(position).max(1) < threshold
    if forwarded.sum() >= _MIN_FORWARDED:
        probs, answers = probs[forwarded], answers[forwarded]
    p_answer = probs[np.arange(len(answers)), answers]  # (S,)
    threshold = float(np.quantile(p_answer, false_alarm))
    return PlanCheck(
        head=head,
        agreement=float((probs.argmax(1) == answers).mean()),
        threshold=threshold,
        false_alarm=float((p_answer < threshold).mean()),
        num_samples=len(answers),
    )


class AgreementTest:
    """Wald's SPRT of an agreement rate ``rate`` against ``rate - drop``, restarted Page-style (see the module doc).

    Args:
        rate: the calibrated agreement rate r0 (H0).
        drop: how far below r0 the alternative lies (H1: r0 - drop).
        alpha: the test's false-alarm probability per decision (sets the upper boundary).
        beta: its miss probability (sets the lower boundary that ends a suspicion).
    """

    def __init__(self, rate: float, *, drop: float, alpha: float, beta: float):
        # a few hundred calibration samples cannot tell 99.9% from 99%: a rate beyond [0.01, 0.99] is taken as the
        # bound (else one honest disagreement would be proof of lying against a head that never disagreed)
        r0 = min(max(rate, 0.01), 0.99)
        r1 = min(max(r0 - drop, 1e-3), r0 - 1e-3)
        self.rate, self.alternative = r0, r1
        self.llr_agree = math.log(r1 / r0)  # < 0
        self.llr_disagree = math.log((1 - r1) / (1 - r0))  # > 0
        self.upper = math.log((1 - beta) / alpha)
        self.lower = math.log(beta / (1 - alpha))
        self.statistic = 0.0
        self.suspect = False
        self.observed = 0
        self.disagreed = 0

    def observe(self, agreed: bool) -> bool:
        """Add one answer (its class equals the head's top-1 or not); returns whether the upstream is suspect now."""
        self.observed += 1
        self.disagreed += not agreed
        self.statistic += self.llr_agree if agreed else self.llr_disagree
        if not self.suspect:
            self.statistic = max(0.0, self.statistic)  # CUSUM: evidence for r0 is not banked against a later liar
            if self.statistic >= self.upper:
                self.suspect, self.statistic = True, 0.0
        else:
            self.statistic = min(self.statistic, self.upper)  # bounded: a long lie does not delay the recovery
            if self.statistic <= self.lower:
                self.suspect, self.statistic = False, 0.0
        return self.suspect
