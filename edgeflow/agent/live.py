"""The device's live planner: every request goes by the current plan, and the plan follows the network.

It runs on what :func:`edgeflow.agent.measure.measure_chain` measured (the cost model and the start-up link
estimates): the first plan is the best one for those; then, per reply, :meth:`LivePlanner.observe` feeds the
:class:`~edgeflow.core.planner.Replanner` from the reply's breakdown (bytes and network seconds of every hop, each
tier's compute and queueing) and decides; a switch is logged (``plan switch: OLD -> NEW (reason)``) and counted,
and the next request goes by the new plan. Requests in flight keep the plan they were stamped with
(``InferCall.plan``), so a switch never drops or repeats one. Links that carried nothing usable for a while are
probed in the background. The device's :class:`~edgeflow.agent.source.Source` asks it for each request's plan,
whether the input came from an in-process caller or over gRPC.

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
import threading
import time
from collections import deque
from typing import Any, Callable, Sequence

import torch

from edgeflow.agent.agent import Agent
from edgeflow.agent.measure import ChainMeasurement, measure_chain
from edgeflow.agent.probes import PROBE_TIMEOUT_S, RTT_PROBES, RelayedPeer, probe_link
from edgeflow.agent.streamcost import CutSampler, HopShares, own_hop, stream_hops
from edgeflow.agent.streams import StreamRef
from edgeflow.config import PlannerConfig
from edgeflow.core.plan import ExitPoint, Plan
from edgeflow.core.planner import Breakdown as CostBreakdown
from edgeflow.core.planner import Planner, Replanner
from edgeflow.core.planner.content import ContentBytes, hop_deltas
from edgeflow.errors import EdgeflowError
from edgeflow.transport import Breakdown, Description, LinkReading, LiveState, PlanSwitch

__all__ = ["PlanSwitch", "LivePlanner", "RelayedPeer"]

_log = logging.getLogger(__name__)
_DOWN_PROBE_TIMEOUT_S = 0.5  # a peer that does not answer an empty probe within this is still down (or stalled)
_DOWN_RETRY_S = 5.0  # a down tier without a client to probe it with is tried again after this
_RELAY_RECONNECT_S = 1.0  # 2x the channels' reconnect backoff cap (transport/options.py: 0.5 s)
_SWITCHES_KEPT = 4096  # switch history kept in memory (a long-running device switches a few times a minute)
_SWITCHES_DESCRIBED = 64  # the latest switches Describe reports
_BOUND_FOLLOW_UPS = 3  # probes right after one that only bounded a link's rate from below
_QUICK = 0.75  # a message this much quicker than the link estimate allows says the estimate is stale: probe
_QUICK_PROBE_S = 0.25  # ... at most this often per link
_STALLED = "did not answer in time"  # what a fallback's reason says of a peer that stalled (edgeflow.agent.failover)


class LivePlanner:
    """Chooses the device's plan per request (see the module doc). Build with :meth:`start`, or from a measurement.

    Args:
        agent: the device agent.
        measured: the chain as :func:`~edgeflow.agent.measure.measure_chain` measured it.
        settings: the node's ``planner`` section.
        clock: monotonic seconds.

    Raises:
        PlanError: no plan meets the constraints.
    """

    def __init__(self, agent: Agent, measured: ChainMeasurement, settings: PlannerConfig,
                 *, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.agent, self.settings, self.clock = agent, settings, clock
        self.model = measured.model
        self.peers = list(measured.peers)
        self.steps_s = dict(measured.steps_s)
        planner = Planner(self.model)
        slo = settings.slo_ms / 1e3 if settings.slo_ms is not None else None
        t = time.perf_counter()
        cond = measured.tracker.conditions(clock())
        assert cond is not None, "fallbacks are set"
        first = planner.search(cond, settings.objective, latency_slo_s=slo, top_k=0).best
        self.replanner = Replanner(planner, first.plan, objective=settings.objective, latency_slo_s=slo,
                                   tracker=measured.tracker, margin=settings.margin, hold_s=settings.hold_s,
                                   min_evaluations=settings.min_evaluations,
                                   min_interval_s=settings.min_interval_s)  # fmt: skip
        self.steps_s["first plan"] = time.perf_counter() - t
        self.started_s = clock()
        self._switches: deque[PlanSwitch] = deque(maxlen=_SWITCHES_KEPT)
        self.last_reason = "start"
        self.requests = 0
        # per hop (position, codec): stream frames' bytes over coding each on its own, where frames went
        # (stream_share) and where only the device's samples tell (stream_estimate); see agent/streamcost.py
        self.stream_share: dict[tuple[int, str], float] = {}
        self.stream_estimate: dict[tuple[int, str], float] = {}
        streams = agent.config.streams
        self._shares = HopShares(streams.key_interval)
        self.sampler = CutSampler(agent.runtime, agent.compute, stream_hops(self.model) if streams.enabled else (),
                                  agent.codecs.get, streams, self._sampled, clock=clock)  # fmt: skip
        self.content = ContentBytes()  # per hop: its bytes against the input's content proxy (core/planner/content.py)
        self._lock = threading.Lock()
        self._probe: threading.Thread | None = None
        self._closed = False
        self._predicted: CostBreakdown | None = first.breakdown  # the current plan's, under the latest conditions
        self._down: dict[str, tuple[float, str]] = {}  # tier -> (since, why)
        self._suspect: dict[str, tuple[float, str]] = {}  # tier -> (since, why): a call to it is overdue
        self._probed_at: dict[int, float] = {}  # link -> when its last background probe started
        self._back_at: dict[str, float] = {}  # tier -> when it was last found back
        self._watch: threading.Thread | None = None
        self._wake = threading.Event()  # cuts the watcher's wait short on close
        self._rebound: set[int] = set()  # links whose estimate a reply restarted from a lower bound: probe them
        links = self.replanner.tracker.links
        _log.info("live planner: chain %s, %d cuts, %d plans, message overhead %.2f ms, first plan %s (predicted "
                  "%.1f ms); start-up %s", " > ".join(self.model.names), len(self.model.cuts), planner.num_plans,
                  links[0].overhead_s * 1e3 if links else 0.0, first, first.breakdown.latency_s * 1e3,
                  ", ".join(f"{k} {v:.2f} s" for k, v in self.steps_s.items()))  # fmt: skip

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
        """Measure the chain (:func:`~edgeflow.agent.measure.measure_chain`, same arguments) and choose the first plan.

        Raises:
            EdgeflowError: an upstream cannot be described, or no plan meets the constraints.
        """
        measured = measure_chain(agent, settings, example=example, descriptions=descriptions, peers=peers, clock=clock,
                                 profile_repeats=profile_repeats)  # fmt: skip
        return cls(agent, measured, settings, clock=clock)

    # ------------------------------------------------------------------------------------ per request
    def current(self) -> tuple[Plan, float | None]:
        """``(plan, predicted latency s)`` for the next request."""
        with self._lock:
            return self.replanner.current, self._predicted.latency_s if self._predicted is not None else None

    def current_breakdown(self) -> tuple[Plan, CostBreakdown | None]:
        """``(plan, its predicted cost breakdown)`` for the next request (see :class:`~edgeflow.agent.source.Source`,
        which adds the wait for the device's own compute unit)."""
        with self._lock:
            return self.replanner.current, self._predicted

    @property
    def plan(self) -> Plan:
        return self.replanner.current

    @property
    def switches(self) -> list[PlanSwitch]:
        """The switches so far (the latest few thousand), oldest first; ``t_s`` in this process's monotonic seconds."""
        with self._lock:
            return list(self._switches)

    def observe(self, breakdown: Breakdown, plan: Plan | str, *, decide: bool = True,
                proxy: float | None = None) -> None:  # fmt: skip
        """Feed one reply's breakdown (the request went by ``plan``; ``proxy``: its input's content proxy, see
        :meth:`content_s`), then re-plan (``decide``)."""
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
                    bounded = rp.tracker.links[i].bounded_s
                    quick = self._quicker_than_estimated(i, t.bytes_out + t.bytes_back, t.network_s, now)
                    rp.observe_transfer(i, t.bytes_out + t.bytes_back, t.network_s, now)
                    if rp.tracker.links[i].bounded_s != bounded or quick:  # a reply quicker than the estimate allows
                        self._rebound.add(i)  # measure the link's new level with probes now
                if t.stop > t.start and t.compute_s > 0:
                    heads = tuple(e.position for e in plan.exits if t.start < e.position <= t.stop)
                    try:
                        rp.observe_stage(t.tier, t.compute_s, t.start, t.stop, heads, now)
                    except EdgeflowError:
                        pass  # a range the cost model cannot price (not at its cuts): no correction from it
                rp.observe_queue(t.tier, t.queue_s)
            if not breakdown.fallback:
                self._observe_codecs(breakdown, plan)
                if breakdown.stream_frame:
                    self._observe_stream(breakdown, plan)
                elif proxy is not None:
                    self._observe_content(breakdown, plan, proxy)
            if breakdown.fallback:
                sent_s = now - (breakdown.tiers[0].total_s if breakdown.tiers else 0.0)
                self._mark_down(breakdown.fallback_tier, breakdown.fallback, sent_s, now)
            if decide:
                self._decide(now)
        if self.settings.probe:
            self._probe_stale(now)
        self.sampler.kick()

    def _quicker_than_estimated(self, link: int, nbytes: int, network_s: float, now: float) -> bool:
        """Whether a message of ``nbytes`` on ``link`` took well under what the link's estimate says it takes, and
        the estimate's rate made up a good part of that (lock held). Such a message is too small to time the link
        (mostly round trip: its rate reading is rejected, and its lower bound on the rate may not reach the
        estimator's restart threshold), yet it shows the estimate is stale: a link back from an outage was priced
        at the bound one small message allowed (~3 Mbit/s for 2.5 KB over a 20 ms round trip) until the next stale
        probe, 2 s on, and its requests predicted 43 ms took 30. A probe, sized for the estimate, times it now."""
        est = self.replanner.tracker.links[link]
        bw, rtt = est.bandwidth_bps(now), est.rtt_s(now)
        if bw is None or rtt is None or now - self._probed_at.get(link, -1e9) < _QUICK_PROBE_S:
            return False
        transfer = 8.0 * nbytes / bw
        expected = rtt + est.overhead_s + transfer
        return network_s < _QUICK * expected and transfer > (1.0 - _QUICK) * expected

    def _observe_codecs(self, breakdown: Breakdown, plan: Plan) -> None:
        """Each hop's measured encode (at its sender) and decode (at its receiver) against the profile (lock held)."""
        timings = {t.tier: t for t in breakdown.tiers}
        resolved = plan.resolved(self.model.num_positions)
        hops = [(st.tier, nxt.tier, st.stop or 0, st.codec or "lossless") for st, nxt in zip(resolved.stages, resolved.stages[1:])]
        if resolved.sends_input:
            hops.insert(0, (self.model.names[0], resolved.stages[0].tier, 0, resolved.input_codec or "lossless"))
        codecs = self.replanner.tracker.codecs
        for sender, receiver, position, codec in hops:
            predicted = self.model.hop_codec_s(sender, receiver, position, codec) if receiver in self.model.names else None
            out, into = timings.get(sender), timings.get(receiver)
            if predicted is None or out is None or out.bytes_out <= 0:
                continue  # not sent (an exit answered first)
            codecs.observe(sender, encode=(out.encode_s, predicted[0]))
            if into is not None and into.start == position:
                codecs.observe(receiver, decode=(into.decode_s, predicted[1]))

    def _observe_content(self, breakdown: Breakdown, plan: Plan, proxy: float) -> None:
        """Each hop's measured bytes against the input's content proxy (lock held)."""
        sent = {t.tier: t.bytes_out for t in breakdown.tiers if t.bytes_out > 0}
        resolved = plan.resolved(self.model.num_positions)
        hops = [(st.tier, st.stop or 0, st.codec or "lossless") for st in resolved.stages[:-1]]
        if resolved.sends_input:
            hops.insert(0, (self.model.names[0], 0, resolved.input_codec or "lossless"))
        for sender, position, codec in hops:
            if sender in sent:  # (not sent: an exit answered first)
                self.content.observe(position, codec.split(":")[0], proxy, sent[sender])

    def content_s(self, plan: Plan, proxy: float) -> tuple[float, dict[int, float]]:
        """How much an input whose content proxy is ``proxy`` (:func:`~edgeflow.core.planner.content.content_proxy`)
        adds to ``plan``'s predicted latency through its hops' expected bytes, under the link estimates now:
        ``(expected, per exit outcome)`` (see :func:`~edgeflow.core.planner.content.hop_deltas`); zeros where the
        plan cannot be priced."""
        with self._lock:
            cond = self.replanner.tracker.conditions(self.clock())
            if cond is None:
                return 0.0, {}
            try:
                return hop_deltas(self.model, plan, cond, proxy, self.content)
            except EdgeflowError:
                return 0.0, {}

    def _observe_stream(self, breakdown: Breakdown, plan: Plan) -> None:
        """A stream frame: each hop of the plan is priced at the stream's measured bytes over what coding each frame
        on its own would take (a moving average over frames per hop), so the planner plans with what the stream
        costs (lock held). This tier's own hop is measured exactly; the hops beyond it share what they saved
        together (exact for a chain of two hops)."""
        resolved = plan.resolved(self.model.num_positions)
        hops = [(st.tier, st.stop or 0, st.codec or "lossless") for st in resolved.stages[:-1]]
        if resolved.sends_input:
            hops.insert(0, (self.model.names[0], 0, resolved.input_codec or "lossless"))
        sent = {t.tier: t.bytes_out for t in breakdown.tiers if t.bytes_out > 0}
        hops = [h for h in hops if h[0] in sent]
        if not hops:
            return
        own = breakdown.stream_own_saved_bytes
        first = [hops[0]] if own is not None and hops[0][0] == breakdown.tiers[0].tier else []
        groups = [(first, own or 0), (hops[len(first):], breakdown.stream_saved_bytes - (own or 0))]
        changed = False
        for group, saved in groups:
            moved = sum(sent[tier] for tier, _, _ in group)
            if not group or moved <= 0 or moved + saved <= 0:
                continue
            share = min(1.0, moved / (moved + saved))  # a refused residual may cost more: never above a key frame
            for _, pos, codec in group:
                new = self._shares.frame((pos, codec), share)
                self.stream_share[(pos, codec)] = new
                changed |= self.model.scale_hop_nbytes(pos, codec, new)
        if changed:
            self.replanner.planner._tput = None  # the throughput search's tables hold the bytes

    def offer_frame(self, ref: StreamRef, values: Sequence[torch.Tensor]) -> None:
        """A stream frame's inputs entering the chain at the device: the sampler may pair it with the next frame to
        estimate the hops the current plan does not use (see :mod:`edgeflow.agent.streamcost`)."""
        self.sampler.offer(ref, values)

    def _sampled(self, shares: dict[tuple[int, str], float | None]) -> None:
        """A sample's residual shares: price the hops the current plan does not use with them (frames measure the
        hops it uses); the next decision plans with them."""
        with self._lock:
            resolved = self.replanner.current.resolved(self.model.num_positions)
            used = {(st.stop or 0, st.codec or "lossless") for st in resolved.stages[:-1]}
            if resolved.sends_input:
                used.add((0, resolved.input_codec or "lossless"))
            changed = False
            for hop, share in shares.items():
                if hop in used:
                    continue
                self.stream_estimate[hop] = new = self._shares.sample(hop, share)
                changed |= self.model.scale_hop_nbytes(hop[0], hop[1], new)
            if changed:
                self.replanner.planner._tput = None
            best = min(((h, self.stream_estimate[h]) for h in shares if h in self.stream_estimate), key=lambda x: x[1],
                       default=None)  # fmt: skip
            _log.info("live planner: stream sample %d (%.2f s so far): %d hops estimated%s", self.sampler.samples,
                      self.sampler.spent_s, len(shares), f", least share {best[1]:.3f} at {best[0][1]}@{best[0][0]}"
                      if best else "")  # fmt: skip

    def predict_key_frame(self, plan: Plan) -> CostBreakdown | None:
        """``plan``'s predicted cost for a stream frame that goes as a key frame on the device's hop (the hop at its
        profiled bytes); None where the hop is priced so anyway (see :mod:`edgeflow.agent.streamcost`)."""
        hop = own_hop(plan, self.model.num_positions)
        with self._lock:
            share = self._shares.share(hop) if hop is not None else None
            cond = self.replanner.tracker.conditions(self.clock())
            if hop is None or share is None or share >= 1.0 or cond is None:
                return None
            self.model.scale_hop_nbytes(hop[0], hop[1], 1.0)
            try:
                return self.model.evaluate(plan, cond)
            except EdgeflowError:
                return None
            finally:
                self.model.scale_hop_nbytes(hop[0], hop[1], share)

    def down_tiers(self) -> frozenset[str]:
        """The tiers found down (a reply fell back at the tier before) and not answering probes since."""
        with self._lock:
            return frozenset(self._down)

    def state(self, base: LiveState) -> LiveState:
        """``base`` filled with what Describe reports: plan, prediction, link estimates, corrections, switches."""
        now = self.clock()
        with self._lock:
            rp, names = self.replanner, self.model.names
            links = []
            for i, est in enumerate(rp.tracker.links):
                bw, rtt = est.bandwidth_bps(now), est.rtt_s(now)
                links.append(LinkReading(f"{names[i]}>{names[i + 1]}", bw or 0.0, (rtt or 0.0) + est.overhead_s))
            switches = [PlanSwitch(sw.t_s - self.started_s, sw.request_index, sw.old, sw.new, sw.reason)
                        for sw in list(self._switches)[-_SWITCHES_DESCRIBED:]]  # fmt: skip
            base.plan = str(rp.current)
            base.predicted_latency_s = self._predicted.latency_s if self._predicted is not None else 0.0
            base.links, base.compute_factor = links, rp.tracker.correction.factors(now)
            base.down, base.switches = sorted({*self._down, *self._suspect}), switches
            base.requests, base.last_reason, base.uptime_s = self.requests, self.last_reason, now - self.started_s
        return base

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
        self._suspect.pop(tier, None)
        _log.warning("live planner: %s down (%s); planning without it", tier, why)
        self._set_unavailable()
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
                    # the old rate is stale by now (a stall, which leaves no sample, may have been a slower
                    # link): the estimate restarts from this probe, not from before the tier went down
                    self._measure(link, peer, restart=True)
                with self._lock:
                    now = self.clock()
                    _, why = self._down.pop(tier, (since, ""))
                    self._back_at[tier] = now
                    _log.info("live planner: %s back after %.2f s", tier, now - since)
                    # a tier that stalled (not refused) answers probes on a link that may still be slow: plans with it
                    # must win through the hysteresis again, on what the probe measured
                    self._set_unavailable(back=_STALLED not in why)
                    self._decide(now, why=f"{tier} back")
            self._wake.wait(self.settings.down_probe_s)

    def suspect(self, tier: str, why: str) -> None:
        """A call to ``tier`` is overdue (see :class:`~edgeflow.agent.source.Source`): plan without it from now on,
        before that call stalls out, until :meth:`clear_suspect` (its reply was learned from, whatever it said)."""
        with self._lock:
            names = self.model.names
            if tier not in names[1:] or tier in self._down or tier in self._suspect:
                return
            now = self.clock()
            self._suspect[tier] = (now, why)
            _log.warning("live planner: %s suspect (%s); planning without it", tier, why)
            self._set_unavailable()
            self._decide(now, why=f"{tier} suspect: {why}")

    def clear_suspect(self, tier: str) -> None:
        """The overdue call to ``tier`` has ended: plan with it again (on what its reply taught the estimates)."""
        with self._lock:
            if self._suspect.pop(tier, None) is None:
                return
            self._set_unavailable()
            if tier not in self._down:
                self._decide(self.clock(), why=f"{tier} answered")

    def _set_unavailable(self, *, back: bool = False) -> None:
        """The replanner plans without the tiers down and the tiers suspect (lock held); ``back``: the tiers no longer
        among them came back from an outage (see ``Replanner.set_unavailable``)."""
        self.replanner.set_unavailable({*self._down, *self._suspect}, back=back)

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
            self._switches.append(PlanSwitch(now, self.requests, old, new, why))
            _log.info("plan switch: %s -> %s (%s)", old, new, why)
            if self.agent.metrics is not None:
                self.agent.metrics.plan_switch()
        self.last_reason = d.reason
        cond = rp.tracker.conditions(now)
        if cond is not None:
            self._predicted = self.model.evaluate(rp.current, cond)

    def predict(self, plan: Plan) -> CostBreakdown | None:
        """Predicted cost breakdown of ``plan`` under the conditions estimated now (None if it does not fit)."""
        with self._lock:
            cond = self.replanner.tracker.conditions(self.clock())
            if cond is None:
                return None
            try:
                return self.model.evaluate(plan, cond)
            except EdgeflowError:
                return None

    def compute_s(self, start: int, stop: int) -> float:
        """Predicted compute of ``[start:stop]`` on the device, with its online correction (no exit heads)."""
        with self._lock:
            source = self.model.names[0]
            fixed, factor = self.replanner.tracker.correction.params(source, self.clock())
            return max(0.0, fixed + factor * self.model.stage_compute_s(source, start, stop))

    def expected_compute_s(self, start: int, stop: int, exits: Sequence[ExitPoint] = ()) -> float:
        """Expected compute of ``[start:stop]`` on the device for a request that reached ``start``, with its online
        correction and the heads of ``exits`` (a plan's exits; those in ``(start, stop]`` may answer early, with the
        calibrated probabilities): what a fallback adds to the device's queue."""
        enabled = sorted(e.position for e in exits if start < e.position <= stop)
        with self._lock:
            source = self.model.names[0]
            fixed, factor = self.replanner.tracker.correction.params(source, self.clock())
            try:
                answer, _, _ = self.model.exit_model.stats(tuple(exits))
            except EdgeflowError:
                enabled = []
            positions = self.model.exit_positions
            if enabled:
                probs = {p: float(answer[positions.index(p)]) for p in enabled}
                reached = max(1e-9, 1.0 - sum(float(answer[positions.index(e.position)]) for e in exits
                                              if e.position <= start and e.position in positions))  # fmt: skip
                outcomes = [(p, probs[p] / reached) for p in enabled]
                outcomes.append((stop, max(0.0, 1.0 - sum(w for _, w in outcomes))))
            else:
                outcomes = [(stop, 1.0)]
            total = 0.0
            for x, w in outcomes:
                heads = [p for p in enabled if p <= x]
                total += w * max(0.0, fixed + factor * self.model.stage_compute_s(source, start, x, heads))
            return total

    def predict_s(self, plan: Plan) -> float | None:
        """Predicted expected latency of ``plan`` under the conditions estimated now (None if it does not fit)."""
        b = self.predict(plan)
        return b.latency_s if b is not None else None

    def estimate_bps(self, link: int = 0) -> float | None:
        """The bandwidth estimate of ``link`` (0: device to the next tier)."""
        with self._lock:
            return self.replanner.tracker.links[link].bandwidth_bps(self.clock())

    # ------------------------------------------------------------------------------------ probes
    def _probe_stale(self, now: float) -> None:
        """Probe, in the background, the links with no usable sample for a while (``stale_after_s``) and the links
        the current plan does not use every ``planner.idle_probe_s``: nothing else tells the planner such a link
        came back (a device-only plan sends nothing), and probing it delays no request."""
        with self._lock:
            names = self.model.names
            down = {names.index(t) - 1 for t in self._down}  # the watcher probes those
            used = max(names.index(t) for t in self.replanner.current.tiers)  # links 0..used-1 carry requests
            idle = [i for i in range(used, len(self.peers)) if now - self._probed_at.get(i, -1e9) >= self.settings.idle_probe_s]
            stale = sorted({*self.replanner.stale_links(now), *idle, *self._rebound} - down)
            stale = [i for i in stale if i < len(self.peers)]
            if not stale or self._closed or (self._probe is not None and self._probe.is_alive()):
                return
            self._rebound.clear()
            for i in stale:
                self._probed_at[i] = now
            self._probe = threading.Thread(target=self._run_probes, args=(stale,), daemon=True,
                                           name="edgeflow-probe")  # fmt: skip
            self._probe.start()

    def _run_probes(self, links: list[int]) -> None:
        """One probe per link; a probe that only bounded the rate from below (too quick to time: a link back from
        near zero, see ``LinkEstimator``) is followed at once by one sized for that bound, a few times at most: each
        raises the bound ~10x until a probe is timeable, so a link back at 30 Mbit/s is measured in ~3 probes."""
        for link in links:
            if self._closed:
                return
            self._measure(link, self.peers[link])

    def _measure(self, link: int, peer: Any, *, restart: bool = False) -> None:
        """Probe ``link`` (see ``_run_probes``); ``restart``: its estimate restarts from the first probe."""
        est = self.replanner.tracker.links[link]
        for i in range(_BOUND_FOLLOW_UPS + 1):
            if self._closed:
                return
            with self._lock:
                nbytes, bounded = est.probe_nbytes(self.clock()), est.bounded_s
            probe_link(self.replanner.tracker, link, peer, nbytes, self.clock, self._lock, rtt=i == 0,
                       restart=restart and i == 0)  # fmt: skip
            if est.bounded_s == bounded:
                break

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self.sampler.close()
        if self._probe is not None:
            self._probe.join(timeout=PROBE_TIMEOUT_S + 1)
        if self._watch is not None:
            self._watch.join(timeout=PROBE_TIMEOUT_S * (RTT_PROBES + 1) + 1)
