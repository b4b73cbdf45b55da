"""The runs of a scenario: edgeflow's own and the baselines it is compared with, each a fixed plan.

Every run goes through the same agents, emulators, trace (replayed from t = 0) and request schedule; only
the plan differs. A plan whose device runs nothing sends the raw input with its *input codec*
(``input|jpeg > edge[0:]``), chosen per scenario by :func:`choose_input_codec`.

- ``device-only``: ``device[0:]``, no exits.
- ``edge-only`` / ``cloud-only``: ``edge[0:]`` / ``cloud[0:]``, no exits, the input with the best image codec.
- ``neurosurgeon``: Kang et al. (ASPLOS 2017): one cut between device and cloud, no exits, no compression
  (``lossless`` on the hop; the raw input lossless when the cut is at 0), the cut with the lowest predicted
  latency at the mean link rates (device-only and cloud-only are among the cuts it considers).
- ``best-fixed``: chosen after the fact, with hindsight: the fixed plan with the lowest *measured* median
  latency among every other run of the scenario and a few extra candidates (the planner's best and
  alternatives at scaled link rates), see :func:`best_fixed_candidates` and :func:`pick_best_fixed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from edgeflow.core.codecs import DecodeLimits, decode, get_codec
from edgeflow.core.plan import Plan, Stage
from edgeflow.core.planner.costmodel import Choice, Conditions
from edgeflow.errors import CodecError, PlanError
from edgeflow.scenario.planning import PlanningModel

__all__ = [
    "RunSpec",
    "InputCodecChoice",
    "choose_input_codec",
    "fixed_baseline",
    "neurosurgeon",
    "best_fixed_candidates",
    "pick_best_fixed",
    "predict_latency",
]


@dataclass(frozen=True)
class RunSpec:
    """One run of a scenario.

    Attributes:
        name: ``edgeflow``, a baseline name, or ``candidate-<i>`` (extra best-fixed candidates).
        plan: the fixed plan every request of the run follows (with its input codec).
        how: one line saying how the plan was chosen.
        predicted_latency_s: the cost model's expected latency at the mean link rates (None if not evaluated).
        adaptive: the device's live planner chooses each request's plan (``plan`` is unused).
    """

    name: str
    plan: Plan
    how: str = ""
    predicted_latency_s: float | None = None
    adaptive: bool = False

    @property
    def key(self) -> str:
        """Identifies the plan as run (its text): runs with equal keys are the same experiment. An adaptive run's
        plan is chosen per request: ``auto``."""
        if self.adaptive:
            return "auto"
        return str(self.plan)

    @property
    def tiers(self) -> tuple[str, ...]:
        return self.plan.tiers


@dataclass(frozen=True)
class InputCodecChoice:
    """The chosen input codec and what each candidate measured on a sample of the workload."""

    codec: str
    nbytes: dict[str, float] = field(default_factory=dict)  # mean payload bytes per image
    accuracy: dict[str, float] = field(default_factory=dict)  # top-1 vs labels (or agreement) on the sample
    sample: int = 0

    def to_json(self) -> dict[str, object]:
        return {"codec": self.codec, "bytes_per_image": self.nbytes, "accuracy": self.accuracy, "sample": self.sample,
                "rule": "fewest bytes among png/jpeg whose top-1 on the sample is not below png's (lossless)"}


@torch.inference_mode()
def choose_input_codec(
    model: torch.nn.Module, inputs: torch.Tensor, truth: np.ndarray, candidates: Sequence[str] = ("png", "jpeg")
) -> InputCodecChoice:
    """Pick the input codec for plans whose device runs nothing: fewest bytes at equal accuracy.

    Args:
        model: the unsplit model.
        inputs: (S, C, H, W) a sample of the workload's inputs.
        truth: (S,) labels, or the unsplit model's own predictions (then accuracy is agreement).
        candidates: codecs tried; the first is the reference (png: lossless for 8-bit images).
    """
    nbytes: dict[str, float] = {}
    acc: dict[str, float] = {}
    for name in candidates:
        codec = get_codec(name)
        try:
            payloads = [codec.encode(inputs[i : i + 1]) for i in range(len(inputs))]
        except CodecError:
            continue  # e.g. png refuses floats that are not k/255: not an image workload
        decoded = torch.cat([decode(pl, DecodeLimits()) for pl in payloads])
        nbytes[name] = float(np.mean([len(pl) for pl in payloads]))
        acc[name] = float((model(decoded).argmax(-1).numpy() == truth).mean())
    if not nbytes:
        return InputCodecChoice("lossless", sample=len(inputs))
    reference = acc[next(iter(acc))]
    ok = [c for c in nbytes if acc[c] >= reference]
    return InputCodecChoice(min(ok, key=lambda c: nbytes[c]), nbytes, acc, len(inputs))


def fixed_baseline(name: str, input_codec: str, planning: PlanningModel, cond: Conditions) -> RunSpec:
    """``device-only``, ``edge-only`` or ``cloud-only`` (no exits)."""
    tier = name.removesuffix("-only")
    codec = None if tier == "device" else input_codec
    plan = Plan((Stage(tier, 0, None),), input_codec=codec)
    how = "the whole model on the device" if codec is None else f"the whole model on the {tier}, input sent as {codec}"
    return RunSpec(name, plan, how, predict_latency(planning, plan, cond))


def neurosurgeon(planning: PlanningModel, cond: Conditions) -> RunSpec:
    """The single device/cloud cut with the lowest predicted latency, lossless, no exits (see the module doc)."""
    cost = planning.cost
    dev, cloud = cost.names.index("device"), cost.names.index("cloud")
    choices = [Choice((dev,), (), ()), Choice((cloud,), (), ("lossless",))]
    choices += [Choice((dev, cloud), (c,), ("lossless",)) for c in cost.cuts]
    scored = [(cost.evaluate(ch, cond).latency_s, ch) for ch in choices]
    best_s, ch = min(scored, key=lambda sc: sc[0])
    plan = cost.to_plan(ch)
    where = "device only" if len(ch.tiers) == 1 and ch.tiers[0] == dev else (
        "cloud only" if ch.tiers[0] == cloud else f"cut at {ch.cuts[0]}")
    how = (f"single device/cloud cut minimising predicted latency at the mean link rates over {len(choices)} cuts "
           f"(lossless, no exits): {where}")
    return RunSpec("neurosurgeon", plan, how, best_s)


def best_fixed_candidates(
    planning: PlanningModel,
    conds: Iterable[tuple[float, Conditions]],
    objective: str,
    *,
    slo_s: float | None,
    top_k: int,
    exclude: Iterable[str] = (),
    max_candidates: int,
) -> list[RunSpec]:
    """Extra plans for the best-fixed baseline: the planner's best and ``top_k`` alternatives at each
    (bandwidth factor, conditions), skipping plans already run (``exclude``: :attr:`RunSpec.key` values)."""
    seen = set(exclude)
    out: list[RunSpec] = []
    for factor, cond in conds:
        try:
            cands = planning.best(cond, objective, slo_s=slo_s, top_k=top_k)[: top_k + 1]
        except PlanError:
            continue
        for rank, c in enumerate(cands):
            spec = RunSpec(
                f"candidate-{len(out) + 1}", c.plan,
                f"planner's {'best' if rank == 0 else f'alternative {rank}'} at {factor:g}x the mean link rates",
                float(c.breakdown.latency_s),
            )  # fmt: skip
            if spec.key not in seen and len(out) < max_candidates:
                seen.add(spec.key)
                out.append(spec)
    return out


def pick_best_fixed(medians_ms: dict[str, float]) -> str | None:
    """The run with the lowest measured median latency among ``medians_ms`` (name -> median; runs that answered
    nothing are absent), or None."""
    if not medians_ms:
        return None
    return min(medians_ms, key=lambda n: (medians_ms[n], n))


def predict_latency(planning: PlanningModel, plan: Plan, cond: Conditions) -> float | None:
    """The cost model's expected latency of ``plan`` under ``cond``, or None when it does not fit the model."""
    try:
        return float(planning.cost.evaluate(plan, cond).latency_s)
    except PlanError:
        return None
