"""The agent: runs its tier's range of the model and forwards the rest upstream.

A request carries the live values at position ``start``. The agent

1. checks the fingerprint and the request's plan, then admits the inbound tensors in one step
   (:mod:`edgeflow.agent.admission`: checked against the position before anything is decoded, budgeted, decoded
   within their declared size),
2. waits for its turn on the single compute unit (alone, or batched with compatible requests: ``batching``) and
   runs the range ``[start:stop]``, evaluating the plan's exits on the way,
3. answers if an exit was confident or the range reached the model output, else encodes the values at
   ``stop`` with the plan's hop codec and forwards them upstream; the reply comes back down unchanged,
   with this tier's timing prepended to the breakdown.

``stop`` is this tier's stage end in the request's plan: the plan text the device stamped on the request
(``InferCall.plan``), else this agent's configured plan. A tier absent from the plan relays payloads untouched.
Because every tier follows the plan the request carries, the device can switch plans between two requests and
every request in flight still finishes under the plan it started with. A request with an explicit ``stop`` runs
just ``[start:stop]`` here and returns the values (range calls, e.g. for profiling by a planner).

The device is where requests enter the chain: its inputs — from its in-process caller (:meth:`Agent.submit_local`)
or over gRPC from other processes (an ``Infer`` call at position 0 without ``stop``) — pass its
:class:`~edgeflow.agent.source.Source`, which stamps each with its plan (the live planner's, with ``plan: auto``),
and learns from its reply. A call that names a plan goes by it (the live planner learns but does not re-plan).

Failures (:mod:`edgeflow.agent.failover`): when the call upstream fails because the peer is down, stalled or
overloaded, the tier finishes the model itself (every agent loads the whole artifact) and says so in
``Breakdown.fallback``; the upstream call gets the deadline minus a reserve for that. A request id seen twice is
computed once (:mod:`edgeflow.agent.replay`), so the channel may retry calls. :attr:`Agent.counters` (sent in
``Describe``) counts requests, fallbacks, duplicates and requests shed, for operators.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from edgeflow.agent.admission import Admission, CodecCache
from edgeflow.agent.chaos import flip_classes, lies_about
from edgeflow.agent.compute import BatchingComputeUnit, BatchJob, ComputeUnit, JobTiming, MemoryBudget
from edgeflow.agent.failover import failure_kind, fallback_reason, reserve_s, upstream_deadline
from edgeflow.agent.gate import RequestGate
from edgeflow.agent.replay import ReplyCache, request_key
from edgeflow.agent.runtime import ModelRuntime, RunOutcome
from edgeflow.agent.memory import Remembered, ResultMemory
from edgeflow.agent.source import Source, Ticket
from edgeflow.agent.nearmemory import calibrate_demo
from edgeflow.agent.streamcost import own_hop
from edgeflow.agent.streams import Coded, StreamReceiver, StreamRef, StreamSender, is_resync
from edgeflow.agent.upstream import Upstream
from edgeflow.agent.validate import Validator
from edgeflow.config import NodeConfig
from edgeflow.core.codecs import CODEC_NAMES, Codec, read_header
from edgeflow.core.plan import TIERS, ExitPoint, Plan
from edgeflow.errors import BadReply, ConfigError, DeadlineExceeded, NoUpstream, PlanError, RemoteError, TransportError
from edgeflow.transport import (
    Breakdown,
    Counters,
    Description,
    FingerprintMismatch,
    InferCall,
    InferReply,
    InvalidRequest,
    RangeProfile,
    TierTiming,
    WireLimits,
    WireTensor,
    datatype_of,
)
from edgeflow.transport.messages import encode_request
from edgeflow.transport.metrics import Metrics

__all__ = ["Agent", "LocalAnswer", "wire_limits"]

_PLAN_CACHE = 64  # parsed request plans kept (a live planner uses a handful)
_log = logging.getLogger(__name__)


def wire_limits(config: NodeConfig) -> WireLimits:
    """The message limits a node file asks for."""
    return WireLimits(max_message_bytes=int(config.limits.max_message_mb * 2**20), max_tensors=config.limits.max_tensors)


@dataclass
class LocalAnswer:
    """A result as the device's caller gets it: decoded values, the breakdown, the plan it went by and the live
    planner's prediction for it (None without one)."""

    request_id: str
    values: list[torch.Tensor]
    position: int
    breakdown: Breakdown
    plan: str = ""
    predicted_s: float | None = None
    predicted_outcome_s: float | None = None  # the prediction for the path it took (its exit, or the output)


@dataclass
class _Answer:
    """Internal: either decoded values computed here, or payloads relayed from upstream."""

    position: int
    breakdown: Breakdown
    values: list[torch.Tensor] | None = None
    wire: list[WireTensor] | None = None
    heads: dict[int, torch.Tensor] | None = None  # the device's exit heads evaluated on the way (validate)
    local: tuple[int, list[torch.Tensor]] | None = None  # the device's values it sent up, and their position


