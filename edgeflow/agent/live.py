"""The device's live planner: every request goes by the current plan, and the plan follows the network.

At start (:meth:`LivePlanner.start`) the device

1. describes its upstream chain (the handshake's ``Describe``; the edge describes its own upstream for it,
   ``DescribeRequest.with_upstream``) and builds one :class:`~edgeflow.core.planner.TierSpec` per tier from that tier's
   own compute profile (``DescribeResponse.profile``, emulated slowdown included) and power figures; its own
   tier is profiled here once (``edgeflow.core.profile.profile_model``: compute, bytes and codec times per cut);
2. takes the exit behaviour from the artifact's calibration table (``ExitModel.from_calibration``);
3. measures each link's RTT (empty ``Probe`` calls) and bandwidth (one small probe) and picks the first plan.

Then, per request, :meth:`LivePlanner.observe` feeds the :class:`~edgeflow.core.planner.Replanner` from the
reply's breakdown (bytes and network seconds of every hop, each tier's compute and queueing) and calls
``decide(now)``; a switch is logged (``plan switch: OLD -> NEW (reason)``) and counted, and the next request
goes by the new plan. Requests in flight keep the plan they were stamped with (``InferCall.plan``), so a switch
never drops or repeats one. Links that carried nothing usable for a while are probed in the background.

The edge-to-cloud link is probed through the edge (:class:`RelayedPeer`, ``ProbeRequest.forward``): the edge times
its own probes of the cloud, so the device measures the link its requests take and needs no route past its edge.

Peers down and back: a reply that says a tier fell back (``Breakdown.fallback``, e.g. the edge finished because
the cloud did not answer) marks the tier after it down. The replanner then plans without it (and without any tier
past it) at once, so later requests do not wait on a dead peer, and a background thread probes the peer (``Probe``,
short timeout, every ``planner.down_probe_s``). When it answers, its link is measured afresh and the best plan is
taken at once. Both switches are logged and listed in :attr:`LivePlanner.switches` (reasons ``"cloud down: ..."``,
``"cloud back"``); :meth:`LivePlanner.down_tiers` tells what is down now. A relaying tier's fallbacks in the
first second after a return do not mark the tier down again: its own channel is still reconnecting.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import torch

from edgeflow.agent.agent import Agent
from edgeflow.config import PlannerConfig
from edgeflow.core.plan import Plan
from edgeflow.core.profile import ModelProfile
from edgeflow.core.codecs import get_codec
from edgeflow.errors import EdgeflowError, PeerUnavailable
from edgeflow.transport import Breakdown, Description, TierTiming

__all__ = ["PlanSwitch", "LivePlanner", "RelayedPeer", "profile_from_description"]

_log = logging.getLogger(__name__)
_RTT_PROBES = 3
_START_PROBE_NBYTES = 16_384  # the first bandwidth probe: 1.3 s at 0.1 Mbit/s, so start-up stays short
_PROBE_TIMEOUT_S = 5.0
_DOWN_PROBE_TIMEOUT_S = 0.5  # a peer that does not answer an empty probe within this is still down (or stalled)
_DOWN_RETRY_S = 5.0  # a down tier without a client to probe it with is tried again after this
_RELAY_RECONNECT_S = 1.0  # 2x the channels' reconnect backoff cap (transport/options.py: 0.5 s)


@dataclass(frozen=True)
class PlanSwitch:
    """One switch of the live plan (what the log line says, as data)."""

    t_s: float  # monotonic seconds
    request_index: int  # requests observed before the switch
    old: str
    new: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"t_s": self.t_s, "request_index": self.request_index, "old": self.old, "new": self.new,
                "reason": self.reason}  # fmt: skip


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


class LivePlanner:
    """Chooses the device's plan per request (see the module doc). Build with :meth:`start`.

    Args:
        agent: the device agent.
        replanner: hysteresis around the planner; its ``current`` is the plan in use.
        peers: per link, a client to probe it with (``probe(send_nbytes=..)``), or None.
        settings: the node's ``planner`` section.
        clock: monotonic seconds.
    """

    def __init__(self, agent: Agent, replanner: Any, peers: Sequence[Any], settings: PlannerConfig,
                 *, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.agent, self.replanner, self.peers, self.settings, self.clock = agent, replanner, list(peers), settings, clock
        self.model = replanner.model
        self.switches: list[PlanSwitch] = []
        self.last_reason = "start"
        self.requests = 0
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._closed = False
        self._predicted_s: float | None = None
        self._down: dict[str, tuple[float, str]] = {}  # tier -> (since, why)
        self._back_at: dict[str, float] = {}  # tier -> when it was last found back
        self._watch: threading.Thread | None = None
        self._wake = threading.Event()  # cuts the watcher's wait short on close

    # ------------------------------------------------------------------------------------ building
    @classmethod
    def start(
        cls,
        agent: Agent,
        settings: PlannerConfig,
        *,
        example: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
        descriptions: Sequence[Description] | None = None,
        peers: Sequence[Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        profile_repeats: int = 3,
    ) -> "LivePlanner":
        """Describe the chain, profile this tier, measure the links, choose the first plan.

        Args:
            agent: the device agent (its upstream, if any, is handshaken here).
            settings: the ``planner`` section.
            example: an input to profile the codecs on (real data gives real byte counts; default: the
                runtime's example input).
            descriptions: the upstream tiers' handshake answers, source side first (default: ask them).
            peers: with ``descriptions``, a client per link to probe it with (default: none).
            profile_repeats: timed runs per node for this tier's profile.

        Raises:
            EdgeflowError: an upstream cannot be described, or no plan meets the constraints.
        """
        from edgeflow.core.codecs import get_codec
        from edgeflow.core.planner import CostModel, ExitModel, LinkState, Planner, PowerSpec, Replanner, TierSpec
        from edgeflow.core.planner import ConditionsTracker, node_param_nbytes
        from edgeflow.core.planner.build import exit_head_seconds
        from edgeflow.core.planner.costmodel import IMAGE_CODECS
        from edgeflow.core.profile import profile_model
        from edgeflow.core.codecs import CODEC_NAMES

        t0 = time.perf_counter()
        rt, cfg = agent.runtime, agent.config
        peers = list(peers or [])
        if descriptions is None:
            peers = []
            descriptions = []
            if agent.upstream is not None:
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
                        _log.warning("live planner: %s cannot describe its upstream %s (%s); planning without it",
                                     d1.role, d1.upstream, e)  # fmt: skip
        x = example if example is not None else _default_example(agent)
        inputs = x if isinstance(x, tuple) else (x,)
        act_names = settings.activation_codecs or [c for c in CODEC_NAMES if c == "lossless" or c not in IMAGE_CODECS]
        image_input = len(inputs) == 1 and inputs[0].dim() == 4 and inputs[0].shape[1] in (1, 3)
        inp_names = [c for c in settings.input_codecs if (image_input or c == "lossless") and _encodes(c, inputs[0])]
        prof = profile_model(rt.partition, tuple(inputs), name="device", activation_codecs=[get_codec(c) for c in act_names],
                             input_codecs=[get_codec(c) for c in inp_names], repeats=profile_repeats, codec_repeats=1)  # fmt: skip
        request_nbytes, reply_nbytes = _message_overheads(agent, tuple(inputs), 1 + len(descriptions))
        prof = _with_message_bytes(prof, request_nbytes)
        own_prof = prof
        stage_s = _stage_overhead_s(agent, tuple(inputs), prof)
        prof = _with_stage_overhead(prof, stage_s, source=True)
        heads = [rt.exits[p] for p in sorted(rt.exits)]
        head_s = exit_head_seconds(rt.partition, heads, inputs[0], repeats=5) if heads else {}
        exits = None
        if heads and rt.calibration is not None:
            exits = ExitModel.from_calibration(rt.calibration, tuple(settings.exit_grid))
        p = cfg.power
        chain = [TierSpec(agent.role, prof, compute_scale=cfg.compute.slowdown_factor,
                          power=PowerSpec(p.idle_w, p.active_w, p.transmit_w), exit_head_s=head_s)]  # fmt: skip
        for d in descriptions:
            tier_prof, scale = profile_from_description(own_prof, d)
            tier_prof = _with_stage_overhead(tier_prof, stage_s * d.slowdown_factor / scale, source=False)
            hs = {k: v * d.slowdown_factor for k, v in head_s.items()}
            chain.append(TierSpec(d.role, tier_prof, compute_scale=scale, power=PowerSpec(*d.power_w), exit_head_s=hs))
        model = CostModel(
            chain, exits, activation_codecs=act_names, input_codecs=[c for c in inp_names if c in prof.positions[0].codecs],
            max_accuracy_drop_pts=settings.max_accuracy_drop_pts, privacy=settings.privacy,
            param_nbytes=node_param_nbytes(rt.partition), reply_nbytes=reply_nbytes,
        )  # fmt: skip
        planner = Planner(model)
        built = _build_source_ranges(rt)
        fb = LinkState(settings.fallback_bandwidth_mbit * 1e6, settings.fallback_rtt_ms / 1e3)
        tracker = ConditionsTracker(model.names, fallback=[fb] * (len(chain) - 1))
        slo = settings.slo_ms / 1e3 if settings.slo_ms is not None else None
        for link, peer in enumerate(peers):
            _probe_link(tracker, link, peer, _START_PROBE_NBYTES, clock)
            est = tracker.links[link]
            if est.bandwidth_bps(clock()) is None or _START_PROBE_NBYTES * 8 / est.bandwidth_bps(clock()) < 0.02:
                # a fast link: the first probe was mostly round trip (or burst); one sized to ~20 ms of transfer
                bw = est.bandwidth_bps(clock()) or settings.fallback_bandwidth_mbit * 1e6
                _probe_link(tracker, link, peer, int(min(4 << 20, max(4 * _START_PROBE_NBYTES, bw * 0.02 / 8))), clock,
                            rtt=False)  # fmt: skip
        if peers and len(chain) > 1:  # the links were measured: what a real message pays beyond a probe
            overhead = _message_overhead_s(agent, tuple(inputs), tracker, chain[1].name, clock)
            for est in tracker.links:  # the same software on every hop
                est.overhead_s = overhead
        cond = tracker.conditions(clock())
        assert cond is not None, "fallbacks are set"
        first = planner.search(cond, settings.objective, latency_slo_s=slo, top_k=0).best
        rp = Replanner(planner, first.plan, objective=settings.objective,
                       latency_slo_s=slo, tracker=tracker, margin=settings.margin, hold_s=settings.hold_s,
                       min_evaluations=settings.min_evaluations, min_interval_s=settings.min_interval_s)  # fmt: skip
        live = cls(agent, rp, peers, settings, clock=clock)
        live._predicted_s = first.breakdown.latency_s
        _log.info("live planner: chain %s, %d cuts, %d plans, %d ranges built, message overhead %.2f ms, first plan %s "
                  "(predicted %.1f ms) after %.1f s", " > ".join(model.names), len(model.cuts), planner.num_plans, built,
                  tracker.links[0].overhead_s * 1e3 if tracker.links else 0.0, first, first.breakdown.latency_s * 1e3,
                  time.perf_counter() - t0)  # fmt: skip
        return live

    # ------------------------------------------------------------------------------------ per request
    def current(self) -> tuple[Plan, float | None]:
        """``(plan, predicted latency s)`` for the next request."""
        with self._lock:
            return self.replanner.current, self._predicted_s

    @property
    def plan(self) -> Plan:
        return self.replanner.current

    def observe(self, breakdown: Breakdown, plan: Plan | str, *, decide: bool = True) -> None:
        """Feed one reply's breakdown (the request went by ``plan``), then re-plan (``decide``)."""
        plan = plan if isinstance(plan, Plan) else Plan.parse(plan)
        now = self.clock()
        names = self.model.names
        with self._lock:
            rp = self.replanner
            self.requests += 1
            for t in breakdown.tiers:
                if t.tier not in names:
                    continue
                i = names.index(t.tier)
                if t.bytes_out > 0 and i + 1 < len(names):
                    rp.observe_transfer(i, t.bytes_out + t.bytes_back, t.network_s, now)
                if t.stop > t.start and t.compute_s > 0:
                    heads = tuple(e.position for e in plan.exits if t.start < e.position <= t.stop)
                    try:
                        rp.observe_stage(t.tier, t.compute_s, t.start, t.stop, heads)
                    except EdgeflowError:
                        pass  # a range the cost model cannot price (not at its cuts): no correction from it
                rp.observe_queue(t.tier, t.queue_s)
            if breakdown.fallback:
                sent_s = now - (breakdown.tiers[0].total_s if breakdown.tiers else 0.0)
                self._mark_down(breakdown.fallback_tier, breakdown.fallback, sent_s, now)
            if decide:
                self._decide(now)
        if self.settings.probe:
            self._probe_stale(now)

    def down_tiers(self) -> frozenset[str]:
        """The tiers found down (a reply fell back at the tier before) and not answering probes since."""
        with self._lock:
            return frozenset(self._down)

    def _mark_down(self, fell_back: str, why: str, sent_s: float, now: float) -> None:
        """``fell_back`` finished a request itself: the tier after it is down (lock held)."""
        names = self.model.names
        if fell_back not in names or names.index(fell_back) + 1 >= len(names):
            return
        tier = names[names.index(fell_back) + 1]
        # a relaying tier reaches ``tier`` on its own channel, which reconnects with gRPC's backoff after the
        # watcher saw ``tier`` answer: its fallbacks just after the return are that reconnect, not a new outage
        grace = _RELAY_RECONNECT_S if names.index(fell_back) > 0 else 0.0
        if tier in self._down or sent_s < self._back_at.get(tier, -1.0) + grace:
            return  # known, or a request sent before the tier came back (or while the relay reconnects)
        self._down[tier] = (now, why)
        _log.warning("live planner: %s down (%s); planning without it", tier, why)
        self.replanner.set_unavailable(self._down)
        self._decide(now, why=f"{tier} down: {why}")
        if not self._closed and (self._watch is None or not self._watch.is_alive()):
            self._watch = threading.Thread(target=self._watch_down, daemon=True, name="edgeflow-down-probe")
            self._watch.start()

    def _watch_down(self) -> None:
        """Probe the down tiers until each answers (or the planner closes); re-plan as each comes back."""
        names = self.model.names
        while not self._closed:
            with self._lock:
                down = dict(self._down)
            if not down:
                return
            for tier, (since, _) in down.items():
                link = names.index(tier) - 1
                peer = self.peers[link] if link < len(self.peers) else None
                if peer is None:
                    if self.clock() - since < _DOWN_RETRY_S:
                        continue
                else:
                    try:
                        peer.probe(timeout_s=_DOWN_PROBE_TIMEOUT_S)
                        peer.probe(timeout_s=_DOWN_PROBE_TIMEOUT_S)  # a restarted peer's first calls are slow
                    except EdgeflowError:
                        continue
                    with self._lock:
                        nbytes = self.replanner.tracker.links[link].probe_nbytes(self.clock())
                    # the old rate is stale by now (a stall, which leaves no sample, may have been a slower
                    # link): the estimate restarts from this probe, not from before the tier went down
                    _probe_link(self.replanner.tracker, link, peer, nbytes, self.clock, self._lock, restart=True)
                with self._lock:
                    now = self.clock()
                    self._down.pop(tier, None)
                    self._back_at[tier] = now
                    _log.info("live planner: %s back after %.2f s", tier, now - since)
                    self.replanner.set_unavailable(self._down)
                    self._decide(now, why=f"{tier} back")
            self._wake.wait(self.settings.down_probe_s)

    def _decide(self, now: float, why: str | None = None) -> None:
        rp = self.replanner
        old = str(rp.current)
        try:
            d = rp.decide(now)
        except EdgeflowError as e:  # no feasible plan (e.g. with tiers down): keep the current one
            _log.warning("live planner: keeping %s: %s", old, e)
            self.last_reason = f"keep: {e}"
            return
        if d.switched:
            new = str(d.plan)
            why = why or d.reason.split(f"-> {new}: ", 1)[-1]  # the replanner's reason repeats both plans
            sw = PlanSwitch(now, self.requests, old, new, why)
            self.switches.append(sw)
            _log.info("plan switch: %s -> %s (%s)", old, new, why)
        self.last_reason = d.reason
        cond = rp.tracker.conditions(now)
        if cond is not None:
            self._predicted_s = self.model.evaluate(rp.current, cond).latency_s

    def predict_s(self, plan: Plan) -> float | None:
        """Predicted expected latency of ``plan`` under the conditions estimated now."""
        with self._lock:
            cond = self.replanner.tracker.conditions(self.clock())
            return None if cond is None else self.model.evaluate(plan, cond).latency_s

    def estimate_bps(self, link: int = 0) -> float | None:
        """The bandwidth estimate of ``link`` (0: device to the next tier)."""
        with self._lock:
            return self.replanner.tracker.links[link].bandwidth_bps(self.clock())

    # ------------------------------------------------------------------------------------ probes
    def _probe_stale(self, now: float) -> None:
        with self._lock:
            down = {self.model.names.index(t) - 1 for t in self._down}  # the watcher probes those
            stale = [i for i in self.replanner.stale_links(now) if i < len(self.peers) and i not in down]
            if not stale or self._closed or (self._probe is not None and self._probe.is_alive()):
                return
            self._probe = threading.Thread(target=self._run_probes, args=(stale,), daemon=True,
                                           name="edgeflow-probe")  # fmt: skip
            self._probe.start()

    def _run_probes(self, links: list[int]) -> None:
        for link in links:
            if self._closed:
                return
            with self._lock:
                nbytes = self.replanner.tracker.links[link].probe_nbytes(self.clock())
            _probe_link(self.replanner.tracker, link, self.peers[link], nbytes, self.clock, self._lock)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._probe is not None:
            self._probe.join(timeout=_PROBE_TIMEOUT_S + 1)
        if self._watch is not None:
            self._watch.join(timeout=_PROBE_TIMEOUT_S * (_RTT_PROBES + 1) + 1)


class RelayedPeer:
    """Probes the link past ``via`` through it (``ProbeRequest.forward``): ``via`` times its own probe of its upstream
    and answers the seconds, so the link measured is the one requests take (edge to cloud, not the device's own path
    to the cloud's address) and the device needs no route past its edge. Used as a ``peers`` entry.

    Args:
        via: the client of the relaying tier (the device's upstream).
        address: the far tier's address, for messages.
    """

    def __init__(self, via: Any, address: str):
        self.via, self.address = via, address

    def probe(self, *, send_nbytes: int = 0, timeout_s: float = 10.0) -> float:
        seconds = float(self.via.probe_upstream(send_nbytes=send_nbytes, timeout_s=timeout_s))
        if not seconds > 0:  # an agent that predates ProbeRequest.forward echoes the probe and leaves forward_s at 0
            raise PeerUnavailable(f"{self.via.address} did not forward the probe to {self.address} (an older edgeflow?)")
        return seconds


def _probe_link(tracker: Any, link: int, peer: Any, nbytes: int, clock: Callable[[], float],
                lock: threading.Lock | None = None, *, rtt: bool = True, restart: bool = False) -> None:  # fmt: skip
    """RTT (best of a few empty probes) and one bandwidth sample (a probe carrying ``nbytes`` up); ``restart``:
    the link's rate estimate restarts from that sample (kept as it was should the probe fail or be unusable)."""
    lock = lock or threading.Lock()
    try:
        if rtt:
            best = min(peer.probe(timeout_s=_PROBE_TIMEOUT_S) for _ in range(_RTT_PROBES))
            with lock:
                tracker.observe_rtt(link, best, clock())
        seconds = peer.probe(send_nbytes=nbytes, timeout_s=_PROBE_TIMEOUT_S)
        with lock:
            used = tracker.observe_transfer(link, nbytes, seconds, clock(), message=False, restart=restart)
        _log.debug("probe of link %d: %d bytes in %.1f ms (%s)", link, nbytes, seconds * 1e3, "used" if used else "unusable")
    except EdgeflowError as e:
        _log.info("probe of link %d failed: %s", link, e)


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
    wire = [agent._wire(i.name, v, codec) for i, v in zip(rt.cut_info(k).tensors, values)]
    plan = f"{agent.role}[0:{k}]|lossless > {upstream_role}[{k}:]"
    samples = []
    try:
        for _ in range(repeats):
            t = TierTiming(agent.role, 0, k)
            agent._call_upstream(f"overhead-{uuid.uuid4().hex}", k, wire, t, time.monotonic() + _PROBE_TIMEOUT_S, plan)
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
    from edgeflow.transport import InferCall, InferReply, WireTensor
    from edgeflow.transport.messages import encode_reply, encode_request

    rt = agent.runtime
    plan = "device[0:20]|int8 > edge[20:52]|int8 > cloud[52:70]  exits@20:0.9,36:0.95,52:0.99"  # a typical length
    info = rt.cut_info(rt.cuts[len(rt.cuts) // 2]).tensors
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


def _build_source_ranges(rt: Any) -> int:
    """Build, before any request, every range the source may run: from 0 or an exit to each cut or the end.

    A range is built on first use (an fx graph, ~1 ms of host CPU each), inside the compute unit, so without this
    the first request of a newly chosen plan paid the builds, and an emulated slowdown multiplies them: the first
    device-only run with exits took 2.2-2.5 ms of CPU here, 1.4-1.6 ms with its ranges built (x64: ~60 ms less).
    Building the demo model's 172 costs ~0.4 s once and no measurable memory. Ranges that start at other cuts
    are the upstream tiers' and are built there."""
    starts = [0, *sorted(p for p in rt.exits if p < rt.num_positions)]
    stops = [*rt.cuts, rt.num_positions]
    built = 0
    for a in starts:
        for b in stops:
            if b > a:
                rt.partition.range_module(a, b)
                built += 1
    return built


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


def _default_example(agent: Agent) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """An input to profile codec bytes on: a real demo image for the demo artifact (a zero image, the
    runtime's example, compresses to almost nothing and would make every hop look free), else a seeded random
    one of the runtime example's shape (compresses worse than real data: the safe side)."""
    if agent.config.model.artifact == "builtin:demo":
        from edgeflow.core.data import load_demo_dataset

        return load_demo_dataset("calibration")[0][:1].contiguous()
    ex = agent.runtime.example_input
    g = torch.Generator().manual_seed(0)
    out = tuple(torch.rand(e.shape, generator=g).to(e) if e.is_floating_point() else e for e in ex)
    return out[0] if len(out) == 1 else out


def _encodes(codec: str, x: torch.Tensor) -> bool:
    """Whether ``codec`` takes this input (png refuses float images that are not k/255)."""
    from edgeflow.core.codecs import get_codec

    try:
        get_codec(codec).encode(x)
        return True
    except EdgeflowError:
        return False

