"""A served agent: the agent, its gRPC server, its upstream link, and an orderly shutdown.

A device with ``plan: auto`` serves at once, under its safe plan, while its live planner measures the chain in the
background; from its first live plan on, every input it takes over gRPC goes by the live plan
(:class:`~edgeflow.agent.source.Source`).

Shutdown (SIGTERM/SIGINT in the CLI): health turns NOT_SERVING and new requests are refused with
UNAVAILABLE ("shutting down"); requests in flight get ``deadlines.shutdown_grace_s`` to finish; then the
server stops (cancelling what is left) and requests still queued for compute fail with UNAVAILABLE.
"""

from __future__ import annotations

import logging
import threading
import time

from edgeflow.agent.agent import Agent, wire_limits
from edgeflow.agent.gcfreeze import freeze_startup_objects
from edgeflow.agent.wiring import build_agent, build_server, start_live_planning
from edgeflow.config import NodeConfig
from edgeflow.errors import EdgeflowError
from edgeflow.transport import AgentServer
from edgeflow.transport.alloc import keep_freed_buffers

__all__ = ["ServedAgent", "serve"]

_log = logging.getLogger(__name__)


class ServedAgent:
    """An agent behind a started server. Build with :func:`serve`.

    Attributes:
        metrics_address: where ``/metrics`` is served (``metrics.port``), None if it is not.
    """

    def __init__(self, agent: Agent, server: AgentServer, metrics_address: str | None = None):
        self.agent = agent
        self.server = server
        self.metrics_address = metrics_address

    @property
    def address(self) -> str:
        return self.server.address

    def handshake_in_background(self) -> threading.Thread:
        """Try the upstream handshake now (logging the outcome) so a mis-deployed chain shows up at start."""

        def run() -> None:
            if self.agent.upstream is None:
                return
            try:
                d = self.agent.upstream.handshake()
                _log.info("upstream %s at %s serves the same model (%s)", d.role, self.agent.upstream.address, d.fingerprint)
            except EdgeflowError as e:
                _log.warning("upstream handshake failed (will retry on the first request): %s", e)

        t = threading.Thread(target=run, name="edgeflow-handshake", daemon=True)
        t.start()
        return t

    def shutdown(self, grace_s: float) -> bool:
        """Drain and stop; returns True if every in-flight request finished within ``grace_s``."""
        t0 = time.monotonic()
        self.server.set_serving(False)
        finished = self.agent.drain(grace_s)
        if not finished:
            _log.warning("%d requests still in flight after %.1f s; cancelling them", self.agent.inflight, grace_s)
        self.server.stop(max(0.0, min(1.0, grace_s - (time.monotonic() - t0)))).wait(5.0)
        self.agent.close()
        service = self.server.service
        if service.metrics is not None:
            service.metrics.close()
        service.tracer.close()
        return finished


def serve(config: NodeConfig, *, profile_repeats: int = 3) -> ServedAgent:
    """Load the model, build the agent, start its server on ``config.listen.address``; a device with ``plan: auto``
    starts its live planner in the background (it serves its safe plan until the first live plan is chosen).

    Raises:
        ArtifactError, ConfigError, PlanError: the node cannot be set up.
        OSError: the address cannot be bound.
    """
    keep_freed_buffers(wire_limits(config).max_message_bytes)
    agent = build_agent(config, profile_repeats=profile_repeats)
    try:
        server = build_server(config, agent)
        freeze_startup_objects()  # a full collection over torch and the model costs ~130 ms: not inside requests
        server.start()
    except BaseException:
        agent.close()
        raise
    m = config.metrics
    metrics_address = agent.metrics.serve_http(f"{m.host}:{m.port}") if agent.metrics and m.port is not None else None
    start_live_planning(agent, wait=False)  # after the server is up: its probes and calls go out from a serving agent
    return ServedAgent(agent, server, metrics_address)
