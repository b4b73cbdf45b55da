"""The cloud tier as a Ray Serve deployment behind Serve's gRPC proxy.

Every replica is a whole cloud agent (the node file's model, limits, batching), answering ``edgeflow.v1.Agent``
(Describe, Infer, Probe) and KServe v2 (``inference.GRPCInferenceService``) through
:class:`~edgeflow.transport.service.AgentService`, exactly as ``edgeflow agent`` does; only the wait for the compute
unit (``@serve.batch``, :mod:`.batching`) and the reply cache (a ledger shared by the replicas, :mod:`.ledger`)
differ. Edge and device agents reach it by changing their upstream address to the proxy's (port ``ray.grpc_port``)
and adding the metadata ``application: <ray.app_name>`` (``upstream.metadata``). ``InferStream`` is not served:
Serve's proxy forwards unary and server-streaming rpcs only.

    app = build_app(config)                 # a Serve application (replicas, autoscaling, batching from config)
    serve.run(app, name=config.ray.app_name, route_prefix=None)
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from edgeflow.config import NodeConfig

__all__ = ["EdgeflowReplica", "build_app", "deployment_options", "grpc_options", "LEDGER_NAME", "LEDGER_NAMESPACE", "SERVICER_FUNCTIONS"]

LEDGER_NAME = "edgeflow-reply-ledger"
LEDGER_NAMESPACE = "edgeflow"
SERVICER_FUNCTIONS = (
    "edgeflow.transport.servicers.add_AgentServicer_to_server",
    "edgeflow.transport.servicers.add_GRPCInferenceServiceServicer_to_server",
)
_log = logging.getLogger(__name__)


class _Raw:
    """A reply already serialized: Serve calls ``SerializeToString()`` on what a gRPC method returns."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def SerializeToString(self) -> bytes:  # noqa: N802 (protobuf's name)
        return self.data


class EdgeflowReplica:
    """One replica: a cloud agent behind Serve's gRPC proxy. Deployed by :func:`build_app`.

    Args:
        node: the node file as a mapping (``NodeConfig.model_dump(mode="json")``): role cloud, no upstream.
        ledger_name: the named ledger actor shared by the replicas ("" : each replica keeps its own cache).
    """

    def __init__(self, node: dict[str, Any], ledger_name: str = LEDGER_NAME) -> None:
        import torch

        from edgeflow.agent import Agent, load_runtime
        from edgeflow.agent.agent import wire_limits
        from edgeflow.agent.endpoints import agent_metrics, agent_tracer, kserve_model
        from edgeflow.transport.service import AgentService

        config = NodeConfig.from_mapping(node, source="ray deployment node")
        torch.set_num_threads(config.compute.threads)
        self.config = config
        self.replica_id = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        runtime = load_runtime(config)
        self.agent = Agent(config, runtime, upstream=None, profile_repeats=1)
        b = config.batching
        self.unit = None
        if b.enabled:
            from edgeflow.rayserve.batching import ServeBatchUnit

            self.agent.compute.stop()
            self.unit = ServeBatchUnit(config.queues.compute, max_batch_size=b.max_batch_size,
                                       max_queue_delay_s=b.max_queue_delay_microseconds * 1e-6,
                                       slowdown_factor=config.compute.slowdown_factor,
                                       cpu_clock=config.compute.threads == 1)  # fmt: skip
            self.agent.compute = self.unit  # type: ignore[assignment]
        self.ledger = None
        if ledger_name:
            import ray

            from edgeflow.rayserve.ledger import ReplyLedger, SharedReplyCache

            actor = ray.remote(ReplyLedger).options(name=ledger_name, namespace=LEDGER_NAMESPACE, get_if_exists=True,
                                                    lifetime="detached", num_cpus=0)  # fmt: skip
            self.ledger = SharedReplyCache(actor.remote(), self.replica_id, limits=wire_limits(config),
                                           call=lambda method, *args: ray.get(method.remote(*args)))  # fmt: skip
            self.agent.replies = self.ledger  # type: ignore[assignment]
        self.service = AgentService(self.agent, limits=wire_limits(config), kserve=kserve_model(config, runtime),
                                    metrics=agent_metrics(self.agent, config.role), tracer=agent_tracer(config),
                                    version=_version())  # fmt: skip
        from edgeflow.transport.kserve_pb import KSERVE_SERVICE

        self._kserve_methods = self.service.services()[KSERVE_SERVICE]
        self.timeout_s = config.deadlines.request_s
        self._pool = ThreadPoolExecutor(max(4, config.ray.max_ongoing_requests), thread_name_prefix="edgeflow-replica")

    async def _call(self, fn: Callable[[bytes, Any], bytes], request: bytes, grpc_context: Any) -> _Raw:
        from edgeflow.transport.service import CallInfo, status_for

        loop = asyncio.get_running_loop()
        if self.unit is not None and self.unit.loop is None:
            self.unit.loop = loop
        info = CallInfo(time.monotonic() + self.timeout_s, tuple(grpc_context.invocation_metadata()))
        try:
            return _Raw(await loop.run_in_executor(self._pool, fn, request, info))
        except Exception as e:  # every failure is a status, as AgentServer answers it
            code, message = status_for(e)
            if code.name == "INTERNAL":
                _log.exception("internal error in replica %s", self.replica_id)
            grpc_context.set_code(code)
            grpc_context.set_details(message)
            return _Raw(b"")

    # edgeflow.v1.Agent (Serve routes each rpc to the method of its name)
    async def Describe(self, request: bytes, grpc_context: Any) -> _Raw:  # noqa: N802
        return await self._call(self.service.describe, request, grpc_context)

    async def Infer(self, request: bytes, grpc_context: Any) -> _Raw:  # noqa: N802
        return await self._call(self.service.infer, request, grpc_context)

    async def Probe(self, request: bytes, grpc_context: Any) -> _Raw:  # noqa: N802
        return await self._call(self.service.probe, request, grpc_context)

    # inference.GRPCInferenceService
    async def ServerLive(self, request: bytes, grpc_context: Any) -> _Raw:  # noqa: N802
        return await self._kserve("ServerLive", request, grpc_context)

    async def ServerReady(self, request: bytes, grpc_context: Any) -> _Raw:  # noqa: N802
        return await self._kserve("ServerReady", request, grpc_context)

    async def ModelReady(self, request: bytes, grpc_context: Any) -> _Raw:  # noqa: N802
        return await self._kserve("ModelReady", request, grpc_context)

    async def ServerMetadata(self, request: bytes, grpc_context: Any) -> _Raw:  # noqa: N802
        return await self._kserve("ServerMetadata", request, grpc_context)

    async def ModelMetadata(self, request: bytes, grpc_context: Any) -> _Raw:  # noqa: N802
        return await self._kserve("ModelMetadata", request, grpc_context)

    async def ModelInfer(self, request: bytes, grpc_context: Any) -> _Raw:  # noqa: N802
        return await self._kserve("ModelInfer", request, grpc_context)

    async def _kserve(self, name: str, request: bytes, grpc_context: Any) -> _Raw:
        return await self._call(self._kserve_methods[name], request, grpc_context)

    def replica_stats(self) -> dict[str, Any]:
        """Counters of this replica (for tests and operators through a Serve handle)."""
        return {"replica": self.replica_id, "pid": os.getpid(), **self.agent.counters.to_json()}