class Agent:
    """One tier's agent. Serve it with :class:`~edgeflow.transport.AgentServer`, or call it in process.

    Args:
        config: the node configuration.
        runtime: the loaded model.
        upstream: link to the next tier (required when the plan continues past this tier).
        profile_repeats: timed runs per segment for the compute profile in :meth:`describe` (0: none).
    """

    def __init__(
        self,
        config: NodeConfig,
        runtime: ModelRuntime,
        *,
        upstream: Upstream | None = None,
        profile_repeats: int = 3,
    ):
        self.config = config
        self.role = config.role
        self.runtime = runtime
        self.fingerprint = runtime.fingerprint
        n = runtime.num_positions
        plan = config.parsed_plan
        plan.check(n, runtime.cuts, codecs=CODEC_NAMES, exit_positions=set(runtime.exits))
        self.plan: Plan = plan.resolved(n)
        self.upstream = upstream
        if self.plan.upstream_of(self.role) is not None or self.plan.stage(self.role) is None:
            if upstream is None:
                raise ConfigError(f"upstream: plan {self.plan} continues past {self.role}, but no upstream is given")
        self.limits = wire_limits(config)
        self.compute = _compute_unit(config)
        cap = config.compute.memory_cap_mb
        self.memory = MemoryBudget(int(cap * 2**20) if cap else None)
        self.codecs = CodecCache()
        # stream mode (edgeflow.agent.streams): frames decoded against, and coded for the hop up against, a reference
        self.stream_receiver = StreamReceiver(config.streams, self.role)
        self.stream_sender = StreamSender(config.streams) if upstream is not None else None
        self.admission = Admission(runtime, self.memory, self.codecs, self.stream_receiver)
        self._plans: dict[str, Plan] = {str(plan): self.plan, "": self.plan}
        self._plans_lock = threading.Lock()
        self.gate = RequestGate(self.role)  # in flight, draining, counters
        self.profile = self._measure_profile(profile_repeats) if profile_repeats else []
        self.replies = ReplyCache()  # idempotent request ids
        self._fallback_lock = threading.Lock()  # _reserve_profile
        self._reserve_profile: list[RangeProfile] | None = None  # without a handshake profile: measured when needed
        self.bad_replies = 0  # upstream replies that failed admission (see Admission.check_reply)
        # the device is where requests enter the chain (see the module doc)
        self.source: Source | None = None
        self.metrics: Metrics | None = None  # set by wiring.build_agent; observes local inputs (submit_local)
        if self.role == TIERS[0]:
            self.source = Source(config, config.parsed_plan, idle=lambda: self.compute.idle,
                                 queued=lambda: self.compute.queued)
        # identical inputs answered again without compute or transfer (a device, ``memory.enabled``)
        memory = config.memory  # near-duplicates too with ``memory.near`` (agent/nearmemory.py)
        near = calibrate_demo(runtime, memory.near_agreement) if memory.enabled and memory.near else None
        self.result_memory = ResultMemory(config.memory, self.fingerprint, near) if config.memory.enabled else None
        # upstream answers checked against the device's own exit head (a device, ``validate``)
        self.validator = (Validator(config.validate_, runtime)
                          if self.role == TIERS[0] and config.validate_.mode != "off" else None)  # fmt: skip

    # ------------------------------------------------------------------------------------ handshake
    def describe(self, caller_fingerprint: str = "", caller_role: str = "") -> Description:
        """Answer the handshake (see ``DescribeResponse`` in agent.proto).

        Raises:
            FingerprintMismatch: ``caller_fingerprint`` is set and differs from this agent's.
        """
        if caller_fingerprint and caller_fingerprint != self.fingerprint:
            who = caller_role or "caller"
            raise FingerprintMismatch(
                f"model fingerprint mismatch: {who} has {caller_fingerprint}, this {self.role} agent serves "
                f"{self.fingerprint}; deploy the same artifact on every tier"
            )
        c = self.config
        inputs = [(t.name, datatype_of(t.dtype), t.shape) for t in self.runtime.cut_info(0).tensors]
        from edgeflow import __version__

        live = self.source.state() if self.source is not None else None
        return Description(
            role=self.role,
            fingerprint=self.fingerprint,
            num_positions=self.runtime.num_positions,
            cuts=self.runtime.cuts,
            codecs=list(CODEC_NAMES),
            plan=live.plan if live is not None and live.ready and live.plan else str(self.plan),
            profile=self.profile,
            slowdown_factor=c.compute.slowdown_factor,
            power_w=(c.power.idle_w, c.power.active_w, c.power.transmit_w),
            torch_device=str(self.runtime.device),
            threads=torch.get_num_threads(),
            max_message_bytes=self.limits.max_message_bytes,
            max_batch=self.runtime.max_batch,
            upstream=self.upstream.address if self.upstream else "",
            version=__version__,
            inputs=inputs,
            counters=self.counters,
            live=live,
        )

    # ------------------------------------------------------------------------------ speaking for the upstream
    def describe_upstream(self, deadline: float) -> Description:
        """The upstream's handshake answer, asked for now, for a caller with no route to it (``with_upstream``).

        Raises:
            NoUpstream: this agent has none.
            TransportError: the upstream did not answer in time (part of the caller's deadline is kept back so
                the caller hears why), or refused.
        """
        if self.upstream is None:
            raise NoUpstream(f"{self.role} has no upstream to describe")
        return self.upstream.peer.describe(self.fingerprint, self.role, timeout_s=_relay_timeout_s(deadline))

    def probe_upstream(self, send_nbytes: int, deadline: float) -> float:
        """Seconds one ``Probe`` of the upstream carrying ``send_nbytes`` up takes (``ProbeRequest.forward``): the
        caller measures this agent's upstream link, not its own path to the upstream's address.

        Raises:
            NoUpstream: this agent has none.
            TransportError: the upstream did not answer in time, or refused.
        """
        if self.upstream is None:
            raise NoUpstream(f"{self.role} has no upstream to probe")
        return self.upstream.peer.probe(send_nbytes=send_nbytes, timeout_s=_relay_timeout_s(deadline))

    @property
    def counters(self) -> Counters:
        """What this agent has been through since it started (see :class:`~edgeflow.transport.Counters`)."""
        return self.gate.counters(self.duplicates_served)

    @property
    def fallbacks(self) -> int:
        """Requests this tier finished itself because its upstream failed."""
        return self.gate.fallbacks

    @property
    def last_fallback(self) -> str:
        """The latest fallback's ``Breakdown.fallback`` ("" before any)."""
        return self.gate.last_fallback

    def _measure_profile(self, repeats: int) -> list[RangeProfile]:
        """Median compute seconds of each segment between consecutive boundaries, slowdown included."""
        from edgeflow.core.profile import profile_compute

        node_s, _, _ = profile_compute(self.runtime.partition, self.runtime.example_input, repeats=repeats, warmup=1)
        bounds = [0, *self.runtime.cuts, self.runtime.num_positions]
        f = self.config.compute.slowdown_factor
        return [RangeProfile(a, b, f * sum(node_s[a:b])) for a, b in zip(bounds, bounds[1:])]

    # ------------------------------------------------------------------------------------ entry points
    def infer(self, call: InferCall, deadline: float) -> InferReply:
        """Serve a request from downstream, or from another process at the device (the transport calls this;
        see the module doc).

        Raises:
            FingerprintMismatch, InvalidRequest, RequestTooLarge, CodecError, Overloaded, ShuttingDown,
            DeadlineExceeded, and upstream failures as TransportError (those the fallback does not cover, see
            :mod:`edgeflow.agent.failover`).

        A request whose id this agent has seen recently is not computed again: a copy that arrives while the
        first runs waits for its reply, a later one gets the stored reply (see :mod:`edgeflow.agent.replay`).
        """
        with self.gate.request():
            return self.replies.run(request_key(call), lambda: self._serve(call, deadline), deadline)

    @property
    def duplicates_served(self) -> int:
        """Requests answered by an earlier copy's work (same id, see :meth:`infer`)."""
        return self.replies.duplicates

    def _serve(self, call: InferCall, deadline: float) -> InferReply:
        t0 = time.monotonic()
        if call.fingerprint != self.fingerprint:
            got = call.fingerprint or "none"
            raise FingerprintMismatch(
                f"model fingerprint mismatch: request {call.request_id!r} carries {got}, this {self.role} agent "
                f"serves {self.fingerprint}"
            )
        plan = self.plan_of(call.plan)  # refuse a bad one before anything else
        out_codec = self._codec(call.output_codec or "lossless")
        ref = StreamRef(call.caller or "local", call.stream, call.frame) if call.stream else None
        if self.source is not None and call.start == 0 and not call.stop:  # an input entering the chain here
            forced = Plan.parse(call.plan) if call.plan else None
            with self.admission.admit(0, call.tensors, ref) as got:
                ans = self._enter(call.request_id, got.values, deadline, forced, block=False, decode_s=got.decode_s,
                                  bytes_in=call.wire_nbytes, stream=ref)  # fmt: skip
            answer = _Answer(ans.position, ans.breakdown, values=ans.values)
            timing = ans.breakdown.tiers[0]
            said = (ans.plan, ans.predicted_s or 0.0, ans.predicted_outcome_s or 0.0)
        else:
            said = ("", 0.0, 0.0)
            start, stop, forward = self._local_range(call.start, call.stop, plan)
            timing = TierTiming(self.role, start, stop, bytes_in=call.wire_nbytes)
            if forward and start == stop and ref is None:  # not our range: relay the payloads untouched
                answer = self._forward(call.request_id, start, call.tensors, None, timing, deadline, plan, call.plan)
            elif forward and start == stop:  # a stream frame relayed: a hop of its own, decoded and coded again
                assert ref is not None
                with self.admission.admit(start, call.tensors, ref) as got:
                    timing.decode_s = got.decode_s
                    t = time.monotonic()
                    coded = self._stream_code(ref, start, call.plan, got.values, self._codec(_codec_into(plan, start)))
                    timing.encode_s = time.monotonic() - t
                    answer = self._forward(call.request_id, start, coded.wire, got.values, timing, deadline, plan,
                                           call.plan, stream=coded)  # fmt: skip
            else:
                with self.admission.admit(start, call.tensors, ref) as got:
                    timing.decode_s = got.decode_s
                    answer = self._run(call.request_id, start, stop, forward, got.values, timing, deadline, plan,
                                       call.plan, stream=ref)  # fmt: skip
        tensors = answer.wire
        chaos = self.config.chaos
        if chaos.wrong_class > 0 and answer.position == self.runtime.num_positions and self.source is None \
                and lies_about(call.request_id, chaos.wrong_class, chaos.seed):  # fmt: skip
            answer = self._lie(answer, call.request_id)
            tensors = None
        if tensors is None:
            t = time.monotonic()
            names = self._names(answer.position, len(answer.values or []))
            tensors = [self.wire_tensor(name, v, out_codec) for name, v in zip(names, answer.values or [])]
            timing.encode_s += time.monotonic() - t
        self._finish(timing, t0)
        return InferReply(call.request_id, self.fingerprint, answer.position, tensors, answer.breakdown, plan=said[0],
                          predicted_latency_s=said[1], predicted_outcome_s=said[2])  # fmt: skip

    def _lie(self, answer: _Answer, request_id: str) -> _Answer:
        """Chaos (node section ``chaos``): the answer's top class swapped for a wrong one (:mod:`edgeflow.agent.chaos`)."""
        values = answer.values
        if values is None and answer.wire is not None:
            values = self.admission.decode_reply(answer.wire)
        if values is None or len(values) != 1 or values[0].dim() != 2 or values[0].shape[1] < 2:
            return answer
        c = self.config.chaos
        told = flip_classes(values[0], request_id, seed=c.seed, choice=c.choice)
        return _Answer(answer.position, answer.breakdown, values=[told])

    def submit_local(
        self,
        values: Sequence[torch.Tensor],
        *,
        request_id: str,
        deadline: float,
        block: bool = True,
        plan: Plan | str | None = None,
        learn: bool = True,
        stream: str | None = None,
        frame: int | None = None,
    ) -> LocalAnswer:
        """Serve the device's own input (the model inputs, position 0) without a network hop in.

        The request is stamped with its plan (see :class:`~edgeflow.agent.source.Source`), so every tier runs it by
        that plan even if the device switches plans while it is in flight.

        Args:
            values: model inputs, e.g. ``[images]`` with images (B, 3, H, W).
            request_id: id carried up the chain.
            deadline: ``time.monotonic()`` value.
            block: wait for room in the compute queue (backpressure) instead of raising Overloaded.
            plan: go by this plan (its ``input_codec`` codes the raw input when the device runs nothing) instead
                of the current one; the live planner predicts it and learns from its reply but does not re-plan.
            learn: feed the reply to the live planner (False: a warm-up the planner should not see; it neither
                reads nor fills the result memory).
            stream, frame: this input is frame ``frame`` of stream ``stream``: its hops are delta coded (see
                :mod:`edgeflow.agent.streams`).

        Raises:
            InvalidRequest: the input does not fit the model, or the plan does not fit the model or this chain, or
                a stream without a frame number (or the reverse).
            StreamRejected: a frame number this stream had already.
        """
        with self.gate.request():
            values = list(values)
            self.runtime.check_values(0, values)
            ref = None
            if stream is not None or frame is not None:
                if not stream or frame is None or not 0 <= frame < 2**62:
                    raise InvalidRequest(f"a stream frame needs a stream id and a frame number >= 0, got stream "
                                         f"{stream!r}, frame {frame!r}")  # fmt: skip
                ref = StreamRef("local", stream, frame)
                self.stream_receiver.note_input(ref)
            forced = None
            if plan is not None:
                self.plan_of(str(plan))  # checked against the model and chain; stamped as the caller wrote it
                forced = plan if isinstance(plan, Plan) else Plan.parse(plan)
            ans = self._enter(request_id, values, deadline, forced, block=block, learn=learn, stream=ref)
        if self.metrics is not None and learn:
            self.metrics.observe_reply("local", InferReply(ans.request_id, "", ans.position, [], ans.breakdown))
        return ans

    def _enter(self, request_id: str, values: list[torch.Tensor], deadline: float, forced: Plan | None, *,
               block: bool, learn: bool = True, decode_s: float = 0.0, bytes_in: int = 0,
               stream: StreamRef | None = None) -> LocalAnswer:  # fmt: skip
        """One input entering the chain here, at position 0, by its ticket's plan (see the module doc)."""
        t0 = time.monotonic()
        source = self.source
        memory, key, now_plan = (self.result_memory if learn else None), b"", ""  # a warm-up neither hits nor stays
        embedding = None
        if memory is not None:
            now_plan = str(forced or (source.current_plan() if source is not None else self.plan))
            key, embedding = memory.key(values, now_plan), memory.embed(values)
            found = memory.find(key, embedding, now_plan)
            if found is not None:  # no ticket: nothing runs, nothing to predict or learn from
                return self._remembered(request_id, found[0], now_plan, t0, decode_s, bytes_in, how=found[1])
        if stream is not None and source is not None and source.planner is not None and learn:
            source.planner.offer_frame(stream, values)  # the planner samples a stream's other hops (streamcost.py)
        if source is not None:  # a stream frame's hops carry residuals: its content does not price them
            ticket = source.ticket(forced, t0, values if stream is None else None)
        else:
            ticket = Ticket(forced or self.plan, forced=forced is not None)
        if stream is not None and source is not None and self.stream_sender is not None:
            hop = own_hop(ticket.plan, self.runtime.num_positions)
            if hop is not None and self.stream_sender.keys_next(stream, hop[0], self._codec(hop[1]), str(ticket.plan)):
                ticket = source.key_frame(ticket)
        try:
            answer, timing = self._enter_as(request_id, values, deadline, ticket, block=block, decode_s=decode_s,
                                            bytes_in=bytes_in, stream=stream)  # fmt: skip
        except BaseException:
            if source is not None:
                source.release(ticket)
            raise
        if self.validator is not None and answer.breakdown.answered_by != self.role:
            self._validate(answer, timing, self.plan_of(str(ticket.plan)), deadline)
        out = answer.values
        assert out is not None, "every path decodes: call_upstream decodes the reply it admits"
        self._finish(timing, t0)
        if memory is not None:
            b = answer.breakdown
            b.memory = "miss"
            if not b.fallback and b.validation != "flagged":  # only what went by its plan (a fallback's answer is
                # another path's), and nothing the validator doubts
                if str(ticket.plan) != now_plan:  # the plan switched between the look-up and the ticket
                    key = memory.key(values, str(ticket.plan))
                memory.put(key, out, position=answer.position, answered_by=b.answered_by,
                           exit_position=b.exit_position, exit_confidence=b.exit_confidence,
                           saved_bytes=sum(t.bytes_out + t.bytes_back for t in b.tiers), plan=str(ticket.plan),
                           embedding=embedding)  # fmt: skip
        if source is not None:
            if learn:
                source.learn(ticket, answer.breakdown)
            else:
                source.answered(ticket, answer.breakdown)
                source.release(ticket)
        return LocalAnswer(request_id, out, answer.position, answer.breakdown, str(ticket.plan), ticket.predicted_s,
                           ticket.predicted_outcome_s(answer.breakdown.exit_position))  # fmt: skip

    def _validate(self, answer: _Answer, timing: TierTiming, plan: Plan, deadline: float) -> None:
        """Check an upstream's answer with the device's own head (see :mod:`edgeflow.agent.validate`); under
        ``recompute-locally`` a flagged one is replaced by the device finishing the model itself."""
        assert self.validator is not None and answer.values is not None
        b = answer.breakdown
        suspects = len(self.validator.stats().suspect)
        verdict = self.validator.check(plan, answer.heads or {}, answer.values, b.answered_by, b.exit_position,
                                       b.exit_confidence)  # fmt: skip
        b.validation, b.validation_reason, b.upstream_classes = verdict.status, verdict.reason, verdict.classes
        if self.result_memory is not None and len(self.validator.stats().suspect) > suspects:
            for tier in TIERS[1:]:  # answers that came through a suspect upstream are doubted too
                self.result_memory.forget(tier)
        if verdict.status != "flagged":
            return
        _log.info("validate: flagged: %s", verdict.reason)  # a suspicion is the warning (agent/validate.py)
        if not self.validator.recompute or answer.local is None:
            return
        position, values = answer.local
        n = self.runtime.num_positions
        if self.source is not None:
            self.source.local_work(position, n)
        outcome, job = self._run_here(position, values, (), deadline)  # no exits: the model's own answer
        timing.queue_s += job.queue_s
        timing.compute_s += job.compute_s
        timing.stop = n
        answer.values, answer.position = outcome.values, outcome.position
        b.answered_by, b.exit_position, b.exit_confidence, b.validation = self.role, -1, 0.0, "recomputed"
        self.validator.recomputed()

    def _remembered(self, request_id: str, hit: Remembered, plan: str, t0: float, decode_s: float,
                    bytes_in: int, how: str = "hit") -> LocalAnswer:  # fmt: skip
        """An input answered from the result memory: the tier that computed the answer first is ``answered_by``."""
        timing = TierTiming(self.role, 0, 0, decode_s=decode_s, bytes_in=bytes_in)
        self._finish(timing, t0)
        b = Breakdown([timing], hit.answered_by, hit.exit_position, hit.exit_confidence, memory=how,
                      memory_saved_bytes=hit.saved_bytes)  # fmt: skip
        return LocalAnswer(request_id, [v.clone() for v in hit.values], hit.position, b, plan)

    def _enter_as(self, request_id: str, values: list[torch.Tensor], deadline: float, ticket: Ticket, *, block: bool,
                  decode_s: float, bytes_in: int, stream: StreamRef | None = None) -> tuple[_Answer, TierTiming]:  # fmt: skip
        plan = self.plan_of(str(ticket.plan))
        start, stop, forward = self._local_range(0, 0, plan)
        timing = TierTiming(self.role, start, stop, decode_s=decode_s, bytes_in=bytes_in)
        if forward and start == stop:  # the plan starts upstream: send the raw input with the input codec
            t = time.monotonic()
            info = self.runtime.cut_info(0).tensors
            codec = self._codec(plan.input_codec or "lossless")
            coded = None
            if stream is not None and self.stream_sender is not None:
                coded = self._stream_code(stream, 0, str(ticket.plan), values, codec)
                wire = coded.wire
            else:
                wire = [self.wire_tensor(i.name, v, codec, to_send=True) for i, v in zip(info, values)]
            timing.encode_s = time.monotonic() - t
            answer = self._forward(request_id, 0, wire, values, timing, deadline, plan, str(ticket.plan), ticket=ticket,
                                   stream=coded)  # fmt: skip
        else:
            answer = self._run(request_id, start, stop, forward, values, timing, deadline, plan, str(ticket.plan),
                               block=block, ticket=ticket, stream=stream)  # fmt: skip
        return answer, timing

    # ------------------------------------------------------------------------------------ plans
    def plan_of(self, text: str) -> Plan:
        """The plan a request names (``""``: this agent's), checked against the model and this chain.

        Raises:
            InvalidRequest: malformed, does not fit the model (cuts, codecs, exit heads), or continues past this
                tier when it has no upstream.
        """
        plan = self._plans.get(text)
        if plan is not None:
            return plan
        n = self.runtime.num_positions
        try:
            plan = Plan.parse(text)
            plan.check(n, self.runtime.cuts, codecs=CODEC_NAMES, exit_positions=set(self.runtime.exits))
        except PlanError as e:
            raise InvalidRequest(f"request plan: {e}") from None
        plan = plan.resolved(n)
        if self.upstream is None and (plan.upstream_of(self.role) is not None or plan.stage(self.role) is None):
            raise InvalidRequest(f"request plan {plan} continues past {self.role}, which has no upstream")
        with self._plans_lock:
            if len(self._plans) >= _PLAN_CACHE:
                self._plans = {k: v for k, v in list(self._plans.items())[: _PLAN_CACHE // 2]}  # keep the oldest
            self._plans[text] = plan
        return plan

    # ------------------------------------------------------------------------------------ steps
    def _local_range(self, start: int, requested_stop: int, plan: Plan) -> tuple[int, int, bool]:
        """``(start, stop, forward)`` for a request; ``forward``: the values at ``stop`` go upstream."""
        n = self.runtime.num_positions
        if requested_stop:
            self.runtime.check_range(start, requested_stop)
            if start == requested_stop:
                raise InvalidRequest(f"range [{start}:{requested_stop}] is empty")
            return start, requested_stop, False
        self.runtime.check_range(start, start)
        if start == n:
            raise InvalidRequest(f"start position {n} is the model output: nothing left to run")
        stage = plan.stage(self.role)
        stop = start if stage is None else max(start, stage.stop or n)
        return start, stop, stop < n

    def _run(
        self,
        request_id: str,
        start: int,
        stop: int,
        forward: bool,
        values: list[torch.Tensor],
        timing: TierTiming,
        deadline: float,
        plan: Plan,
        plan_text: str,
        *,
        block: bool = False,
        ticket: Ticket | None = None,
        stream: StreamRef | None = None,
    ) -> _Answer:
        exits = plan.exits_in(start, stop) if forward or stop == self.runtime.num_positions else ()
        watch = self.validator.watch(plan, start, stop) if self.validator is not None and ticket is not None else None
        if watch is not None and forward:  # the device's head runs even where the plan does not exit (validate)
            exits = (*exits, watch)
        key = self.runtime.batch_key(start, stop, values, exits)
        size = int(values[0].shape[0]) if values and values[0].dim() else 1
        job = BatchJob(values, lambda batch: self.runtime.run_batch(start, stop, batch, exits), key, size)
        outcome, took = self.compute.run_job(job, deadline, block=block)
        timing.queue_s, timing.compute_s, timing.batch_size = took.queue_s, took.compute_s, took.batch_size
        if outcome.exit_position >= 0:
            timing.stop = outcome.exit_position
            b = Breakdown([timing], self.role, outcome.exit_position, outcome.exit_confidence)
            return _Answer(outcome.position, b, values=outcome.values)
        if not forward:
            return _Answer(outcome.position, Breakdown([timing], self.role), values=outcome.values)
        t = time.monotonic()
        names = [i.name for i in self.runtime.cut_info(stop).tensors]
        stage = plan.stage(self.role)
        hop = self._codec(stage.codec if stage is not None and stage.codec else "lossless")
        coded = None
        if stream is not None and self.stream_sender is not None:
            coded = self._stream_code(stream, stop, plan_text, outcome.values, hop)
            wire = coded.wire
        else:
            wire = [self.wire_tensor(name, v, hop, to_send=True) for name, v in zip(names, outcome.values)]
        timing.encode_s = time.monotonic() - t
        answer = self._forward(request_id, stop, wire, outcome.values, timing, deadline, plan, plan_text, ticket=ticket,
                               stream=coded)  # fmt: skip
        if self.validator is not None and ticket is not None:
            answer.heads, answer.local = outcome.heads, (stop, outcome.values)
        return answer

    def _stream_code(self, ref: StreamRef, position: int, plan_text: str, values: Sequence[torch.Tensor],
                     codec: Codec) -> Coded:  # fmt: skip
        """A stream frame's values at ``position`` coded for the hop up (a residual, or a key frame)."""
        assert self.stream_sender is not None
        names = [i.name for i in self.runtime.cut_info(position).tensors]
        return self.stream_sender.encode(ref, position, plan_text, names, values, codec)

    def _forward(
        self,
        request_id: str,
        position: int,
        wire: list[WireTensor],
        values: list[torch.Tensor] | None,
        timing: TierTiming,
        deadline: float,
        plan: Plan,
        plan_text: str,
        *,
        ticket: Ticket | None = None,
        stream: Coded | None = None,
    ) -> _Answer:
        """Send the values at ``position`` upstream; should that fail for a reason nobody's bug, finish here.

        ``values`` are the decoded ``wire`` when at hand (``None``: decoded only for a fallback). A source request's
        ``ticket`` gives up the upstream call at its latency target or stall budget (see ``FallbackConfig``).
        """
        assert self.upstream is not None, "checked in plan_of and __init__"
        f = self.config.fallback
        up_deadline, why = deadline, ""
        if f.enabled:
            profile = self._local_profile()  # (measured on first use: its time must not eat the call's budget)
            now = time.monotonic()
            reserve = reserve_s(profile, position, safety_factor=f.safety_factor, margin_s=f.local_margin_s)
            up_deadline = upstream_deadline(deadline, reserve, now)
            if ticket is not None and ticket.target is not None:
                give_up = ticket.target - reserve
                if now < give_up < up_deadline:
                    up_deadline, why = give_up, " for the latency target"
            if ticket is not None and ticket.stall_s is not None and now + ticket.stall_s < up_deadline:
                up_deadline, why = now + ticket.stall_s, f" (stalled: past {f.stall_factor:g}x the predicted latency)"
        t = time.monotonic()
        nxt = plan.upstream_of(self.role) if plan.stage(self.role) is not None else plan.stages[0]
        try:
            if self.source is not None and nxt is not None:
                with self.source.upstream_call(ticket, nxt.tier):
                    return self.call_upstream(request_id, position, wire, timing, up_deadline, plan_text, stream=stream)
            return self.call_upstream(request_id, position, wire, timing, up_deadline, plan_text, stream=stream)
        except TransportError as e:
            kind = failure_kind(e)
            if kind is None or not f.enabled or time.monotonic() >= deadline:  # a bug, or an answer nobody awaits
                raise
            if why and isinstance(e, DeadlineExceeded):
                kind += why
            timing.network_s, timing.bytes_out, timing.bytes_back = time.monotonic() - t, 0, 0  # nothing got through
            return self._finish_here(position, wire, values, timing, deadline, plan, kind, e)

    def call_upstream(
        self, request_id: str, position: int, wire: list[WireTensor], timing: TierTiming, deadline: float, plan_text: str,
        *, stream: Coded | None = None,
    ) -> _Answer:
        """One call to the upstream with the values at ``position`` (no fallback); fills ``timing``'s network time
        and bytes. Also how the live planner measures a real message's overhead at start-up.

        A stream frame (``stream``) the upstream refuses with a resync status is sent once more, as a key frame;
        any failure makes the stream's next frame a key frame.

        Raises:
            TransportError: the call failed.
        """
        assert self.upstream is not None
        batch = self.runtime.check_wire_tensors(position, wire)  # (a relay's payloads were not admitted yet)

        def request(w: list[WireTensor]) -> bytes:
            sid, frame = (stream.upstream_id, stream.ref.frame) if stream is not None else ("", -1)
            return encode_request(InferCall(request_id, self.fingerprint, position, w, plan=plan_text, stream=sid,
                                            frame=frame))  # fmt: skip

        data = request(wire)
        timing.bytes_out = len(data)
        self.upstream.handshake(deadline)  # once; kept out of the network time
        t = time.monotonic()
        saved = stream.saved_bytes if stream is not None else 0
        try:
            try:
                reply = self.upstream.infer_bytes(data, deadline)
            except RemoteError as e:
                if stream is None or not is_resync(e):
                    raise
                _log.info("upstream asked for a key frame: %s", e.details[:200])
                stream, saved = stream.as_key(), -len(data)  # the refused message was sent for nothing
                data = request(stream.wire)
                timing.bytes_out += len(data)  # both messages crossed the link
                reply = self.upstream.infer_bytes(data, deadline)
            call_s = time.monotonic() - t
            self.admission.check_reply(reply, request_id=request_id, fingerprint=self.fingerprint, role=self.role,
                                       sent=position, batch=batch, plan=self.plan_of(plan_text))  # fmt: skip
            # decoded here, at every tier, bounded by the expected output: a payload corrupt past its header (a
            # zstd body that declares a gigabyte) is fallen back from here, not relayed (a reply is the model's
            # output or an exit's logits: small next to the activations this tier sent)
            t_decode = time.monotonic()
            values = self.admission.decode_reply(reply.tensors)
            timing.decode_s += time.monotonic() - t_decode
        except BadReply as e:
            self._bad_reply(e)
            if stream is not None and self.stream_sender is not None:
                self.stream_sender.forget(stream.ref)
            raise
        except TransportError:
            if stream is not None and self.stream_sender is not None:
                self.stream_sender.forget(stream.ref)
            raise
        up = reply.breakdown
        timing.network_s = max(0.0, call_s - (up.tiers[0].total_s if up.tiers else 0.0))
        timing.bytes_back = reply.wire_nbytes
        b = Breakdown([timing, *up.tiers], up.answered_by, up.exit_position, up.exit_confidence, up.fallback)
        if stream is not None:
            b.stream_frame = True
            b.stream_delta_hops = up.stream_delta_hops + int(stream.delta)
            b.stream_saved_bytes = up.stream_saved_bytes + saved
            b.stream_own_saved_bytes = saved
        return _Answer(reply.position, b, values=values, wire=reply.tensors)

    def _bad_reply(self, e: BadReply) -> None:
        """Count and log an upstream's reply that failed admission (the caller falls back from it, or relays an
        error: never the reply)."""
        with self._fallback_lock:
            self.bad_replies += 1
        d = self.upstream.description if self.upstream is not None else None
        _log.warning("bad reply from upstream %s at %s: %s", d.role if d is not None else "?",
                     self.upstream.address if self.upstream is not None else "?", e)  # fmt: skip

    def _finish_here(
        self,
        position: int,
        wire: list[WireTensor],
        values: list[torch.Tensor] | None,
        timing: TierTiming,
        deadline: float,
        plan: Plan,
        kind: str,
        error: TransportError,
    ) -> _Answer:
        """The fallback: run ``[position:]`` here with the plan's exits (waiting for the compute unit rather than
        refusing: this request was accepted already). Relayed payloads are admitted now, like any inbound tensors."""
        n = self.runtime.num_positions
        exits = plan.exits_in(position, n)
        if self.source is not None:
            self.source.local_work(position, n, plan.exits)  # requests behind this one wait for it
        if values is None:
            with self.admission.admit(position, wire) as got:
                timing.decode_s += got.decode_s
                outcome, job = self._run_here(position, got.values, exits, deadline)
        else:
            outcome, job = self._run_here(position, values, exits, deadline)
        timing.queue_s += job.queue_s
        timing.compute_s += job.compute_s
        timing.stop = outcome.exit_position if outcome.exit_position >= 0 else n
        d = self.upstream.description if self.upstream is not None else None
        nxt = plan.upstream_of(self.role)
        up_role = d.role if d is not None else nxt.tier if nxt is not None else _next_tier(self.role)
        address = self.upstream.address if self.upstream is not None else "?"
        reason = fallback_reason(self.role, up_role, address, kind, error, position, timing.stop)
        self.gate.fell_back(reason)
        _log.warning("fallback: %s", reason)
        b = Breakdown([timing], self.role, outcome.exit_position, outcome.exit_confidence, reason)
        return _Answer(outcome.position, b, values=outcome.values)

    def _run_here(self, position: int, values: list[torch.Tensor], exits: Sequence[ExitPoint],
                  deadline: float) -> tuple[RunOutcome, JobTiming]:  # fmt: skip
        n = self.runtime.num_positions
        return self.compute.run(lambda: self.runtime.run(position, n, values, exits), deadline, block=True)

    def warm_up(self) -> None:
        """Run the whole model once along every exit, and measure the fallback reserve profile, before any request:
        a first run is cold (graph code, kernels, allocations), and an emulated slowdown multiplies it (x64: a
        150 ms cold run held a board-class device's first request for 9 s)."""
        rt = self.runtime
        self._local_profile()
        everywhere = [ExitPoint(p, 1.0) for p in sorted(rt.exits)]  # never confident enough: every segment runs
        rt.run(0, rt.num_positions, list(rt.example_input), everywhere)

    def _local_profile(self) -> list[RangeProfile]:
        """This tier's compute profile for fallback reserves: the handshake's, else measured once, cheaply (tens
        of ms; ``_measure_profile``'s per-node medians take ~1 s): one pass segment by segment gives the shape,
        one warm pass of the whole model the scale (the per-call overhead of many short ranges would inflate it)."""
        if self.profile:
            return self.profile
        with self._fallback_lock:
            if self._reserve_profile is None:
                rt, n = self.runtime, self.runtime.num_positions
                bounds = [0, *rt.cuts, n]
                values, times = list(rt.example_input), []
                for a, b in zip(bounds, bounds[1:]):
                    t = time.perf_counter()
                    values = rt.run(a, b, values).values
                    times.append(time.perf_counter() - t)
                t = time.perf_counter()
                rt.run(0, n, list(rt.example_input))
                scale = self.config.compute.slowdown_factor * (time.perf_counter() - t) / max(sum(times), 1e-9)
                self._reserve_profile = [RangeProfile(a, b, scale * s) for a, b, s in zip(bounds, bounds[1:], times)]
            return self._reserve_profile

    def _finish(self, timing: TierTiming, t0: float) -> None:
        timing.total_s = time.monotonic() - t0
        p = self.config.power
        timing.energy_j = p.active_w * timing.compute_s + p.transmit_w * timing.network_s

    # ------------------------------------------------------------------------------------ codecs
    def _codec(self, spec: str) -> Codec:
        return self.codecs.get(spec)

    def wire_tensor(self, name: str, value: torch.Tensor, codec: Codec, *, to_send: bool = False) -> WireTensor:
        """``value`` encoded with ``codec``, as it travels. ``to_send``: the tensor only goes into a request sent
        upstream, so a float's payload stays as the codec's parts (``PayloadParts``), copied once, into the message."""
        dtype = str(value.dtype).removeprefix("torch.")
        spec = codec.spec
        if to_send and value.is_floating_point():
            return WireTensor(name, datatype_of(dtype), tuple(value.shape), spec, codec.encode_parts(value))
        payload = codec.encode(value)
        if not value.is_floating_point() and read_header(payload).codec_name != spec.split(":")[0]:
            spec = "lossless"  # a lossy codec passes ints (e.g. a token mask crossing a cut) through losslessly: say so
        return WireTensor(name, datatype_of(dtype), tuple(value.shape), spec, payload)

    def _names(self, position: int, count: int) -> list[str]:
        if position == self.runtime.num_positions:
            return self.runtime.output_names(count)
        return [i.name for i in self.runtime.cut_info(position).tensors]

    # ------------------------------------------------------------------------------------ lifecycle
    @property
    def inflight(self) -> int:
        return self.gate.inflight

    def drain(self, grace_s: float) -> bool:
        """Refuse new requests (ShuttingDown) and wait up to ``grace_s`` for those in flight.

        Returns:
            True if every in-flight request finished; False if some were still running (the caller then
            stops the server, which cancels them, and :meth:`close` fails anything still queued).
        """
        return self.gate.drain(grace_s)

    def close(self) -> None:
        """Stop the live planner, the compute unit (queued requests fail with ShuttingDown) and the upstream channel."""
        self.gate.close()
        if self.source is not None:
            self.source.close()
        self.compute.stop()
        if self.upstream is not None:
            self.upstream.close()


def _compute_unit(config: NodeConfig) -> ComputeUnit | BatchingComputeUnit:
    """First come first served, or Triton-style dynamic batching (``batching.enabled``)."""
    b, f = config.batching, config.compute.slowdown_factor
    cpu = config.compute.threads == 1  # torch computes on the calling thread: its CPU time is the work
    if not b.enabled:
        return ComputeUnit(config.queues.compute, slowdown_factor=f, cpu_clock=cpu)
    return BatchingComputeUnit(config.queues.compute, max_batch_size=b.max_batch_size, cpu_clock=cpu,
                               max_queue_delay_s=b.max_queue_delay_microseconds * 1e-6, slowdown_factor=f)  # fmt: skip


def _next_tier(role: str) -> str:
    i = TIERS.index(role) if role in TIERS else len(TIERS)
    return TIERS[i + 1] if i + 1 < len(TIERS) else "upstream"


def _relay_timeout_s(deadline: float) -> float:
    """Timeout for a call made on a caller's behalf: its deadline less a quarter of the time left (at most 0.1 s),
    so a peer that does not answer is reported to the caller before the caller's own call expires."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise DeadlineExceeded("no time left to call the upstream")
    return remaining - min(0.1, 0.25 * remaining)


def _codec_into(plan: Plan, position: int) -> str:
    """The codec of the plan's hop that delivers the values at ``position`` (what a relaying tier codes a stream
    frame with for its own hop)."""
    if position == 0:
        return plan.input_codec or "lossless"
    for stage in plan.stages:
        if stage.stop == position and stage.codec:
            return stage.codec
    return "lossless"
