"""Measuring the chain a device plans over: from handshakes, its own profile and probes to a cost model (data).

:func:`measure_chain` is the build half of the live planner (:class:`edgeflow.agent.live.LivePlanner` consumes its
result). The device

1. describes its upstream chain (the handshake's ``Describe``; the edge describes its own upstream for it,
   ``DescribeRequest.with_upstream``) and builds one :class:`~edgeflow.core.planner.TierSpec` per tier from that tier's
   own compute profile (``DescribeResponse.profile``, emulated slowdown included) and power figures; its own tier is
   profiled here once (:func:`edgeflow.core.planner.build.planning_inputs`: compute, bytes at every cut, codec times
   fitted from a few cuts);
2. takes the exit behaviour from the artifact's calibration table (``ExitModel.from_calibration``);
3. measures what a request pays beyond the profile: the bytes of a message around its payloads, a stage's fixed
   cost in the compute unit, and an ``Infer`` call's fixed cost beyond an empty probe's round trip;
4. measures each link's RTT (empty ``Probe`` calls) and bandwidth (one small probe, then one sized to the link).

Each step's seconds are kept (:attr:`ChainMeasurement.steps_s`): the benchmark reports where start-up time goes.
"""

from __future__ import annotations

import logging
import statistics
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch

from edgeflow.agent.agent import Agent
from edgeflow.agent.probes import PROBE_TIMEOUT_S, RelayedPeer, probe_link
from edgeflow.config import PlannerConfig
from edgeflow.core.codecs import CODEC_NAMES, OPT_IN_CODECS, get_codec
from edgeflow.core.planner import ConditionsTracker, CostModel, LinkState, PowerSpec, TierSpec, node_param_nbytes
from edgeflow.core.planner.build import planning_inputs
from edgeflow.core.planner.costmodel import IMAGE_CODECS
from edgeflow.core.profile import ModelProfile
from edgeflow.errors import EdgeflowError, PeerUnavailable
from edgeflow.transport import Breakdown, Description, InferCall, InferReply, TierTiming, WireTensor
from edgeflow.transport.messages import encode_reply, encode_request

__all__ = ["ChainMeasurement", "measure_chain", "profile_from_description", "build_source_ranges", "default_example"]

_log = logging.getLogger(__name__)
_START_PROBE_NBYTES = 16_384  # the first bandwidth probe: 1.3 s at 0.1 Mbit/s, so start-up stays short
_CODEC_FIT_POINTS = 4  # codec times are timed at this many cuts and fitted at the others


@dataclass
class ChainMeasurement:
    """What the device measured of its chain: the cost model and the link estimates to plan with.

    Attributes:
        model: the cost model (tiers of the chain, source first).
        tracker: link estimates from the start-up probes (and the per-message overhead), ready for passive samples.
        peers: per link, a client to probe it with (``probe(send_nbytes=..)``).
        steps_s: seconds each start-up step took, in order.
    """

    model: CostModel
    tracker: ConditionsTracker
    peers: list[Any]
    steps_s: dict[str, float] = field(default_factory=dict)


