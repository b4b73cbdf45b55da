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
from edgeflow.agent.loader import load_runtime
from edgeflow.agent.upstream import Upstream
from edgeflow.config import NodeConfig
from edgeflow.core.codecs import DecodeLimits, decode, get_codec
from edgeflow.transport import (
    Breakdown,
    Description,
    InferCall,
    Keepalive,
    PeerClient,
    TlsFiles,
    WireLimits,
    WireTensor,
    datatype_of,
    raise_for_error,
)

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
    """

    request_id: str
    output: torch.Tensor | tuple[torch.Tensor, ...]
    breakdown: Breakdown
    latency_s: float

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
    """A channel to ``config.upstream`` with the node's limits, keepalive and TLS."""
    assert config.upstream is not None
    tls = config.upstream.tls
    return PeerClient(
        config.upstream.address,
        limits=wire_limits(config),
        keepalive=Keepalive(config.keepalive.time_s, config.keepalive.timeout_s, config.keepalive.permit_without_calls),
        tls=TlsFiles(tls.cert, tls.key, tls.ca) if tls else None,
    )


class DeviceClient:
    """The device tier, in process.

    Args:
        agent: an agent (usually role ``device``) whose plan starts the chain.
        max_inflight: requests in flight at once in :meth:`infer_many`.
    """

    def __init__(self, agent: Agent, *, max_inflight: int = 4):
        self.agent = agent
        self.max_inflight = max_inflight
        self._pool = ThreadPoolExecutor(max_workers=max_inflight, thread_name_prefix="edgeflow-device")

    @classmethod
    def from_config(cls, config: NodeConfig, *, profile_repeats: int = 0) -> "DeviceClient":
        """Load the model and connect upstream as ``config`` says (no server is started).

        Raises:
            ArtifactError, ConfigError, PlanError: the node cannot be set up.
        """
        runtime = load_runtime(config)
        upstream = None
        if config.upstream is not None:
            upstream = Upstream(
                peer_client(config), fingerprint=runtime.fingerprint, role=config.role, connect_s=config.deadlines.connect_s
            )
        agent = Agent(config, runtime, upstream=upstream, profile_repeats=profile_repeats)
        return cls(agent, max_inflight=config.queues.inflight)

    def infer(self, x: torch.Tensor | tuple[torch.Tensor, ...], *, timeout_s: float | None = None) -> Result:
        """Run one input batch through the chain.

        Args:
            x: model input, e.g. images (B, 3, H, W) float32 in [0, 1]; a tuple for several inputs.
            timeout_s: deadline for the whole request (default: the node's ``deadlines.request_s``).

        Raises:
            InvalidRequest: the input does not fit the model.
            TransportError: an upstream tier failed (PeerUnavailable, DeadlineExceeded, RemoteError).
        """
        values = list(x) if isinstance(x, tuple) else [x]
        timeout = timeout_s if timeout_s is not None else self.agent.config.deadlines.request_s
        t0 = time.monotonic()
        ans = self.agent.submit_local(values, request_id=_request_id(self.agent.role), deadline=t0 + timeout)
        return Result(ans.request_id, _as_output(ans.values), ans.breakdown, time.monotonic() - t0)

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
        self.agent.close()

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
    """

    def __init__(
        self,
        address: str,
        *,
        limits: WireLimits = WireLimits(),
        keepalive: Keepalive = Keepalive(),
        tls: TlsFiles | None = None,
        codec: str = "lossless",
    ):
        self.peer = PeerClient(address, limits=limits, keepalive=keepalive, tls=tls)
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
