"""The planner's cost model: profiles, links and exit statistics in; predicted latency, energy, load out.

Pure data in, numbers out: no clocks, no I/O. Tiers form a chain (``device > edge > cloud``, any subset in that
order); requests enter at the first tier (the *source*) and ``Conditions.links[i]`` joins tier ``i`` to ``i+1``.

A request's path, as the agents run it (``edgeflow.agent``) and as :meth:`CostModel.evaluate` walks it:

- each tier that computes runs its range on its own profile: ``compute_s = cum[b] - cum[a]`` (Neurosurgeon,
  Kang et al., ASPLOS 2017: layer-wise profiles, latency = sum of per-layer times + data / bandwidth), scaled by
  ``TierSpec.compute_scale`` (a static factor, e.g. an emulated slowdown) and by the online correction
  ``Conditions.compute_factor`` (EWMA of measured / predicted stage times, see ``estimator.py``);
- each hop carries the values at its position with its codec: bytes and encode time from the *sender's*
  profile, decode time from the *receiver's*; every link it crosses adds ``8 * nbytes / bandwidth_bps`` and one
  ``rtt_s`` (unary request/reply over a warm connection: the round trip covers the request's propagation and
  the reply's; TCP slow start is not modelled). A tier that runs nothing relays the payload untouched, so a
  hop from device to cloud crosses both links. When the source runs nothing, the raw input (position 0) goes
  out with an input codec (``lossless``, ``png``, ``jpeg``);
- the receiving tier's reported queueing delay (``Conditions.queue_s``) is paid on arrival, the source's when
  it computes;
- exits (``ExitModel``): an answer at exit ``e`` pays the stages up to ``e``, the heads evaluated on the way,
  and the reply from the tier that ran ``e`` back to the source (the reply is ``reply_nbytes`` of logits over
  each link back). The expected latency is the sum over outcomes weighted by their probabilities (Edgent, Li et
  al., MECOMM 2018, co-optimises exit and partition the same way).

Accuracy of a plan = the exit combo's accuracy minus, in points, the sum of the drops of every hop's codec at
its position (``codec_accuracy_drop`` measured, e.g. ``benchmarks/results/cuts.json``, else
``DEFAULT_CODEC_DROP_PTS``). Drops are clipped at 0 and added, a conservative bound: a hop's codec can only hurt,
and drops on two hops do not cancel.

Device energy (source tier, ``PowerSpec``) = ``active_w`` x its compute, heads and encoding + ``transmit_w`` x
the time its link carries its bytes + ``idle_w`` x the rest of the latency (waiting for the answer).

Load (for streams) = the expected busy seconds per request of each tier (compute, heads, encode, decode) and
of each link's uplink; throughput is ``1 / max`` (a pipelined chain runs as fast as its slowest stage; RTTs and
replies are assumed hidden by requests in flight).

Memory of a range ``[a:b]`` = parameter bytes of its nodes + the largest set of live values at a position in
``a..b`` (fp32 as profiled).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from edgeflow.core.plan import TIERS, ExitPoint, Plan, Stage
from edgeflow.core.profile import ModelProfile
from edgeflow.errors import PlanError

from .exitmodel import ExitModel

__all__ = [
    "DEFAULT_CODEC_DROP_PTS",
    "IMAGE_CODECS",
    "OBJECTIVES",
    "PowerSpec",
    "TierSpec",
    "LinkState",
    "Conditions",
    "Breakdown",
    "Choice",
    "CostModel",
    "codec_drops_from_cuts",
    "node_param_nbytes",
]

OBJECTIVES = ("latency", "energy", "throughput")
IMAGE_CODECS = ("lossless", "png", "jpeg")  # codecs for the raw input at position 0

# Accuracy drop in points assumed where no measurement is given. lossless/png are exact; fp16/bf16/int8/int8c
# measured 0.00 pts at all 18 measured demo cuts (benchmarks/results/cuts.json); int4 measured <= 0.56 and
# int2 up to 6.67, so their defaults sit at or above the worst measured; jpeg (lossy input) gets int4's. dct (d15)
# measured under 1 pt at layer1 but over 20 at layer3 (frontier.json): its default keeps an unmeasured dct out of
# the default 1-point budget; give measured drops (codec_drops_from_cuts) to plan with it. learned (a trained
# bottleneck, one cut only) likewise: its measured rows are cuts.json's ``learned`` ones (bench_learned.py).
DEFAULT_CODEC_DROP_PTS: dict[str, float] = {
    "lossless": 0.0, "png": 0.0, "fp16": 0.0, "bf16": 0.0, "int8": 0.0, "int8c": 0.0,
    "int4": 1.0, "int2": 7.0, "jpeg": 1.0, "dct": 4.0, "learned": 4.0,
}  # fmt: skip
_EPS = 1e-9  # tolerance on accuracy budgets, in points


@dataclass(frozen=True)
class PowerSpec:
    """Power draw of a tier in watts (``nodes/*.yaml`` ``power:``)."""

    idle_w: float = 0.0
    active_w: float = 0.0
    transmit_w: float = 0.0


@dataclass(frozen=True)
class TierSpec:
    """One tier of the chain.

    Attributes:
        name: ``"device"``, ``"edge"`` or ``"cloud"``.
        profile: this tier's own profile (every tier profiles the same model graph).
        compute_scale: static multiplier on compute and exit heads, e.g. the agent's ``slowdown_factor``.
        codec_scale: static multiplier on encode/decode times (the agents' slowdown emulation sleeps after
            compute only, so it stays 1 there; a really slower CPU would set both).
        memory_cap_nbytes: parameters + activations a range may hold on this tier; None: no cap.
        power: power figures (only the source tier's are used).
        exit_head_s: seconds of each exit head (by position) on the profile's host.
    """

    name: str
    profile: ModelProfile
    compute_scale: float = 1.0
    codec_scale: float = 1.0
    memory_cap_nbytes: float | None = None
    power: PowerSpec = PowerSpec()
    exit_head_s: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LinkState:
    """A link between two adjacent tiers (symmetric)."""

    bandwidth_bps: float
    rtt_s: float

    def __post_init__(self) -> None:
        if not (self.bandwidth_bps > 0 and math.isfinite(self.bandwidth_bps)):
            raise PlanError(f"link bandwidth_bps must be a positive number, got {self.bandwidth_bps!r}")
        if not (self.rtt_s >= 0 and math.isfinite(self.rtt_s)):
            raise PlanError(f"link rtt_s must be a number >= 0, got {self.rtt_s!r}")


@dataclass(frozen=True)
class Conditions:
    """What changes at run time.

    Attributes:
        links: ``links[i]`` joins tier ``i`` and tier ``i + 1`` of the cost model's chain.
        queue_s: queueing delay each tier reports (by tier name); missing: 0.
        compute_factor: online correction per tier, the proportional part (measured / predicted compute);
            missing: 1.
        compute_fixed_s: online correction per tier, the fixed part: seconds a tier's stage costs beyond
            ``compute_factor`` x its profile, once per stage it runs (a range call's own cost, which the per-node
            profile misses or overstates); missing: 0. See ``ComputeCorrection`` in ``estimator.py``.
        codec_factor: online correction per tier of its codec times, ``(encode, decode)`` x the profiled ones;
            missing: ``(1, 1)``.
    """

    links: tuple[LinkState, ...]
    queue_s: Mapping[str, float] = field(default_factory=dict)
    compute_factor: Mapping[str, float] = field(default_factory=dict)
    compute_fixed_s: Mapping[str, float] = field(default_factory=dict)
    codec_factor: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class Breakdown:
    """A plan's predicted cost per request (expected values over exit outcomes; seconds unless named).

    ``latency_s == sum(compute_s.values()) + encode_s + decode_s + transfer_s + rtt_s + queue_s``.
    """

    latency_s: float
    compute_s: dict[str, float]
    encode_s: float
    decode_s: float
    transfer_s: float
    rtt_s: float
    queue_s: float
    accuracy: float
    exit_prob: float
    energy_j: float
    bottleneck_s: float
    uplink_nbytes: float
    # latency of each exit outcome: answering position (N: the model output) -> seconds; filled by evaluate()
    outcome_latency_s: Mapping[int, float] = field(default_factory=dict)
    # expected busy seconds of each tier per request (compute, heads, its encodes and decodes)
    busy_s: Mapping[str, float] = field(default_factory=dict)
    source_queue_s: float = 0.0  # the part of queue_s the source waits for its own compute unit

    @property
    def throughput_rps(self) -> float:
        return 1.0 / self.bottleneck_s if self.bottleneck_s > 0 else math.inf

    def objective(self, name: str) -> float:
        """The value the search minimises for objective ``name``."""
        return {"latency": self.latency_s, "energy": self.energy_j, "throughput": self.bottleneck_s}[name]


@dataclass(frozen=True)
class Choice:
    """A plan in the cost model's terms: which tiers compute, where they hand over, codecs, exits.

    Attributes:
        tiers: indices (into the chain) of the tiers that compute, increasing.
        cuts: position where each later tier starts (``len(tiers) - 1`` of them).
        codecs: one per hop in order; the input hop (when tier 0 does not compute) comes first.
        exits: enabled exits.
    """

    tiers: tuple[int, ...]
    cuts: tuple[int, ...]
    codecs: tuple[str, ...]
    exits: tuple[ExitPoint, ...] = ()

    @property
    def input_codec(self) -> str | None:
        return self.codecs[0] if self.tiers[0] != 0 else None


class CostModel:
    """Bandwidth-independent tables for one model, chain of tiers, exit model and constraint set.

    Args:
        tiers: the chain, source first, names in ``device > edge > cloud`` order.
        exits: exit behaviour per threshold combo; None: no exits.
        activation_codecs: codecs tried at cuts (None: every codec the profiles measured at cuts).
        input_codecs: codecs tried for the raw input (None: every one the profiles measured at position 0).
        codec_accuracy_drop: measured drop in points by ``(position, codec name)``.
        default_codec_drop_pts: drop assumed where not measured, by codec name.
        max_accuracy_drop_pts: the accuracy floor, in points below the full model's accuracy; never crossed.
        privacy: the raw input never leaves the source tier (it must run a non-empty range).
        param_nbytes: parameter bytes per compute node (``node_param_nbytes``); needed for memory caps.
        reply_nbytes: bytes of an answer sent back down (default: the model output's bytes).

    Raises:
        PlanError: tiers out of order or duplicated, profiles of different graphs, unknown codecs.
    """

    def __init__(
        self,
        tiers: Sequence[TierSpec],
        exits: ExitModel | None = None,
        *,
        activation_codecs: Sequence[str] | None = None,
        input_codecs: Sequence[str] | None = None,
        codec_accuracy_drop: Mapping[tuple[int, str], float] | None = None,
        default_codec_drop_pts: Mapping[str, float] = DEFAULT_CODEC_DROP_PTS,
        max_accuracy_drop_pts: float = 1.0,
        privacy: bool = False,
        param_nbytes: Sequence[int] | None = None,
        reply_nbytes: int | None = None,
    ):
        self.tiers = tuple(tiers)
        _check_tiers(self.tiers)
        self.names = tuple(t.name for t in self.tiers)
        prof0 = self.tiers[0].profile
        self.num_positions = n = prof0.num_positions
        self.exit_model = exits if exits is not None else ExitModel.none()
        self.max_accuracy_drop_pts = float(max_accuracy_drop_pts)
        self.privacy = bool(privacy)
        self.cuts = [k for k in range(1, n) if all(t.profile.positions[k].is_cut for t in self.tiers)]
        for pos in self.exit_model.positions:
            if not 0 < pos < n:
                raise PlanError(f"exit at {pos} is outside the model's interior 1..{n - 1}")
        self.hop_pos = np.array([0, *self.cuts], dtype=np.int64)  # (P,) hop positions; index 0 = the input
        act = _codec_names(self.tiers, self.cuts, activation_codecs, "activation_codecs")
        inp = _codec_names(self.tiers, [0], input_codecs, "input_codecs")
        self.codecs: tuple[str, ...] = tuple(dict.fromkeys([*act, *inp]))
        self.activation_codecs, self.input_codecs = tuple(act), tuple(inp)
        self.reply_nbytes = float(prof0.positions[n].nbytes if reply_nbytes is None else reply_nbytes)

        # --- per tier: compute, heads, codec tables on the profile's host, scaled statically
        self.cum_compute = np.stack(
            [np.array([p.cum_compute_s for p in t.profile.positions]) * t.compute_scale for t in self.tiers]
        )  # (m, N+1)
        self.head_s = np.array(
            [[t.exit_head_s.get(e, 0.0) * t.compute_scale for e in self.exit_model.positions] for t in self.tiers]
        ).reshape(len(self.tiers), len(self.exit_model.positions))  # (m, E)
        shape = (len(self.tiers), len(self.hop_pos), len(self.codecs))
        self.nbytes, self.encode_s, self.decode_s = np.full(shape, np.inf), np.full(shape, np.inf), np.full(shape, np.inf)
        for ti, t in enumerate(self.tiers):
            for i, pos in enumerate(self.hop_pos):
                allowed = inp if pos == 0 else act
                for k, name in enumerate(self.codecs):
                    cost = t.profile.positions[pos].codecs.get(name)
                    if name in allowed and cost is not None:
                        self.nbytes[ti, i, k] = cost.nbytes
                        self.encode_s[ti, i, k] = cost.encode_s * t.codec_scale
                        self.decode_s[ti, i, k] = cost.decode_s * t.codec_scale
        measured = dict(codec_accuracy_drop or {})
        self.drop_pts = np.full(shape[1:], np.inf)  # (P, K); inf where the codec cannot be used
        for i, pos in enumerate(self.hop_pos):
            for k, name in enumerate(self.codecs):
                if np.isfinite(self.nbytes[:, i, k]).all():
                    d = measured.get((int(pos), name), default_codec_drop_pts.get(name))
                    if d is None:
                        raise PlanError(f"codec {name!r}: no accuracy drop given or assumed (default_codec_drop_pts)")
                    self.drop_pts[i, k] = max(0.0, float(d))
        # --- accuracy budget per exit combo, in points: what the hops' codecs may still lose
        em = self.exit_model
        self.budget_pts = (em.accuracy - em.final_accuracy) * 100.0 + self.max_accuracy_drop_pts  # (Q,)
        # --- memory
        self.pos_nbytes = np.array([p.nbytes for p in prof0.positions], dtype=np.float64)  # (N+1,)
        if param_nbytes is not None and len(param_nbytes) != n:
            raise PlanError(f"param_nbytes has {len(param_nbytes)} entries, the model has {n} nodes")
        if param_nbytes is None and any(t.memory_cap_nbytes is not None for t in self.tiers):
            raise PlanError("memory caps need param_nbytes (see node_param_nbytes)")
        self.cum_params = np.concatenate([[0.0], np.cumsum(param_nbytes if param_nbytes is not None else np.zeros(n))])

    # ------------------------------------------------------------------------------------ helpers
    @property
    def exit_positions(self) -> tuple[int, ...]:
        return self.exit_model.positions

    def scale_hop_nbytes(self, position: int, codec: str, factor: float) -> bool:
        """Price the hop at ``position`` coded with ``codec`` at ``factor`` x its profiled bytes (a stream's
        measured bytes per frame over coding each frame on its own; 1 restores the profile). Every later
        evaluation and search uses it.

        Returns:
            False if the model has no such hop (nothing changed).

        Raises:
            PlanError: ``factor`` is not a finite number > 0.
        """
        if not (factor > 0 and math.isfinite(factor)):
            raise PlanError(f"hop bytes factor must be a number > 0, got {factor!r}")
        i = int(np.searchsorted(self.hop_pos, position))
        if i >= len(self.hop_pos) or self.hop_pos[i] != position or codec not in self.codecs:
            return False
        if not hasattr(self, "_profiled_nbytes"):
            self._profiled_nbytes = self.nbytes.copy()
        k = self.codecs.index(codec)
        self.nbytes[:, i, k] = self._profiled_nbytes[:, i, k] * factor
        return True

    def range_memory_nbytes(self, start: int, stop: int) -> float:
        """Parameter bytes of ``[start:stop]`` plus the largest live set at a position in ``start..stop``."""
        if start >= stop:
            return 0.0
        return float(self.cum_params[stop] - self.cum_params[start] + self.pos_nbytes[start : stop + 1].max())

    def stage_compute_s(self, tier: str, start: int, stop: int, exits: Sequence[int] = ()) -> float:
        """Predicted compute of ``[start:stop]`` plus the heads at ``exits`` on ``tier``, *without* the online
        correction: the denominator of the measured/predicted ratio that ``ComputeCorrection`` tracks."""
        t = self._tier_index(tier)
        head = sum(self.head_s[t, self.exit_positions.index(e)] for e in exits)
        return float(self.cum_compute[t, stop] - self.cum_compute[t, start] + head)

    def hop_codec_s(self, sender: str, receiver: str, position: int, codec: str) -> tuple[float, float] | None:
        """Predicted ``(encode, decode)`` seconds of a hop at ``position`` with ``codec``, *without* the online
        correction (the denominators ``CodecCorrection`` tracks); None where the profile has no such hop."""
        if position not in self.hop_pos or codec.split(":")[0] not in self.codecs:
            return None
        i, k = int(np.searchsorted(self.hop_pos, position)), self.codecs.index(codec.split(":")[0])
        e, d = self.encode_s[self._tier_index(sender), i, k], self.decode_s[self._tier_index(receiver), i, k]
        return (float(e), float(d)) if np.isfinite(e) and np.isfinite(d) else None

    def _tier_index(self, name: str) -> int:
        if name not in self.names:
            raise PlanError(f"tier {name!r} is not in this chain ({' > '.join(self.names)})")
        return self.names.index(name)

    def check_conditions(self, cond: Conditions) -> None:
        """Raises PlanError: wrong number of links, negative queue or non-positive compute factor."""
        if len(cond.links) != len(self.tiers) - 1:
            raise PlanError(f"{len(self.tiers)} tiers need {len(self.tiers) - 1} links, got {len(cond.links)}")
        for name, q in cond.queue_s.items():
            if not q >= 0:
                raise PlanError(f"queue_s[{name!r}] must be >= 0, got {q!r}")
        for name, f in cond.compute_factor.items():
            if not (f > 0 and math.isfinite(f)):
                raise PlanError(f"compute_factor[{name!r}] must be a positive number, got {f!r}")
        for name, x in cond.compute_fixed_s.items():
            if not math.isfinite(x):
                raise PlanError(f"compute_fixed_s[{name!r}] must be a finite number, got {x!r}")
        for name, (fe, fd) in cond.codec_factor.items():
            if not (fe > 0 and fd > 0 and math.isfinite(fe) and math.isfinite(fd)):
                raise PlanError(f"codec_factor[{name!r}] must be two positive numbers, got {(fe, fd)!r}")

    # ------------------------------------------------------------------------------------ plans
    def to_plan(self, ch: Choice) -> Plan:
        bounds = (0, *ch.cuts, self.num_positions)
        hop_codecs = ch.codecs[1:] if ch.tiers[0] != 0 else ch.codecs
        stages = []
        for i, t in enumerate(ch.tiers):
            last = i == len(ch.tiers) - 1
            codec = None if last else hop_codecs[i]
            if codec == "learned":  # a learned bottleneck is bound to its cut: learned:b<cut> (codecs/learned.py)
                codec = f"learned:b{bounds[i + 1]}"
            stages.append(Stage(self.names[t], bounds[i], None if last else bounds[i + 1], codec))
        return Plan(tuple(stages), tuple(ch.exits), ch.input_codec)

    def choice_of(self, plan: Plan) -> Choice:
        """The :class:`Choice` for a plan (its ``input_codec``, default lossless, when the source runs nothing).

        Raises:
            PlanError: the plan names a tier not in this chain, a hop off the candidate cuts, or an unknown codec.
        """
        plan.check(self.num_positions, self.cuts, codecs=self.codecs, exit_positions=self.exit_positions)
        tiers = tuple(self._tier_index(s.tier) for s in plan.stages)
        codecs = [s.codec.split(":")[0] for s in plan.stages[:-1] if s.codec]
        if tiers[0] != 0:
            codecs.insert(0, (plan.input_codec or "lossless").split(":")[0])
        elif plan.input_codec is not None:
            raise PlanError(f"plan {plan}: input codec {plan.input_codec!r} given, but {self.names[0]} runs the input")
        return Choice(tiers, tuple(plan.cuts), tuple(codecs), tuple(plan.exits))

    def canonical(self, plan: Plan) -> Plan:
        """The plan as the search writes it (the input codec named when the source sends the input)."""
        return self.to_plan(self.choice_of(plan))

    def violations(self, ch: Choice) -> list[str]:
        """Static constraints the choice breaks (accuracy floor, privacy, memory caps); empty when none."""
        out = []
        _, _, acc = self.exit_model.stats(ch.exits)
        drop = sum(self._drop(pos, c) for pos, c in self._hops(ch))
        budget = (acc - self.exit_model.final_accuracy) * 100.0 + self.max_accuracy_drop_pts
        if drop > budget + _EPS:
            out.append(f"accuracy: codecs lose {drop:.2f} pts, exits leave {budget:.2f} of {self.max_accuracy_drop_pts:g}")
        if self.privacy and ch.tiers[0] != 0:
            out.append(f"privacy: the raw input would leave {self.names[0]}")
        bounds = (0, *ch.cuts, self.num_positions)
        for i, t in enumerate(ch.tiers):
            cap = self.tiers[t].memory_cap_nbytes
            mem = self.range_memory_nbytes(bounds[i], bounds[i + 1])
            if cap is not None and mem > cap:
                out.append(f"memory: {self.names[t]}[{bounds[i]}:{bounds[i + 1]}] needs {mem:.0f} B > cap {cap:.0f} B")
        return out

    def _hops(self, ch: Choice) -> list[tuple[int, str]]:
        positions = ([0] if ch.tiers[0] != 0 else []) + list(ch.cuts)
        return list(zip(positions, ch.codecs))

    def _drop(self, pos: int, codec: str) -> float:
        i = int(np.searchsorted(self.hop_pos, pos))
        return float(self.drop_pts[i, self.codecs.index(codec)])

    # ------------------------------------------------------------------------------------ evaluation
    def evaluate(self, plan: Plan | Choice, cond: Conditions) -> Breakdown:
        """Predict one plan, walking each exit outcome's path explicitly (the reference the search must match).

        Raises:
            PlanError: the plan does not fit this chain/model, or the conditions do not fit the chain.
        """
        ch = plan if isinstance(plan, Choice) else self.choice_of(plan)
        self.check_conditions(cond)
        answer, head, acc = self.exit_model.stats(ch.exits)
        n, m = self.num_positions, len(self.tiers)
        factor = [cond.compute_factor.get(name, 1.0) for name in self.names]
        fixed = [cond.compute_fixed_s.get(name, 0.0) for name in self.names]
        fe = [cond.codec_factor.get(name, (1.0, 1.0))[0] for name in self.names]
        fd = [cond.codec_factor.get(name, (1.0, 1.0))[1] for name in self.names]
        queue = [cond.queue_s.get(name, 0.0) for name in self.names]
        bounds = (0, *ch.cuts, n)
        incoming: list[tuple[int, str, int, int] | None] = [None] * len(ch.tiers)
        hops = iter(self._hops(ch))
        if ch.tiers[0] != 0:
            pos, codec = next(hops)
            incoming[0] = (pos, codec, 0, ch.tiers[0])
        for i in range(1, len(ch.tiers)):
            pos, codec = next(hops)
            incoming[i] = (pos, codec, ch.tiers[i - 1], ch.tiers[i])
        enabled = {e.position for e in ch.exits}
        outcomes = [(e, answer[j]) for j, e in enumerate(self.exit_positions) if e in enabled] + [(n, answer[-1])]

        compute, busy, link_busy = [0.0] * m, [0.0] * m, [0.0] * max(m - 1, 0)
        enc = dec = transfer = rtt = wait = up_bytes = 0.0
        path_s: dict[int, float] = {}  # each outcome's own latency (unweighted)
        for x, w in outcomes:
            path = 0.0
            if ch.tiers[0] == 0:
                wait += w * queue[0]
                path += queue[0]
            for seg, t in enumerate(ch.tiers):
                a, b = bounds[seg], bounds[seg + 1]
                if incoming[seg] is not None:
                    pos, codec, s, r = incoming[seg]
                    i, k = int(np.searchsorted(self.hop_pos, pos)), self.codecs.index(codec)
                    nb = self.nbytes[s, i, k]
                    e_s, d_s = fe[s] * self.encode_s[s, i, k], fd[r] * self.decode_s[r, i, k]
                    enc += w * e_s
                    dec += w * d_s
                    busy[s] += w * e_s
                    busy[r] += w * d_s
                    up_bytes += w * nb
                    path += e_s + d_s + queue[r]
                    for link in range(s, r):
                        tx = 8.0 * nb / cond.links[link].bandwidth_bps
                        transfer += w * tx
                        link_busy[link] += w * tx
                        rtt += w * cond.links[link].rtt_s
                        path += tx + cond.links[link].rtt_s
                    wait += w * queue[r]
                stop = min(x, b)
                c = factor[t] * (self.cum_compute[t, stop] - self.cum_compute[t, a]) + fixed[t]
                for j, e in enumerate(self.exit_positions):
                    if e in enabled and a < e <= stop:
                        c += factor[t] * self.head_s[t, j]
                compute[t] += w * c
                busy[t] += w * c
                path += c
                if x <= b:  # answered here: the reply goes back to the source
                    for link in range(0, t):
                        transfer += w * 8.0 * self.reply_nbytes / cond.links[link].bandwidth_bps
                        path += 8.0 * self.reply_nbytes / cond.links[link].bandwidth_bps
                    break
            path_s[x] = path
        latency = sum(compute) + enc + dec + transfer + rtt + wait
        drop = sum(self._drop(pos, c) for pos, c in self._hops(ch))
        power = self.tiers[0].power
        tx0 = link_busy[0] if link_busy else 0.0
        energy = power.active_w * busy[0] + power.transmit_w * tx0 + power.idle_w * (latency - busy[0] - tx0)
        return Breakdown(
            latency_s=latency,
            compute_s={self.names[t]: compute[t] for t in range(m) if t in ch.tiers},
            encode_s=enc,
            decode_s=dec,
            transfer_s=transfer,
            rtt_s=rtt,
            queue_s=wait,
            accuracy=acc - drop / 100.0,
            exit_prob=float(1.0 - answer[-1]),
            energy_j=energy,
            bottleneck_s=max([*busy, *link_busy]),
            uplink_nbytes=up_bytes,
            outcome_latency_s=path_s,
            busy_s={self.names[t]: busy[t] for t in range(m) if busy[t] > 0 or t in ch.tiers},
            source_queue_s=queue[0] if ch.tiers[0] == 0 else 0.0,
        )


# ---------------------------------------------------------------------------------------- helpers
def _check_tiers(tiers: tuple[TierSpec, ...]) -> None:
    if not tiers:
        raise PlanError("a cost model needs at least one tier")
    order = [t.name for t in tiers]
    for name in order:
        if name not in TIERS:
            raise PlanError(f"unknown tier {name!r} (tiers: {', '.join(TIERS)})")
    if len(set(order)) != len(order) or order != sorted(order, key=TIERS.index):
        raise PlanError(f"tiers must be distinct and in chain order {' > '.join(TIERS)}, got {order}")
    p0 = tiers[0].profile
    for t in tiers[1:]:
        if t.profile.num_positions != p0.num_positions or t.profile.signature != p0.signature:
            raise PlanError(f"tier {t.name!r} profiled a different graph than {tiers[0].name!r}")
    for t in tiers:
        if not (t.compute_scale > 0 and t.codec_scale > 0):
            raise PlanError(f"tier {t.name!r}: compute_scale and codec_scale must be > 0")


def _codec_names(tiers: Sequence[TierSpec], positions: Sequence[int], wanted: Sequence[str] | None, what: str) -> list[str]:
    measured = [name for pos in positions for name in tiers[0].profile.positions[pos].codecs]
    have = list(dict.fromkeys(measured))
    if wanted is None:
        return have
    names = [w.split(":")[0] for w in wanted]
    missing = [w for w in names if w not in have]
    if missing:
        raise PlanError(f"{what}: {missing} not measured in the profile (measured: {have})")
    return names


def codec_drops_from_cuts(report: Mapping[str, Any], model: str = "demo") -> dict[tuple[int, str], float]:
    """``codec_accuracy_drop`` from a ``benchmarks/bench_cuts.py`` report (``{"rows": [...]}``): points lost
    vs fp32 per (cut, codec name), negatives (noise) clipped to 0.

    Args:
        report: The report; rows carry ``model`` (rows without one are the demo's, as reports before it).
        model: Whose rows to read. Rows with no measured loss (``accuracy_loss_pts`` null: untrained weights,
            agreement only) are skipped.
    """
    out: dict[tuple[int, str], float] = {}
    for row in report.get("rows", []):
        if row.get("model", "demo") != model or row.get("accuracy_loss_pts") is None:
            continue
        out[(int(row["cut"]), str(row["codec"]).split(":")[0])] = max(0.0, float(row["accuracy_loss_pts"]))
    return out


def node_param_nbytes(partition: Any) -> list[int]:
    """Bytes of parameters and buffers each compute node of a :class:`~edgeflow.core.partition.Partition` uses
    (a module's own, plus tensors fetched with ``get_attr``). Shared weights count at every use."""
    gm = partition.gm
    index = {partition.node_name(i): i for i in range(partition.num_positions)}
    out = [0] * partition.num_positions
    for node in gm.graph.nodes:
        i = index.get(node.name)
        if i is None:
            continue
        if node.op == "call_module":
            mod = gm.get_submodule(str(node.target))
            out[i] += sum(t.numel() * t.element_size() for t in [*mod.parameters(), *mod.buffers()])
        for arg in node.all_input_nodes:
            if arg.op == "get_attr":
                obj: Any = gm
                for part in str(arg.target).split("."):
                    obj = getattr(obj, part)
                if hasattr(obj, "element_size"):
                    out[i] += obj.numel() * obj.element_size()
    return out
