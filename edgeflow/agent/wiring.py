"""One place wires a node: the agent, its upstream link and its server, from a node config.

Everything a node file says about the network (limits, keepalive, TLS, the bearer token) is turned into transport
objects here and nowhere else, so the agent process (:mod:`edgeflow.agent.serve`), the in-process device
(:class:`edgeflow.agent.client.DeviceClient`) and the scenario runner build the same thing the same way.

    agent = build_agent(config)                  # model loaded, upstream link (not yet connected)
    start_live_planning(agent, wait=False)       # plan: auto on the device: plan live (serving the safe plan meanwhile)
    server = build_server(config, agent)         # not started
"""

from __future__ import annotations

import logging
from typing import Any

from edgeflow.agent.agent import Agent, wire_limits
from edgeflow.agent.endpoints import agent_metrics, agent_tracer, kserve_model
from edgeflow.agent.loader import load_runtime
from edgeflow.agent.runtime import ModelRuntime
from edgeflow.agent.speed import resolve_device_speed
from edgeflow.agent.upstream import Upstream
from edgeflow.config import NodeConfig, PlannerConfig, TlsConfig
from edgeflow.transport import AgentServer, Keepalive, PeerClient, TlsFiles
from edgeflow.transport.auth import load_token

__all__ = ["keepalive_of", "tls_files", "peer_client", "build_upstream", "build_agent", "build_server",
           "start_live_planning"]

_log = logging.getLogger(__name__)


def keepalive_of(config: NodeConfig) -> Keepalive:
    """The node's keepalive settings (the same on its server and its upstream channel)."""
    k = config.keepalive
    return Keepalive(k.time_s, k.timeout_s, k.permit_without_calls)


def tls_files(tls: TlsConfig | None) -> TlsFiles | None:
    return TlsFiles(tls.cert, tls.key, tls.ca) if tls is not None else None


def peer_client(config: NodeConfig) -> PeerClient:
    """A channel to ``config.upstream`` with the node's limits, keepalive, TLS, token, metadata and endpoints.

    Raises:
        ConfigError: ``upstream.auth`` names a token that cannot be read.
    """
    assert config.upstream is not None, "peer_client needs an upstream section"
    auth = config.upstream.auth
    return PeerClient(
        config.upstream.address,
        limits=wire_limits(config),
        keepalive=keepalive_of(config),
        tls=tls_files(config.upstream.tls),
        token=load_token(auth.token_file, auth.token_env) if auth else None,
        metadata=config.upstream.metadata,
        endpoints=config.upstream.endpoints,
    )


def build_upstream(config: NodeConfig, fingerprint: str) -> Upstream | None:
    """The handshaken link to the next tier (connected lazily), or None without an upstream section."""
    if config.upstream is None:
        return None
    return Upstream(peer_client(config), fingerprint=fingerprint, role=config.role, connect_s=config.deadlines.connect_s)


def build_agent(config: NodeConfig, *, runtime: ModelRuntime | None = None, profile_repeats: int = 0) -> Agent:
    """The node's agent: its model (``runtime``, else loaded as ``config.model`` says) and its upstream link. A
    ``compute.device_speed`` is resolved here into the emulated ``slowdown_factor`` (:mod:`edgeflow.agent.speed`,
    logged); the agent's ``config`` and its Describe carry the factor.

    Args:
        config: the node.
        runtime: an already loaded model to share (the scenario runner's devices share one).
        profile_repeats: timed runs per segment for the compute profile the agent's Describe reports (0: none).

    Raises:
        ArtifactError, ConfigError, PlanError: the node cannot be set up.
    """
    runtime = runtime if runtime is not None else load_runtime(config)
    config, speed = resolve_device_speed(config, runtime)  # a stated compute.device_speed becomes its slowdown
    if speed is not None:
        _log.info("%s: %s", config.role, speed.describe())
    upstream = build_upstream(config, runtime.fingerprint)
    try:
        agent = Agent(config, runtime, upstream=upstream, profile_repeats=profile_repeats)
    except BaseException:
        if upstream is not None:
            upstream.close()
        raise
    agent.metrics = agent_metrics(agent, config.role)  # served at /metrics with metrics.port
    return agent


def build_server(config: NodeConfig, agent: Agent) -> AgentServer:
    """The node's gRPC server for ``agent`` (not started): its address, limits, TLS, token and queues, its model as
    KServe v2 clients see it, its metrics and its tracer.

    Raises:
        ConfigError: ``auth`` names a token that cannot be read, or a tracing exporter cannot be set up.
    """
    from edgeflow import __version__

    auth = config.auth
    return AgentServer(
        agent,
        address=config.listen.address,
        limits=wire_limits(config),
        keepalive=keepalive_of(config),
        tls=tls_files(config.tls),
        max_workers=config.queues.workers,
        stream_inflight=config.queues.inflight,
        default_timeout_s=config.deadlines.request_s,
        stream_idle_s=config.deadlines.stream_idle_s,
        streams_per_peer=config.queues.streams_per_peer,
        auth_token=load_token(auth.token_file, auth.token_env) if auth else None,
        kserve=kserve_model(config, agent.runtime),
        metrics=agent.metrics,
        tracer=agent_tracer(config),
        version=__version__,
    )


def start_live_planning(agent: Agent, *, wait: bool, example: Any = None, settings: PlannerConfig | None = None,
                        profile_repeats: int = 3) -> None:  # fmt: skip
    """With ``plan: auto`` (or ``planner.enabled``), start the device's live planner (see
    :class:`~edgeflow.agent.source.Source`): measure the chain and choose the first plan, then build the ranges the
    device may run (its current plan's first) and keep the new objects out of full garbage collections.

    Args:
        agent: the device agent.
        wait: block until the first live plan is chosen (in process); False: serve the safe plan meanwhile.
        example: an input to profile the codecs on (see :func:`~edgeflow.agent.measure.measure_chain`).
        settings: the ``planner`` section (default: the node's).
        profile_repeats: timed runs per node for the device's own profile.

    Raises:
        EdgeflowError: with ``wait``, the live planner could not start.
    """
    from edgeflow.agent.gcfreeze import freeze_startup_objects
    from edgeflow.agent.live import LivePlanner
    from edgeflow.agent.measure import build_source_ranges

    source = agent.source
    if source is None or not (agent.config.auto or settings is not None):
        return
    chosen = settings or agent.config.planner

    def build() -> LivePlanner:
        return LivePlanner.start(agent, chosen, example=example, profile_repeats=profile_repeats)

    def after() -> None:
        plan = source.current_plan().resolved(agent.runtime.num_positions)
        stage = plan.stage(agent.role)
        first = [(0, stage.stop)] if stage is not None and stage.stop else []
        build_source_ranges(agent.runtime, first)
        agent.warm_up()
        freeze_startup_objects(collect=wait)  # serving already: no full collection now

    source.start_live(build, wait=wait, after=after)