def measure_chain(
    agent: Agent,
    settings: PlannerConfig,
    *,
    example: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    descriptions: Sequence[Description] | None = None,
    peers: Sequence[Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
    profile_repeats: int = 3,
) -> ChainMeasurement:
    """Describe the chain, profile this tier, measure the links (see the module doc).

    Args:
        agent: the device agent (its upstream, if any, is handshaken here).
        settings: the ``planner`` section.
        example: an input to profile the codecs on (real data gives real byte counts; default: a real demo image
            for the demo artifact, else a seeded random input of the runtime's example shape).
        descriptions: the upstream tiers' handshake answers, source side first (default: ask them).
        peers: with ``descriptions``, a client per link to probe it with (default: none).
        clock: monotonic seconds.
        profile_repeats: timed runs per node for this tier's profile.

    Raises:
        EdgeflowError: an upstream cannot be described, or the cost model cannot be built.
    """
    steps: dict[str, float] = {}
    t = time.perf_counter()

    def step(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        steps[name] = now - t
        t = now

    rt, cfg = agent.runtime, agent.config
    peers = list(peers or [])
    if descriptions is None:
        descriptions, peers = _describe_chain(agent, clock)
    step("describe")
    x = example if example is not None else default_example(agent)
    inputs = x if isinstance(x, tuple) else (x,)
    act_names = settings.activation_codecs or [
        c for c in CODEC_NAMES if (c == "lossless" or c not in IMAGE_CODECS) and c not in OPT_IN_CODECS
    ]
    image_input = len(inputs) == 1 and inputs[0].dim() == 4 and inputs[0].shape[1] in (1, 3)
    inp_names = [c for c in settings.input_codecs if (image_input or c == "lossless") and _encodes(c, inputs[0])]
    measured = planning_inputs(rt.partition, tuple(inputs), rt.exits, rt.calibration, activation_codecs=act_names,
                               input_codecs=inp_names, name="device", repeats=profile_repeats,
                               codec_fit_points=_CODEC_FIT_POINTS, exit_grid=settings.exit_grid)  # fmt: skip
    step("profile")
    request_nbytes, reply_nbytes = _message_overheads(agent, tuple(inputs), 1 + len(descriptions))
    own_prof = _with_message_bytes(measured.profile, request_nbytes)
    stage_s = _stage_overhead_s(agent, tuple(inputs), own_prof)
    step("overheads")
    p = cfg.power
    head_s = measured.exit_head_s
    chain = [TierSpec(agent.role, _with_stage_overhead(own_prof, stage_s, source=True),
                      compute_scale=cfg.compute.slowdown_factor, power=PowerSpec(p.idle_w, p.active_w, p.transmit_w),
                      exit_head_s=head_s)]  # fmt: skip
    for d in descriptions:
        if not d.slowdown_factor > 0:
            raise EdgeflowError(f"upstream {d.role} describes slowdown_factor {d.slowdown_factor}: must be > 0")
        tier_prof, scale = profile_from_description(own_prof, d)
        tier_prof = _with_stage_overhead(tier_prof, stage_s * d.slowdown_factor / scale, source=False)
        hs = {k: v * d.slowdown_factor for k, v in head_s.items()}
        chain.append(TierSpec(d.role, tier_prof, compute_scale=scale, power=PowerSpec(*d.power_w), exit_head_s=hs))
    model = CostModel(
        chain, measured.exits, activation_codecs=act_names,
        input_codecs=[c for c in inp_names if c in own_prof.positions[0].codecs],
        max_accuracy_drop_pts=settings.max_accuracy_drop_pts, privacy=settings.privacy,
        param_nbytes=node_param_nbytes(rt.partition), reply_nbytes=reply_nbytes,
    )  # fmt: skip
    step("cost model")
    fb = LinkState(settings.fallback_bandwidth_mbit * 1e6, settings.fallback_rtt_ms / 1e3)
    tracker = ConditionsTracker(model.names, fallback=[fb] * (len(chain) - 1))
    for link, peer in enumerate(peers):
        probe_link(tracker, link, peer, _START_PROBE_NBYTES, clock)
        est = tracker.links[link]
        bw = est.bandwidth_bps(clock())
        if bw is None or _START_PROBE_NBYTES * 8 / bw < 0.02:
            # a fast link: the first probe was mostly round trip (or burst); one sized to ~20 ms of transfer
            bw = bw or settings.fallback_bandwidth_mbit * 1e6
            probe_link(tracker, link, peer, int(min(4 << 20, max(4 * _START_PROBE_NBYTES, bw * 0.02 / 8))), clock,
                       rtt=False)  # fmt: skip
    step("probes")
    if peers and len(chain) > 1:  # the links were measured: what a real message pays beyond a probe
        overhead = _message_overhead_s(agent, tuple(inputs), tracker, chain[1].name, clock)
        for est in tracker.links:  # the same software on every hop
            est.overhead_s = overhead
    step("message overhead")
    return ChainMeasurement(model, tracker, peers, steps)


def _describe_chain(agent: Agent, clock: Callable[[], float]) -> tuple[list[Description], list[Any]]:
    """The upstream tiers' handshake answers and a client per link (the far link probed through the edge)."""
    rt, cfg = agent.runtime, agent.config
    descriptions: list[Description] = []
    peers: list[Any] = []
    if agent.upstream is None:
        return descriptions, peers
    d1 = agent.upstream.handshake(clock() + cfg.deadlines.connect_s)
    descriptions.append(d1)
    peers.append(agent.upstream.peer)
    if d1.upstream:  # described and probed through the edge: the device needs no route past it
        try:
            d = agent.upstream.peer.describe(rt.fingerprint, cfg.role, timeout_s=cfg.deadlines.connect_s,
                                             with_upstream=True)  # fmt: skip
            if d.upstream_description is None:
                raise PeerUnavailable(d.upstream_error or "no answer")
            descriptions.append(d.upstream_description)
            peers.append(RelayedPeer(agent.upstream.peer, d1.upstream))
        except EdgeflowError as e:
            _log.warning("live planner: %s cannot describe its upstream %s (%s); planning without it", d1.role,
                         d1.upstream, e)  # fmt: skip
    return descriptions, peers


def profile_from_description(own: ModelProfile, d: Description) -> tuple[ModelProfile, float]:
    """A tier's :class:`ModelProfile` from its handshake answer, on top of the device's own profile.

    Compute comes from ``d.profile`` (segments between consecutive cuts, slowdown included): cumulative seconds
    at every boundary; positions inside a segment are spread in proportion to the device's own profile. Bytes
    and codec times stay the device's (the same graph; codec times are host-bound, see ``TierSpec.codec_scale``).

    Returns:
        ``(profile, compute_scale)``: scale 1 with the tier's own profile, else the device's profile and the
        tier's ``slowdown_factor`` (an agent started with ``--profile-repeats 0`` sends no profile).
    """
    if not d.profile or d.num_positions != own.num_positions:
        return own, float(d.slowdown_factor)
    own_cum = [p.cum_compute_s for p in own.positions]
    bounds: dict[int, float] = {0: 0.0}
    total = 0.0
    for seg in sorted(d.profile, key=lambda s: s.start):
        total += seg.compute_s
        bounds[seg.stop] = total
    keys = sorted(bounds)
    cum = []
    for k in range(own.num_positions + 1):
        hi = next((b for b in keys if b >= k), keys[-1])
        lo = max((b for b in keys if b <= k), default=0)
        if hi == lo:
            cum.append(bounds[lo])
            continue
        span = own_cum[hi] - own_cum[lo]
        frac = (own_cum[k] - own_cum[lo]) / span if span > 0 else (k - lo) / (hi - lo)
        cum.append(bounds[lo] + frac * (bounds[hi] - bounds[lo]))
    positions = [replace(p, cum_compute_s=c) for p, c in zip(own.positions, cum)]
    return replace(own, positions=positions, full_forward_s=cum[-1]), 1.0


def _message_overhead_s(agent: Agent, inputs: tuple[torch.Tensor, ...], tracker: Any, upstream_role: str,
                        clock: Callable[[], float], repeats: int = 5) -> float:  # fmt: skip
    """Seconds an Infer call to the next tier pays beyond the empty probe's round trip and its bytes at the
    estimated bandwidth (see ``overhead_s`` in ``edgeflow.core.planner.estimator``); 0 when it cannot be told.

    Measured by the agent's own upstream call (its ``network_s``: call time less the upstream's own time), with
    real calls that ask the next tier for the model's last range only, on the last cut's values (computed here
    without the emulated slowdown). A call whose bytes would take over half its network time at the estimated
    bandwidth is not used: there the overhead hides in the transfer's error (and matters little).
    """
    rt = agent.runtime
    est = tracker.links[0]
    bw, rtt = est.bandwidth_bps(clock()), est.rtt_s(clock())
    if agent.upstream is None or not rt.cuts or bw is None or rtt is None:  # no hop, or it was not measured
        return 0.0
    k = rt.cuts[-1]
    codec = get_codec("lossless")
    with torch.inference_mode():
        values = rt.partition.activations(*inputs, positions=[k])[k]
    wire = [agent.wire_tensor(i.name, v, codec) for i, v in zip(rt.cut_info(k).tensors, values)]
    plan = f"{agent.role}[0:{k}]|lossless > {upstream_role}[{k}:]"
    samples = []
    try:
        for _ in range(repeats):
            t = TierTiming(agent.role, 0, k)
            agent.call_upstream(f"overhead-{uuid.uuid4().hex}", k, wire, t, time.monotonic() + PROBE_TIMEOUT_S, plan)
            transfer = 8 * (t.bytes_out + t.bytes_back) / bw
            if transfer < t.network_s / 2:
                samples.append(t.network_s - rtt - transfer)
    except EdgeflowError as e:
        _log.info("live planner: message overhead not measured: %s", e)
        return 0.0
    return max(0.0, statistics.median(samples)) if samples else 0.0


def _message_overheads(agent: Agent, inputs: tuple[torch.Tensor, ...], num_tiers: int) -> tuple[int, int]:
    """Bytes a hop carries beyond the codec payloads (ids, fingerprint, plan text, tensor metadata), and the bytes
    of a whole reply (the output, lossless, and a breakdown of ``num_tiers`` tiers). At 0.3 Mbit/s a 400-byte
    reply is 10 ms: the cost model must count the real messages, not just the tensors."""
    rt = agent.runtime
    plan = "device[0:20]|int8 > edge[20:52]|int8 > cloud[52:70]  exits@20:0.9,36:0.95,52:0.99"  # a typical length
    info = rt.cut_info(rt.cuts[len(rt.cuts) // 2]).tensors if rt.cuts else rt.cut_info(0).tensors
    wire = [WireTensor(i.name, "FP32", tuple(i.shape), "int8", b"") for i in info]
    request = len(encode_request(InferCall("device-123456-1234", rt.fingerprint, 20, wire, plan=plan)))
    outcome = rt.run(0, rt.num_positions, list(inputs))
    codec = get_codec("lossless")
    out = [WireTensor("output", "FP32", tuple(v.shape), "lossless", codec.encode(v)) for v in outcome.values]
    tiers = [TierTiming("device", 0, 20, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 10**5, 10**5, 400, 1e-3)] * num_tiers
    reply = len(encode_reply(InferReply("device-123456-1234", rt.fingerprint, rt.num_positions, out,
                                        Breakdown(tiers, "cloud", 52, 0.99))))  # fmt: skip
    return request, reply


def _with_message_bytes(prof: ModelProfile, nbytes: int) -> ModelProfile:
    """Add a message's own bytes to every hop's payload bytes."""
    positions = [replace(p, codecs={k: replace(c, nbytes=c.nbytes + nbytes) for k, c in p.codecs.items()})
                 for p in prof.positions]  # fmt: skip
    return replace(prof, positions=positions)


def _stage_overhead_s(agent: Agent, inputs: tuple[torch.Tensor, ...], prof: ModelProfile, repeats: int = 7) -> float:
    """Seconds a stage costs beyond its nodes on this host (compute unit hand-off, range call), before slowdown.

    Measured through the agent's own compute unit on its smallest range. The emulated slowdown multiplies it
    like the rest of the compute (at x30, ~60 us becomes ~2 ms), so without it the cost model under-prices short
    stages and a multiplicative correction then over-prices long ones.
    """
    rt = agent.runtime
    stop = rt.cuts[0] if rt.cuts else rt.num_positions
    times = []
    for _ in range(repeats):
        _, job = agent.compute.run(lambda: rt.run(0, stop, list(inputs)), time.monotonic() + 10.0, block=True)
        times.append(job.compute_s)
    f = agent.config.compute.slowdown_factor
    return max(0.0, statistics.median(times) / f - prof.positions[stop].cum_compute_s)


def _with_stage_overhead(prof: ModelProfile, stage_s: float, *, source: bool) -> ModelProfile:
    """Fold a per-stage cost into a profile: the source's compute from position 0 (it always starts there),
    another tier's decode at each hop position (the cost model charges decode to the tier that computes next)."""
    if stage_s <= 0:
        return prof
    if source:
        positions = [p if p.position == 0 else replace(p, cum_compute_s=p.cum_compute_s + stage_s) for p in prof.positions]
    else:
        positions = [replace(p, codecs={k: replace(c, decode_s=c.decode_s + stage_s) for k, c in p.codecs.items()})
                     for p in prof.positions]  # fmt: skip
    return replace(prof, positions=positions)


def build_source_ranges(rt: Any, first: Sequence[tuple[int, int]] = ()) -> int:
    """Build every range the source may run: from 0 or an exit to each cut or the end (``first`` before the rest).

    A range is built on first use (an fx graph, ~1 ms of host CPU each), inside the compute unit, so without this
    the first request of a newly chosen plan paid the builds, and an emulated slowdown multiplies them: the first
    device-only run with exits took 2.2-2.5 ms of CPU here, 1.4-1.6 ms with its ranges built (x64: ~60 ms less).
    The demo model has 172 (~0.8 s once, no measurable memory): the live planner builds them after its first plan,
    in the background. Ranges that start at other cuts are the upstream tiers' and are built there."""
    starts = [0, *sorted(p for p in rt.exits if p < rt.num_positions)]
    stops = [*rt.cuts, rt.num_positions]
    ranges = list(dict.fromkeys([*first, *((a, b) for a in starts for b in stops if b > a)]))
    for a, b in ranges:
        rt.partition.range_module(a, b)
    return len(ranges)


def default_example(agent: Agent) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """An input to profile codec bytes on: a real demo image for the demo artifact (a zero image, the
    runtime's example, compresses to almost nothing and would make every hop look free), else a seeded random
    one of the runtime example's shape (compresses worse than real data: the safe side)."""
    if agent.config.model.artifact == "builtin:demo":
        from edgeflow.core.data import demo_example

        return demo_example(0)
    ex = agent.runtime.example_input
    g = torch.Generator().manual_seed(0)
    out = tuple(torch.rand(e.shape, generator=g).to(e) if e.is_floating_point() else e for e in ex)
    return out[0] if len(out) == 1 else out


def _encodes(codec: str, x: torch.Tensor) -> bool:
    """Whether ``codec`` takes this input (png refuses float images that are not k/255)."""
    try:
        get_codec(codec).encode(x)
        return True
    except EdgeflowError:
        return False