def grpc_options(config: NodeConfig) -> Any:
    """Serve's gRPC proxy options: the port and the agent's services (``SERVICER_FUNCTIONS``)."""
    from ray.serve.config import gRPCOptions

    return gRPCOptions(port=config.ray.grpc_port, grpc_servicer_functions=list(SERVICER_FUNCTIONS))


def deployment_options(config: NodeConfig) -> dict[str, Any]:
    """``serve.deployment`` options for the node's ``ray`` section: a fixed ``num_replicas``, else autoscaling
    between ``min_replicas`` and ``max_replicas`` on ``target_ongoing_requests``; CPUs per replica; the shutdown
    grace of ``deadlines``.

    Raises:
        ConfigError: the node is not a cloud node without an upstream.
    """
    from edgeflow.errors import ConfigError

    if config.role != "cloud" or config.upstream is not None:
        raise ConfigError(f"role: the Ray Serve deployment serves the cloud tier (no upstream), not {config.role!r}")
    r = config.ray
    options: dict[str, Any] = {
        "name": "EdgeflowReplica",
        "max_ongoing_requests": r.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": r.num_cpus},
        "graceful_shutdown_timeout_s": config.deadlines.shutdown_grace_s,
    }
    if r.num_replicas is not None:
        options["num_replicas"] = r.num_replicas
    else:
        options["autoscaling_config"] = {"min_replicas": r.min_replicas, "max_replicas": r.max_replicas,
                                         "target_ongoing_requests": r.target_ongoing_requests}  # fmt: skip
    return options


def build_app(config: NodeConfig, *, ledger_name: str = LEDGER_NAME) -> Any:
    """The Serve application for ``config`` (role cloud): :func:`deployment_options`, bound to the node.

    Raises:
        ConfigError: the node is not a cloud node without an upstream.
    """
    from ray import serve

    options = deployment_options(config)
    node = config.model_dump(mode="json", exclude_none=True)
    return serve.deployment(EdgeflowReplica, **options).bind(node, ledger_name if config.ray.exactly_once else "")


def _version() -> str:
    from edgeflow import __version__

    return __version__
