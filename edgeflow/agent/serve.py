"""A served agent: the agent, its gRPC server, its upstream link, and an orderly shutdown.

Shutdown (SIGTERM/SIGINT in the CLI): health turns NOT_SERVING and new requests are refused with
UNAVAILABLE ("shutting down"); requests in flight get ``deadlines.shutdown_grace_s`` to finish; then the
server stops (cancelling what is left) and requests still queued for compute fail with UNAVAILABLE.
"""

from __future__ import annotations

import logging
import threading
import time

from edgeflow.agent.agent import Agent, wire_limits
from edgeflow.agent.client import peer_client
from edgeflow.agent.endpoints import agent_metrics, agent_tracer, kserve_model
from edgeflow.agent.gcfreeze import freeze_startup_objects
from edgeflow.agent.loader import load_runtime
from edgeflow.agent.upstream import Upstream
from edgeflow.config import NodeConfig
from edgeflow.errors import EdgeflowError
from edgeflow.transport import AgentServer, Keepalive, TlsFiles
from edgeflow.transport.alloc import keep_freed_buffers
from edgeflow.transport.auth import load_token

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
    """Load the model, build the agent, start its server on ``config.listen.address``.

    Raises:
        ArtifactError, ConfigError, PlanError: the node cannot be set up.
        OSError: the address cannot be bound.
    """
    keep_freed_buffers(wire_limits(config).max_message_bytes)
    runtime = load_runtime(config)
    upstream = None
    if config.upstream is not None:
        upstream = Upstream(peer_client(config), fingerprint=runtime.fingerprint, role=config.role, connect_s=config.deadlines.connect_s)
    agent = Agent(config, runtime, upstream=upstream, profile_repeats=profile_repeats)
    metrics = agent_metrics(agent, config.role)
    tls, auth = config.tls, config.auth
    server = AgentServer(
        agent,
        address=config.listen.address,
        limits=wire_limits(config),
        keepalive=Keepalive(config.keepalive.time_s, config.keepalive.timeout_s, config.keepalive.permit_without_calls),
        tls=TlsFiles(tls.cert, tls.key, tls.ca) if tls else None,
        max_workers=config.queues.workers,
        stream_inflight=config.queues.inflight,
        default_timeout_s=config.deadlines.request_s,
        auth_token=load_token(auth.token_file, auth.token_env) if auth else None,
        kserve=kserve_model(config, runtime),
        metrics=metrics,
        tracer=agent_tracer(config),
        version=_version(),
    )
    freeze_startup_objects()  # a full collection over torch and the model costs ~130 ms: not inside requests
    server.start()
    m = config.metrics
    metrics_address = metrics.serve_http(f"{m.host}:{m.port}") if m.port is not None else None
    return ServedAgent(agent, server, metrics_address)


def _version() -> str:
    from edgeflow import __version__

    return __version__
