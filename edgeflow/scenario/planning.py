"""The planner as the scenario runner uses it: a cost model built from the model and the node files, and
the link conditions a scenario implies.

The cost model is measured here, in the runner's process, once per scenario (with one torch thread, as the
agents run): a per-cut profile on a real input, exit-head times, and exit behaviour from the artifact's
calibration table, read as the device's live planner reads it (exact joint statistics from its per-sample
data when it keeps them). Each tier's compute is the profile scaled by its node's ``compute.slowdown_factor`` (the agents emulate a slower machine by that factor)
and by a correction measured per tier, with an agent run under that tier's own slowdown (:func:`_compute_factors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from edgeflow.agent.runtime import ModelRuntime
from edgeflow.config import NodeConfig
from edgeflow.core.planner.costmodel import Conditions, CostModel, LinkState, PowerSpec, TierSpec
from edgeflow.core.planner.build import planning_inputs
from edgeflow.core.planner.search import Candidate, Planner
from edgeflow.core.plan import TIERS
from edgeflow.core.profile import ModelProfile
from edgeflow.core.traces import BandwidthTrace

__all__ = [
    "ACTIVATION_CODECS",
    "INPUT_CODECS",
    "UNSHAPED_BPS",
    "PlanningModel",
    "build_planning_model",
    "link_conditions",
]

ACTIVATION_CODECS = ("lossless", "fp16", "int8", "int8c", "int4")
INPUT_CODECS = ("lossless", "png", "jpeg")
UNSHAPED_BPS = 10e9  # an unshaped loopback link: far above anything a trace sets


@dataclass
class PlanningModel:
    """What the runner plans with.

    Attributes:
        cost: the cost model (device > edge > cloud).
        planner: its exact search.
        profile: the host profile it was built from.
        exit_source: where the exit behaviour came from (``samples``, ``calibration``, ``none``).
    """

    cost: CostModel
    planner: Planner
    profile: ModelProfile
    exit_source: str
    compute_factor: float = 1.0
    compute_factors: dict[str, float] | None = None  # per tier (see _compute_factors); None: compute_factor for all

    def best(self, cond: Conditions, objective: str, *, slo_s: float | None, top_k: int = 3) -> list[Candidate]:
        """The best plan and the best of each other tier set, best first."""
        result = self.planner.search(cond, objective, latency_slo_s=slo_s, top_k=top_k)
        return [result.best, *result.alternatives]


def build_planning_model(
    runtime: ModelRuntime,
    nodes: Mapping[str, NodeConfig],
    example: torch.Tensor | tuple[torch.Tensor, ...],
    *,
    artifact: str,
    accuracy_floor_pts: float,
    privacy: bool,
    repeats: int = 5,
    activation_codecs: Sequence[str] = ACTIVATION_CODECS,
) -> PlanningModel:
    """Profile the model on ``example`` (1, C, H, W), or a tuple for a model of several inputs, and build the cost model for the three tiers.

    ``activation_codecs``: the codecs profiled and offered at cuts (the runner's :data:`ACTIVATION_CODECS`; a
    benchmark may add opt-in ones, e.g. ``dct``, whose default accuracy drops then apply).

    Raises:
        PlanError: the profile or exit data do not fit the cost model.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the agents compute (nodes/*.yaml compute.threads)
    try:
        measured = planning_inputs(runtime.partition, _values(example), runtime.exits, runtime.calibration,
                                   activation_codecs=activation_codecs, input_codecs=INPUT_CODECS, name=artifact,
                                   repeats=repeats, head_repeats=10)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    prof, head_s, exits = measured.profile, measured.exit_head_s, measured.exits
    source = "none" if exits is None else "calibration samples (joint)" if exits.source == "samples" else (
        "calibration table (marginals)")
    tiers = [
        TierSpec(
            name=t,
            profile=prof,
            compute_scale=nodes[t].compute.slowdown_factor,
            power=PowerSpec(nodes[t].power.idle_w, nodes[t].power.active_w, nodes[t].power.transmit_w),
            exit_head_s=head_s,
        )
        for t in TIERS
    ]
    input_codecs = [c for c in INPUT_CODECS if c in prof.positions[0].codecs]  # png/jpeg do not take token ids
    cost = CostModel(
        tiers, exits, activation_codecs=activation_codecs, input_codecs=input_codecs,
        max_accuracy_drop_pts=accuracy_floor_pts, privacy=privacy,
    )  # fmt: skip
    factors = _compute_factors(runtime, nodes, example, prof)
    return PlanningModel(cost, Planner(cost), prof, source, factors["cloud"], factors)


def _values(example: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The model's inputs as a tuple (one tensor for a single-input model)."""
    return example if isinstance(example, tuple) else (example,)


def _compute_factors(runtime: ModelRuntime, nodes: Mapping[str, NodeConfig], example: torch.Tensor | tuple[torch.Tensor, ...],
                     prof: ModelProfile, repeats: int = 10) -> dict[str, float]:
    """Per tier: how much longer an agent with that tier's ``slowdown_factor`` f holds its compute unit for the
    whole model than ``f x`` the node-by-node profile predicts (median over ``repeats``, no exits): the planner's
    compute correction, measured once before any run. On the demo model the agent's per-request overhead (range
    modules, the compute unit) is a large part.

    Measured with each tier's own f, because the emulation multiplies the computing thread's *CPU* time
    (:mod:`edgeflow.agent.compute`) while the profile is wall time: one wall-clock ratio times f counted a loaded
    host's wait for a core f times over (MobileNetV2, f = 7 on the loaded 2-core host: a 120 ms phone predicted at
    208 ms, measured 115-145 ms).
    """
    from edgeflow.agent.agent import Agent

    predicted = prof.range_compute_s(0, prof.num_positions)
    measured: dict[tuple[float, int], float] = {}
    out = {}
    for tier in TIERS:
        compute = nodes[tier].compute
        key = (compute.slowdown_factor, compute.threads)
        if key not in measured:
            data = nodes["device"].model_dump(mode="json", exclude_none=True)
            data.pop("upstream", None)
            data["plan"] = "device[0:]"
            data["compute"].update(slowdown_factor=compute.slowdown_factor, threads=compute.threads)
            agent = Agent(NodeConfig.from_mapping(data, source=f"calibration ({tier})"), runtime, profile_repeats=0)
            times = []
            try:
                for i in range(repeats + 2):
                    ans = agent.submit_local(list(_values(example)), request_id=f"calibrate-{i}", deadline=float("inf"))
                    if i >= 2:
                        times.append(ans.breakdown.tiers[0].compute_s)
            finally:
                agent.close()
            scaled = predicted * compute.slowdown_factor
            measured[key] = float(np.clip(np.median(times) / scaled, 0.5, 10.0)) if scaled > 0 else 1.0
        out[tier] = measured[key]
    return out


def link_conditions(rates: Sequence[BandwidthTrace | None], delays_s: Sequence[float], factor: float = 1.0, *,
                    compute_factor: float | Mapping[str, float] = 1.0) -> Conditions:
    """Planner conditions for links at their traces' mean rates (times ``factor``), RTT = twice the one-way delay,
    each tier's compute corrected by ``compute_factor`` (one for every tier, or per tier).

    ``None`` (an unshaped link) counts as :data:`UNSHAPED_BPS`.
    """
    links = []
    for trace, delay in zip(rates, delays_s):
        bps = UNSHAPED_BPS if trace is None else max(trace.mean_bps, 1.0)
        links.append(LinkState(bandwidth_bps=min(bps * factor, UNSHAPED_BPS), rtt_s=2.0 * delay))
    factors = {t: compute_factor for t in TIERS} if isinstance(compute_factor, (int, float)) else dict(compute_factor)
    return Conditions(links=tuple(links), compute_factor=factors)


def finite(x: float) -> float | None:
    """``x``, or None when it is not a finite number (JSON has no inf)."""
    return float(x) if isinstance(x, (int, float, np.floating)) and math.isfinite(x) else None
