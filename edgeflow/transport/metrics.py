"""Prometheus metrics of one agent, and the ``/metrics`` endpoint that serves them (``prometheus-client``).

Each :class:`Metrics` has its own registry (several agents in one test process do not collide). The server
observes every reply and every failure (``edgeflow.v1`` Infer, stream items and KServe ModelInfer alike); the agent
layer adds what only it sees (plan switches, the compute queue's depth) through the hooks below.

    metrics = Metrics("edge")
    metrics.serve_http("127.0.0.1:9100")       # GET http://127.0.0.1:9100/metrics
    metrics.plan_switch()                      # the live planner switched plans

Names (all with label ``role``): ``edgeflow_requests_total{rpc,code}``, ``edgeflow_stage_seconds{stage}``
(queue, compute, encode, decode, network, total: this tier's part of each request), ``edgeflow_hop_bytes{direction}``
(in: request bytes received, out: sent upstream, back: reply bytes from upstream), ``edgeflow_batch_size``,
``edgeflow_fallbacks_total``, ``edgeflow_shed_total``, ``edgeflow_plan_switches_total``, ``edgeflow_queue_depth``,
``edgeflow_inflight``.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

from edgeflow.errors import Overloaded
from edgeflow.transport.messages import InferReply
from edgeflow.transport.status import status_of

__all__ = ["Metrics", "STAGES"]

STAGES = ("queue", "compute", "encode", "decode", "network", "total")
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BYTES = tuple(float(1 << k) for k in range(8, 28, 2))  # 256 B .. 64 MiB
_BATCH = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Counters and histograms of one agent (thread-safe: prometheus-client's are).

    Args:
        role: the agent's role, the ``role`` label of every metric.
    """

    def __init__(self, role: str):
        self.role = role
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter("edgeflow_requests", "Requests answered, by rpc and gRPC status", ["role", "rpc", "code"], registry=r)
        self._stage = Histogram("edgeflow_stage_seconds", "This tier's seconds per request, by stage", ["role", "stage"],
                                buckets=_SECONDS, registry=r)  # fmt: skip
        self._bytes = Histogram("edgeflow_hop_bytes", "Message bytes per request and hop", ["role", "direction"],
                                buckets=_BYTES, registry=r)  # fmt: skip
        self._batch = Histogram("edgeflow_batch_size", "Samples in the batch a request was computed in", ["role"],
                                buckets=_BATCH, registry=r)  # fmt: skip
        self._fallbacks = Counter("edgeflow_fallbacks", "Requests finished here because the upstream failed", ["role"], registry=r)
        self._shed = Counter("edgeflow_shed", "Requests refused as overloaded", ["role"], registry=r)
        self._switches = Counter("edgeflow_plan_switches", "Plan switches of the live planner", ["role"], registry=r)
        self._queue = Gauge("edgeflow_queue_depth", "Requests waiting for the compute unit", ["role"], registry=r)
        self._inflight = Gauge("edgeflow_inflight", "Requests inside the agent", ["role"], registry=r)
        for c in (self._fallbacks, self._shed, self._switches):
            c.labels(role)  # exported at 0 from the start: rates need a first sample
        # label lookups cost ~2 us each: the children every reply touches are looked up once
        self._ok: dict[str, Any] = {}
        self._stages = [(f"{stage}_s", self._stage.labels(role, stage)) for stage in STAGES]
        self._in, self._out, self._back = (self._bytes.labels(role, d) for d in ("in", "out", "back"))
        self._batch_child = self._batch.labels(role)
        self._servers: list[Any] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------ what the server sees
    def observe_reply(self, rpc: str, reply: InferReply) -> None:
        """One answered request: this tier's timing is the breakdown's first entry."""
        ok = self._ok.get(rpc)
        if ok is None:
            ok = self._ok[rpc] = self._requests.labels(self.role, rpc, "OK")
        ok.inc()
        b = reply.breakdown
        if not b.tiers:
            return
        t = b.tiers[0]
        for attr, child in self._stages:
            child.observe(getattr(t, attr))
        self._in.observe(t.bytes_in)
        if t.bytes_out:
            self._out.observe(t.bytes_out)
            self._back.observe(t.bytes_back)
        if t.batch_size:
            self._batch_child.observe(t.batch_size)
        if b.fallback and b.fallback_tier == self.role:
            self.fallback()

    def observe_error(self, rpc: str, error: BaseException) -> None:
        """One failed request (the status it got; Overloaded also counts as shed)."""
        code, _ = status_of(error)
        self._requests.labels(self.role, rpc, code.name).inc()
        if isinstance(error, Overloaded):
            self._shed.labels(self.role).inc()

    # ------------------------------------------------------------------------------------ hooks for the agent layer
    def fallback(self) -> None:
        """A request this tier finished itself because its upstream failed."""
        self._fallbacks.labels(self.role).inc()

    def plan_switch(self) -> None:
        """The live planner switched plans."""
        self._switches.labels(self.role).inc()

    def track_queue_depth(self, depth: Callable[[], float]) -> None:
        """Read the compute queue's depth from ``depth`` at every scrape."""
        self._queue.labels(self.role).set_function(depth)

    def track_inflight(self, inflight: Callable[[], float]) -> None:
        """Read the requests in flight from ``inflight`` at every scrape."""
        self._inflight.labels(self.role).set_function(inflight)

    # ------------------------------------------------------------------------------------ exposition
    def text(self) -> str:
        """The Prometheus text exposition of every metric (what ``/metrics`` answers)."""
        return generate_latest(self.registry).decode()

    def serve_http(self, address: str) -> str:
        """Serve ``/metrics`` on ``host:port`` (port 0: a free one) in a daemon thread; returns the bound address.

        Raises:
            OSError: the address cannot be bound.
        """
        host, _, port = address.rpartition(":")
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=self.registry)
        with self._lock:
            self._servers.append(server)
        return f"{host or '127.0.0.1'}:{server.server_address[1]}"

    def close(self) -> None:
        """Stop the ``/metrics`` servers."""
        with self._lock:
            servers, self._servers = self._servers, []
        for s in servers:
            s.shutdown()
            s.server_close()
