"""Python entry points for submitting inputs.

- :class:`DeviceClient` runs the device tier in this process (its range, its exits, the hop upstream):
  what ``edgeflow infer --node nodes/device.yaml`` uses. Several inputs are pipelined: the device computes
  input n+1 while input n is on the wire.
- :class:`AgentClient` submits inputs to a running agent over gRPC (``edgeflow infer --via HOST:PORT``).

Both return :class:`Result`: the model output (or an exit's logits) and the per-tier breakdown.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch

from edgeflow.agent.agent import Agent
from edgeflow.agent.gcfreeze import freeze_startup_objects, thaw
from edgeflow.agent.textin import TEXT_INPUT
from edgeflow.agent.live import LivePlanner
from edgeflow.agent.wiring import build_agent, start_live_planning
from edgeflow.config import NodeConfig
from edgeflow.core.codecs import decode, get_codec
from edgeflow.core.plan import Plan
from edgeflow.transport import (
    Breakdown,
    Description,
    InferCall,
    Keepalive,
    PeerClient,
    PlanSwitch,
    TlsFiles,
    WireLimits,
    WireTensor,
    datatype_of,
    raise_for_error,
)
from edgeflow.transport.metrics import Metrics
from edgeflow.transport.strings import BYTES, encode_strings

__all__ = ["Result", "DeviceClient", "AgentClient"]

_ids = itertools.count()


def _request_id(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_ids)}"


@dataclass
class Result:
    """One answered request.

    Attributes:
        request_id: the id it travelled under.
        output: the model output (one tensor, or a tuple), or an exit head's logits.
        breakdown: per-tier timing and bytes, in chain order.
        latency_s: wall time seen by the caller.
        plan: the plan it went by, text form ("" when unknown, e.g. through :class:`AgentClient`).
        predicted_latency_s: the live planner's prediction for it when it was sent (None without one).
        predicted_path_s: its prediction for the path the request took (its exit, or the model output).
    """

    request_id: str
    output: torch.Tensor | tuple[torch.Tensor, ...]
    breakdown: Breakdown
    latency_s: float
    plan: str = ""
    predicted_latency_s: float | None = None
    predicted_path_s: float | None = None

    @property
    def answered_by(self) -> str:
        return self.breakdown.answered_by

    @property
    def exit_position(self) -> int:
        """Position of the exit that answered, or -1 for the model output."""
        return self.breakdown.exit_position

    def to_json(self) -> dict[str, Any]:
        out = self.output if isinstance(self.output, torch.Tensor) else self.output[0]
        data: dict[str, Any] = {"request_id": self.request_id, "latency_s": self.latency_s}
        if self.plan:
            data["plan"] = self.plan
        if self.predicted_latency_s is not None:
            data["predicted_latency_s"] = self.predicted_latency_s
        if out.dim() == 2 and out.is_floating_point():  # logits (B, classes)
            probs = torch.softmax(out.float(), dim=-1)
            data["prediction"] = out.argmax(dim=-1).tolist()
            data["confidence"] = probs.amax(dim=-1).tolist()
        data["output_shape"] = list(out.shape)
        data.update(self.breakdown.to_json())
        return data


def _as_output(values: list[torch.Tensor]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    return values[0] if len(values) == 1 else tuple(values)


class DeviceClient:
    """The device tier, in process.

    Every request is stamped with the plan it goes by (:class:`~edgeflow.agent.source.Source`). With a live planner
    (``plan: auto`` or ``planner.enabled`` in the node file, see :mod:`edgeflow.agent.live`) that is the planner's
    current plan, re-chosen after every reply; :attr:`plan` and :attr:`plan_switches` tell what it is doing, and each
    :class:`Result` carries its own ``plan`` and prediction. A device agent process serving other processes plans the
    same way, through the same :class:`~edgeflow.agent.source.Source`.

    With a latency target (``fallback.slo_ms``, default ``planner.slo_ms``) each request is given up upstream in
    time to finish here within it; with a live planner, one on the planner's plan whose upstream has taken
    ``fallback.stall_factor`` x the predicted latency is given up as stalled (not one on a plan the caller forced:
    its prediction is no yardstick; see :class:`edgeflow.config.FallbackConfig`).

    Args:
        agent: an agent (usually role ``device``) whose plan starts the chain.
        max_inflight: requests in flight at once in :meth:`infer_many`.
    """

    def __init__(self, agent: Agent, *, max_inflight: int = 4):
        self.agent = agent
        self.max_inflight = max_inflight
        self._pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="edgeflow-device")
        self._frozen = False  # from_config froze the start-up objects (edgeflow.agent.gcfreeze); close thaws them
        self.metrics_address: str | None = None  # where the agent's /metrics is served (from_config: metrics.port)

    @property
    def live(self) -> LivePlanner | None:
        """The live planner (None without ``plan: auto``, or while it is not ready)."""
        return self.agent.source.planner if self.agent.source is not None else None

    @property
    def metrics(self) -> Metrics | None:
        """The agent's metrics: every reply, fallbacks, plan switches (served at ``/metrics`` with ``metrics.port``)."""
        return self.agent.metrics

    @property
    def plan(self) -> str:
        """The plan the next request goes by (text form)."""
        return str(self.agent.source.current_plan()) if self.agent.source is not None else str(self.agent.plan)

    @property
    def plan_switches(self) -> list[PlanSwitch]:
        """Every switch of the live plan so far (empty without a live planner)."""
        return self.live.switches if self.live is not None else []

    @classmethod
    def from_config(
        cls, config: NodeConfig, *, profile_repeats: int = 0, example: torch.Tensor | tuple[torch.Tensor, ...] | None = None
    ) -> "DeviceClient":
        """Load the model and connect upstream as ``config`` says (no server is started). With ``plan: auto``
        (or ``planner.enabled``) start the live planner and wait for its first plan (see :meth:`LivePlanner.start`;
        ``example``: an input to profile codecs on). Then the objects alive are frozen out of the garbage collector's
        full collections (:mod:`edgeflow.agent.gcfreeze`: one costs 130–200 ms here) until :meth:`close`.

        Raises:
            ArtifactError, ConfigError, PlanError: the node cannot be set up.
            TransportError: the live planner cannot reach the upstream chain.
        """
        agent = build_agent(config, profile_repeats=profile_repeats)
        try:
            start_live_planning(agent, wait=True, example=example)
        except BaseException:
            agent.close()
            raise
        client = cls(agent, max_inflight=config.queues.inflight)
        m = config.metrics
        if agent.metrics is not None and m.port is not None:
            try:
                client.metrics_address = agent.metrics.serve_http(f"{m.host}:{m.port}")
            except BaseException:
                client.close()
                raise
        freeze_startup_objects()
        client._frozen = True
        return client

    def infer(self, x: torch.Tensor | tuple[torch.Tensor, ...], *, timeout_s: float | None = None,
              plan: Plan | str | None = None, stream: str | None = None, frame: int | None = None) -> Result:  # fmt: skip
        """Run one input batch through the chain.

        Args:
            x: model input, e.g. images (B, 3, H, W) float32 in [0, 1]; a tuple for several inputs.
            timeout_s: deadline for the whole request (default: the node's ``deadlines.request_s``).
            plan: go by this plan instead of the current one (the live planner still learns from the reply,
                but does not re-plan on it).
            stream, frame: ``x`` is frame ``frame`` of stream ``stream``: each hop sends the residual against the
                stream's previous frame (``edgeflow.agent.streams``).

        Raises:
            InvalidRequest: the input does not fit the model, or ``plan`` does not fit the model or chain.
            StreamRejected: a frame number the stream had already.
            TransportError: an upstream tier failed (PeerUnavailable, DeadlineExceeded, RemoteError).
        """
        values = list(x) if isinstance(x, tuple) else [x]
        timeout = timeout_s if timeout_s is not None else self.agent.config.deadlines.request_s
        t0 = time.monotonic()
        ans = self.agent.submit_local(values, request_id=_request_id(self.agent.role), deadline=t0 + timeout, plan=plan,
                                      stream=stream, frame=frame)  # fmt: skip
        latency = time.monotonic() - t0
        return Result(ans.request_id, _as_output(ans.values), ans.breakdown, latency, ans.plan, ans.predicted_s,
                      ans.predicted_outcome_s)  # fmt: skip

    def infer_many(self, inputs: Iterable[torch.Tensor], *, timeout_s: float | None = None) -> Iterator[Result]:
        """Pipeline ``inputs`` through the chain; yields results in input order.

        At most ``max_inflight`` requests are in flight; the compute unit's bounded queue blocks the
        submitter when full (backpressure).
        """
        pending: deque[Future[Result]] = deque()
        try:
            for x in inputs:
                pending.append(self._pool.submit(self.infer, x, timeout_s=timeout_s))
                if len(pending) >= self.max_inflight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()

    def describe(self) -> Description:
        return self.agent.describe()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.agent.close()  # its live planner too
        if self.agent.metrics is not None:
            self.agent.metrics.close()
        if self._frozen:
            self._frozen = False
            thaw()

    def __enter__(self) -> "DeviceClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AgentClient:
    """Submit model inputs to a running agent (any tier) over gRPC.

    Args:
        address: the agent's ``host:port``.
        limits, keepalive, tls: as the agent's server is configured.
        codec: codec for the input payloads (``lossless`` keeps results bit-exact).
        token: bearer token, for an agent whose node file sets ``auth``.
    """

    def __init__(
        self,
        address: str,
        *,
        limits: WireLimits = WireLimits(),
        keepalive: Keepalive = Keepalive(),
        tls: TlsFiles | None = None,
        codec: str = "lossless",
        token: str | None = None,
    ):
        self.peer = PeerClient(address, limits=limits, keepalive=keepalive, tls=tls, token=token)
        self._codec = get_codec(codec)
        self._description: Description | None = None

    def describe(self, *, timeout_s: float = 10.0) -> Description:
        """The agent's handshake answer (cached)."""
        if self._description is None:
            self._description = self.peer.describe(timeout_s=timeout_s)
        return self._description

    def _call(self, x: torch.Tensor | tuple[torch.Tensor, ...] | list[str], plan: str = "", request_id: str | None = None,
              stream: str = "", frame: int = -1) -> InferCall:  # fmt: skip
        d = self.describe()
        if isinstance(x, list):  # sentences: one BYTES tensor, tokenized by the agent (edgeflow.agent.textin)
            if not all(isinstance(s, str) for s in x):
                raise TypeError("a list input is sentences (str); give several tensors as a tuple")
            text = WireTensor(TEXT_INPUT, BYTES, (len(x),), "", encode_strings(x))
            return InferCall(request_id or _request_id("client"), d.fingerprint, 0, [text], plan=plan, stream=stream,
                             frame=frame)  # fmt: skip
        values = list(x) if isinstance(x, tuple) else [x]
        names = [n for n, _, _ in d.inputs] or [""] * len(values)
        tensors = [
            WireTensor(name, datatype_of(str(v.dtype).removeprefix("torch.")), tuple(v.shape), self._codec.spec, self._codec.encode(v))
            for name, v in zip(names, values)
        ]
        return InferCall(request_id or _request_id("client"), d.fingerprint, 0, tensors, plan=plan, stream=stream,
                         frame=frame)  # fmt: skip

    @staticmethod
    def _result(reply: Any, latency_s: float) -> Result:
        values = [decode(t.payload, t.decode_limits()) for t in reply.tensors]  # bounded by what each declares
        return Result(reply.request_id, _as_output(values), reply.breakdown, latency_s, reply.plan,
                      reply.predicted_latency_s or None, reply.predicted_outcome_s or None)  # fmt: skip

    def infer(self, x: torch.Tensor | tuple[torch.Tensor, ...] | list[str], *, timeout_s: float = 30.0,
              plan: Plan | str | None = None, request_id: str | None = None, stream: str = "",
              frame: int = -1) -> Result:  # fmt: skip
        """Run one input batch; raises TransportError subclasses on failure.

        ``x``: the model's inputs (one tensor, or a tuple in the model's order), or a list of sentences for a model
        that carries a tokenizer: sent as text (a ``BYTES`` tensor, one row each), tokenized by the agent.

        ``plan``: the plan the request goes by (default: the agent's; a device agent that plans live chooses it).
        ``request_id``: the id it travels under (default: a fresh one); a repeated id is answered once.
        ``stream``, ``frame``: ``x`` is that frame of that stream (a device agent delta codes its hops up).
        """
        call = self._call(x, str(plan) if plan is not None else "", request_id, stream, frame)
        t0 = time.monotonic()
        reply = self.peer.infer(call, timeout_s=timeout_s)
        return self._result(reply, time.monotonic() - t0)

    def infer_stream(self, inputs: Iterable[torch.Tensor], *, timeout_s: float = 300.0) -> Iterator[Result]:
        """Pipeline ``inputs`` over one InferStream; yields results in completion order (see ``request_id``).

        Raises:
            TransportError: the stream failed, or an item failed (raised when that item arrives).
        """
        t0 = time.monotonic()
        for reply in self.peer.infer_stream((self._call(x) for x in inputs), timeout_s=timeout_s):
            raise_for_error(reply, self.peer.address)
            yield self._result(reply, time.monotonic() - t0)

    def close(self) -> None:
        self.peer.close()

    def __enter__(self) -> "AgentClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
