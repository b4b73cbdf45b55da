"""The device's check of its upstream's answers (node section ``validate``).

An upstream that answers in the right shape but with the wrong class passes reply admission
(:mod:`edgeflow.agent.admission`); this module catches it with what the device has at hand, following
:mod:`edgeflow.core.exits.agreement`:

- the deepest exit head on the device's own slice of the plan is evaluated for every request that goes upstream,
  also when the plan does not exit there (:meth:`Validator.watch`: a never-firing exit point makes the runtime
  keep the head's logits); its probability of the upstream's class is compared with the plan's calibrated
  threshold, and a per-plan running test of the agreement rate makes a lying upstream *suspect*;
- the reply is checked against itself: the logits must be finite, and an exit answer's ``exit_confidence`` must
  be its logits' top softmax probability and reach the plan's threshold there.

Each request's breakdown says ``validation``: ``ok``, ``flagged`` (with the reason), ``recomputed`` (the device
finished the model itself, ``recompute-locally``) or ``unchecked`` (the device's slice holds no exit head, e.g. a
plan that sends the raw input). The calibration runs once per model at start-up, on the demo's calibration
(validation) split, before the agent serves (once per model and process): the agreement data is not in the
artifact because the artifact's fingerprint covers its calibration table, and every tier's pin would change.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch

from edgeflow.agent.runtime import ModelRuntime
from edgeflow.config import ValidateConfig
from edgeflow.core.exits import confidence as exit_confidence
from edgeflow.core.exits.agreement import AgreementSamples, AgreementTest, PlanCheck, measure_agreement, plan_check
from edgeflow.core.plan import TIERS, ExitPoint, Plan
from edgeflow.errors import ConfigError

__all__ = ["Verdict", "ValidationStats", "Validator", "calibration_samples", "check_calibration_source"]

_log = logging.getLogger(__name__)
_PLANS = 64  # per-plan checks and running tests kept (a live planner uses a handful of plans)
_CONFIDENCE_TOLERANCE = 1e-3  # an exit's reported confidence vs its logits' (float32 softmax, one rounding)
_SAMPLES: dict[str, AgreementSamples] = {}  # model fingerprint -> calibration data (one per process per model)
_SAMPLES_LOCK = threading.Lock()


def check_calibration_source(runtime: ModelRuntime, source: str = "demo") -> None:
    """Raises ConfigError unless ``runtime`` has exit heads and takes the calibration inputs (cheap: at start-up)."""
    if not runtime.exits:
        raise ConfigError("validate: the model has no exit heads for the device to check answers with")
    infos = runtime.cut_info(0).tensors
    shape = tuple(infos[0].shape)
    if len(infos) != 1 or len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise ConfigError(f"validate.calibration: {source}: the demo's calibration images do not fit the model's "
                          f"input {list(shape)}")  # fmt: skip


def calibration_samples(runtime: ModelRuntime, source: str = "demo") -> AgreementSamples:
    """Every exit head's softmax and the model's top-1 on the held-out calibration inputs (cached per model).

    Raises:
        ConfigError: the model has no exit heads, or does not take the demo's images.
    """
    with _SAMPLES_LOCK:
        got = _SAMPLES.get(runtime.fingerprint)
        if got is not None:
            return got
        check_calibration_source(runtime, source)
        from edgeflow.core.data import load_demo_dataset
        from edgeflow.core.exits.heads import partition_tap

        images, _ = load_demo_dataset("calibration", size=int(runtime.cut_info(0).tensors[0].shape[2]))
        positions = sorted(runtime.exits)
        tap = partition_tap(runtime.partition, positions)
        with torch.inference_mode():
            got = measure_agreement(tap, [runtime.exits[k] for k in positions], images.to(runtime.device),
                                    split="calibration")  # fmt: skip
        _SAMPLES[runtime.fingerprint] = got
        return got


@dataclass
class Verdict:
    """One upstream answer, checked: ``status`` (``ok``, ``flagged``, ``unchecked``), why, and the classes the
    upstream answered (one per sample)."""

    status: str
    reason: str = ""
    classes: tuple[int, ...] = ()


@dataclass
class ValidationStats:
    """What the validator has seen since start: answers checked, flagged (and why: ``by_head``, ``by_consistency``),
    unchecked, recomputed, and the tiers suspect now."""

    checked: int = 0
    flagged: int = 0
    by_head: int = 0
    by_consistency: int = 0
    unchecked: int = 0
    recomputed: int = 0
    suspect: list[str] = field(default_factory=list)


class Validator:
    """Checks upstream answers for one device (see the module doc).

    Args:
        config: the node's ``validate`` section (mode not ``off``).
        runtime: the device's model.
    """

    def __init__(self, config: ValidateConfig, runtime: ModelRuntime):
        self.config = config
        self.runtime = runtime
        check_calibration_source(runtime, config.calibration)
        # The calibration passes (rendering 359 images, a forward pass over them: ~2 s on one idle core here, far
        # more on a busy one) run now, before the agent serves: beside the live planner's start-up measurements
        # they would inflate the device's measured compute for the whole run.
        self.samples: AgreementSamples = calibration_samples(runtime, config.calibration)
        self._checks: OrderedDict[str, tuple[PlanCheck, AgreementTest] | None] = OrderedDict()
        self._lock = threading.Lock()
        self._stats = ValidationStats()
        self._suspect: dict[str, str] = {}  # tier -> the plan whose running test made it suspect

    @property
    def recompute(self) -> bool:
        return self.config.mode == "recompute-locally"

    def head_of(self, plan: Plan) -> int | None:
        """The deepest exit head on the device's slice of ``plan`` (None: the device runs nothing, or no head)."""
        stage = plan.stage(TIERS[0])
        if stage is None:
            return None
        stop = stage.stop if stage.stop is not None else self.runtime.num_positions
        mine = [k for k in self.runtime.exits if stage.start < k <= stop]
        return max(mine, default=None)

    def watch(self, plan: Plan, start: int, stop: int) -> ExitPoint | None:
        """A never-firing exit point for the device's head in ``[start:stop]``, when the plan has no exit there."""
        head = self.head_of(plan)
        if head is None or not start < head <= stop or any(e.position == head for e in plan.exits):
            return None
        return ExitPoint(head, math.inf)

    def _plan_check(self, plan: Plan) -> tuple[PlanCheck, AgreementTest] | None:
        text = str(plan)
        with self._lock:
            if text in self._checks:
                self._checks.move_to_end(text)
                return self._checks[text]
        head = self.head_of(plan)
        got = None
        if head is not None:
            stage = plan.stage(TIERS[0])
            stop = stage.stop if stage is not None and stage.stop is not None else self.runtime.num_positions
            upstream_exits = [(e.position, e.threshold) for e in plan.exits if e.position > stop]
            local_exits = [(e.position, e.threshold) for e in plan.exits if e.position <= stop]
            c = self.config
            check = plan_check(self.samples, head, upstream_exits, c.false_alarm, local_exits=local_exits)
            got = (check, AgreementTest(check.agreement, drop=c.drop, alpha=c.alpha, beta=c.beta))
            _log.info("validate %s: head @%d agrees %.3f on %d calibration samples; p_head < %.4g flagged (%.2f%% of "
                      "honest answers)", text, head, check.agreement, check.num_samples, check.threshold,
                      100 * check.false_alarm)  # fmt: skip
        with self._lock:
            self._checks[text] = got
            while len(self._checks) > _PLANS:
                self._checks.popitem(last=False)
        return got

    def check(self, plan: Plan, heads: dict[int, torch.Tensor], values: list[torch.Tensor], tier: str,
              exit_position: int, exit_confidence_: float) -> Verdict:  # fmt: skip
        """Check an upstream answer: ``values`` (the reply's logits, (B, C)) answered by ``tier`` under ``plan``, with
        the logits of the device heads evaluated for this request (``heads``) and the reply's exit and confidence.

        A running test that fails makes the device's *upstream* suspect (the plan's next tier: the one it sent the
        request to and took the answer from; whether that tier or one behind it lied, the device cannot tell)."""
        mine = plan.stage(TIERS[0])
        nxt = plan.upstream_of(TIERS[0]) if mine is not None else (plan.stages[0] if plan.stages else None)
        upstream = nxt.tier if nxt is not None else tier
        logits = values[0].detach().float() if values else torch.empty(0)
        classes = tuple(int(c) for c in logits.argmax(-1).reshape(-1)) if logits.dim() == 2 and logits.numel() else ()
        reason = self._inconsistent(plan, logits, exit_position, exit_confidence_)
        pc = self._plan_check(plan)
        if pc is None or pc[0].head not in heads:
            with self._lock:
                self._stats.unchecked += reason == ""
                self._stats.checked += reason != ""
                self._stats.flagged += reason != ""
                self._stats.by_consistency += reason != ""
            return Verdict("flagged", reason, classes) if reason else Verdict("unchecked", "", classes)
        check, test = pc
        probs = heads[check.head].detach().float().softmax(-1)  # (B, C)
        with self._lock:
            # strict while this plan's test or any test of the same upstream holds it suspect (a tier caught lying
            # under one plan is not trusted afresh under the next: its suspicion ends where it began)
            strict = test.suspect or upstream in self._suspect
            flagged_by_head = False
            if classes and probs.shape[0] == len(classes):
                answer = torch.tensor(classes)
                flagged_by_head = bool(check.suspicious(probs, answer, strict=strict).any())
                for agreed in (probs.argmax(1) == answer).tolist():
                    test.observe(bool(agreed))
            self._note_suspect(upstream, str(plan), test)
            s = self._stats
            s.checked += 1
            s.by_head += flagged_by_head
            s.by_consistency += reason != ""
            s.flagged += flagged_by_head or reason != ""
        if flagged_by_head and not reason:
            p = float(probs.gather(1, torch.tensor(classes).view(-1, 1)).min())
            why = (f"disagrees with the device's head while {upstream} is suspect" if strict and p >= check.threshold
                   else f"p_head {p:.4f} < {check.threshold:.4f}")  # fmt: skip
            reason = f"{tier} answered class {list(classes)}; device head @{check.head} {why}"
        return Verdict("flagged" if reason else "ok", reason, classes)

    def _inconsistent(self, plan: Plan, logits: torch.Tensor, exit_position: int, confidence: float) -> str:
        """Why the reply contradicts itself ("" when it does not)."""
        if logits.numel() and not bool(torch.isfinite(logits).all()):
            return "the reply's logits are not finite"
        if exit_position >= 0 and logits.dim() == 2 and logits.numel():
            own = float(exit_confidence(logits).min())
            if abs(own - confidence) > _CONFIDENCE_TOLERANCE:
                return f"the reply's exit_confidence {confidence:.4f} is not its logits' ({own:.4f})"
            threshold = next((e.threshold for e in plan.exits if e.position == exit_position), None)
            if threshold is not None and own < threshold:
                return f"the reply exited at {exit_position} with confidence {own:.4f} < the plan's {threshold:g}"
        return ""

    def _note_suspect(self, tier: str, plan: str, test: AgreementTest) -> None:
        """Under the lock: keep the suspect set in step with ``plan``'s running test."""
        if test.suspect and tier not in self._suspect:
            self._suspect[tier] = plan
            _log.warning("validate: upstream %s is suspect: the answers through it agree with the device's head "
                         "%d of %d times under %s, calibrated rate %.3f", tier, test.observed - test.disagreed,
                         test.observed, plan, test.rate)  # fmt: skip
        elif not test.suspect and self._suspect.get(tier) == plan:
            del self._suspect[tier]
            _log.warning("validate: upstream %s is trusted again under %s", tier, plan)

    def recomputed(self) -> None:
        with self._lock:
            self._stats.recomputed += 1

    def suspect(self, tier: str) -> bool:
        """Whether ``tier`` is suspect now (a running test found its answers below the calibrated agreement)."""
        with self._lock:
            return tier in self._suspect

    def stats(self) -> ValidationStats:
        with self._lock:
            s = ValidationStats(**{k: v for k, v in vars(self._stats).items() if k != "suspect"})
            s.suspect = sorted(self._suspect)
            return s
