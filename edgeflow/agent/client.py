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

from edgeflow.agent.agent import Agent, wire_limits
from edgeflow.agent.endpoints import agent_metrics
from edgeflow.agent.failover import latency_target_s, stall_after_s
from edgeflow.agent.gcfreeze import freeze_startup_objects, thaw
from edgeflow.agent.live import LivePlanner, PlanSwitch
from edgeflow.agent.loader import load_runtime
from edgeflow.agent.upstream import Upstream
from edgeflow.config import NodeConfig
from edgeflow.core.codecs import DecodeLimits, decode, get_codec
from edgeflow.core.plan import Plan
from edgeflow.transport import (
    Breakdown,
    Description,
    InferCall,
    InferReply,
    Keepalive,
    PeerClient,
    TlsFiles,
    WireLimits,
    WireTensor,
    datatype_of,
    raise_for_error,
)
from edgeflow.transport.auth import load_token
from edgeflow.transport.metrics import Metrics

__all__ = ["Result", "DeviceClient", "AgentClient", "peer_client"]

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
        input_codec: the raw input's codec when the device ran nothing of the model.
        predicted_latency_s: the live planner's prediction for it when it was sent (None without one).
    """

    request_id: str
    output: torch.Tensor | tuple[torch.Tensor, ...]
    breakdown: Breakdown
    latency_s: float
    plan: str = ""
    input_codec: str | None = None
    predicted_latency_s: float | None = None

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
            data["plan"] = self.plan + (f"  input|{self.input_codec}" if self.input_codec else "")
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


def peer_client(config: NodeConfig) -> PeerClient:
    """A channel to ``config.upstream`` with the node's limits, keepalive, TLS and token.

    Raises:
        ConfigError: ``upstream.auth`` names a token that cannot be read.
    """
    assert config.upstream is not None
    tls, auth = config.upstream.tls, config.upstream.auth
    return PeerClient(
        config.upstream.address,
        limits=wire_limits(config),
        keepalive=Keepalive(config.keepalive.time_s, config.keepalive.timeout_s, config.keepalive.permit_without_calls),
        tls=TlsFiles(tls.cert, tls.key, tls.ca) if tls else None,
        token=load_token(auth.token_file, auth.token_env) if auth else None,
        metadata=config.upstream.metadata,
        endpoints=config.upstream.endpoints,
    )


class DeviceClient:
    """The device tier, in process.

    Every request is stamped with the plan it goes by. With a live planner (``plan: auto`` or
    ``planner.enabled`` in the node file, see :mod:`edgeflow.agent.live`) that is the planner's current plan,
    re-chosen after every reply; :attr:`plan` and :attr:`plan_switches` tell what it is doing, and each
    :class:`Result` carries its own ``plan``.

    With a latency target (``fallback.slo_ms``, default ``planner.slo_ms``) each request is given up upstream in
    time to finish here within it; with a live planner, one on the planner's plan whose upstream has taken
    ``fallback.stall_factor`` x the predicted latency is given up as stalled (not one on a plan the caller forced:
    its prediction is no yardstick; see :class:`edgeflow.config.FallbackConfig`).

    Args:
        agent: an agent (usually role ``device``) whose plan starts the chain.
        max_inflight: requests in flight at once in :meth:`infer_many`.
        live: the live planner, or None to go by the agent's configured plan.
    """

    def __init__(self, agent: Agent, *, max_inflight: int = 4, live: LivePlanner | None = None):
        self.agent = agent
        self.max_inflight = max_inflight
        self.live = live
        self._target_s = latency_target_s(agent.config.fallback, agent.config.planner.slo_ms)
        self._pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="edgeflow-device")
        self._frozen = False  # from_config froze the start-up objects (edgeflow.agent.gcfreeze); close thaws them
        self.metrics: Metrics | None = None  # plan switches, fallbacks, every reply (from_config: with metrics.port)

    @property
    def plan(self) -> str:
        """The plan the next request goes by (text form; a raw input codec follows as ``  input|codec``)."""
        if self.live is None:
            return str(self.agent.plan)
        plan, codec, _ = self.live.current()
        return str(plan) + (f"  input|{codec}" if codec else "")

    @property
    def plan_switches(self) -> list[PlanSwitch]:
        """Every switch of the live plan so far (empty without a live planner)."""
        return list(self.live.switches) if self.live is not None else []

    @classmethod
    def from_config(
        cls, config: NodeConfig, *, profile_repeats: int = 0, example: torch.Tensor | tuple[torch.Tensor, ...] | None = None
    ) -> "DeviceClient":
        """Load the model and connect upstream as ``config`` says (no server is started). With ``plan: auto``
        (or ``planner.enabled``) start the live planner (see :meth:`LivePlanner.start`; ``example``: an input
        to profile codecs on). Then the objects alive are frozen out of the garbage collector's full collections
        (:mod:`edgeflow.agent.gcfreeze`: one costs 130–200 ms here) until :meth:`close`.

        Raises:
            ArtifactError, ConfigError, PlanError: the node cannot be set up.
            TransportError: the live planner cannot reach the upstream chain.
        """
        runtime = load_runtime(config)
        upstream = None
        if config.upstream is not None:
            upstream = Upstream(
                peer_client(config), fingerprint=runtime.fingerprint, role=config.role, connect_s=config.deadlines.connect_s
            )
        agent = Agent(config, runtime, upstream=upstream, profile_repeats=profile_repeats)
        live = None
        if config.auto:
            try:
                live = LivePlanner.start(agent, config.planner, example=example)
            except BaseException:
                agent.close()
                raise
        client = cls(agent, max_inflight=config.queues.inflight, live=live)
        if config.metrics.port is not None:
            client.metrics = agent_metrics(agent, config.role)
            client.metrics.serve_http(f"{config.metrics.host}:{config.metrics.port}")
        freeze_startup_objects()
        client._frozen = True
        return client

    def infer(
        self,
        x: torch.Tensor | tuple[torch.Tensor, ...],
        *,
        timeout_s: float | None = None,
        plan: Plan | str | None = None,
        input_codec: str | None = None,
    ) -> Result:
        """Run one input batch through the chain.

        Args:
            x: model input, e.g. images (B, 3, H, W) float32 in [0, 1]; a tuple for several inputs.
            timeout_s: deadline for the whole request (default: the node's ``deadlines.request_s``).
            plan: go by this plan instead of the current one (the live planner still learns from the reply,
                but does not re-plan on it); ``input_codec`` goes with it.

        Raises:
            InvalidRequest: the input does not fit the model, or ``plan`` does not fit the model or chain.
            TransportError: an upstream tier failed (PeerUnavailable, DeadlineExceeded, RemoteError).
        """
        values = list(x) if isinstance(x, tuple) else [x]
        timeout = timeout_s if timeout_s is not None else self.agent.config.deadlines.request_s
        predicted = None
        forced = plan is not None
        if not forced and self.live is not None:
            plan, input_codec, predicted = self.live.current()
        elif forced and self.live is not None:
            p = plan if isinstance(plan, Plan) else Plan.parse(str(plan))
            predicted = self.live.predict_s(p, input_codec)
        t0 = time.monotonic()
        target = t0 + self._target_s if self._target_s is not None else None
        ans = self.agent.submit_local(values, request_id=_request_id(self.agent.role), deadline=t0 + timeout,
                                      plan=plan, input_codec=input_codec, target=target,
                                      stall_s=None if forced else stall_after_s(self.agent.config.fallback, predicted))  # fmt: skip
        latency = time.monotonic() - t0
        if self.live is not None:
            switches = len(self.live.switches)
            self.live.observe(ans.breakdown, ans.plan, decide=not forced)
            if self.metrics is not None and len(self.live.switches) > switches:
                self.metrics.plan_switch()
        if self.metrics is not None:
            self.metrics.observe_reply("local", InferReply(ans.request_id, "", ans.position, [], ans.breakdown))
        return Result(ans.request_id, _as_output(ans.values), ans.breakdown, latency, ans.plan, input_codec, predicted)

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
        if self.metrics is not None:
            self.metrics.close()
        if self.live is not None:
            self.live.close()
        self.agent.close()
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

    def _call(self, x: torch.Tensor | tuple[torch.Tensor, ...]) -> InferCall:
        d = self.describe()
        values = list(x) if isinstance(x, tuple) else [x]
        names = [n for n, _, _ in d.inputs] or [""] * len(values)
        tensors = [
            WireTensor(name, datatype_of(str(v.dtype).removeprefix("torch.")), tuple(v.shape), self._codec.spec, self._codec.encode(v))
            for name, v in zip(names, values)
        ]
        return InferCall(_request_id("client"), d.fingerprint, 0, tensors)

    @staticmethod
    def _result(reply: Any, latency_s: float) -> Result:
        values = [decode(t.payload, DecodeLimits()) for t in reply.tensors]
        return Result(reply.request_id, _as_output(values), reply.breakdown, latency_s)

    def infer(self, x: torch.Tensor | tuple[torch.Tensor, ...], *, timeout_s: float = 30.0) -> Result:
        """Run one input batch; raises TransportError subclasses on failure."""
        call = self._call(x)
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
