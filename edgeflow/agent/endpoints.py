"""What a served agent shows besides ``edgeflow.v1``: its model as KServe v2 clients see it, its Prometheus metrics
and its tracer, built from the node file. The wiring (``edgeflow.agent.serve``) hands them to the server.

    server = AgentServer(agent, ..., kserve=kserve_model(config, runtime), metrics=agent_metrics(agent),
                         tracer=agent_tracer(config))
"""

from __future__ import annotations

from pathlib import Path

from edgeflow.agent.loader import ZOO_PREFIX
from edgeflow.agent.runtime import ModelRuntime
from edgeflow.config import BUILTIN_PREFIX, TEXT_PREFIX, NodeConfig
from edgeflow.transport import datatype_of
from edgeflow.transport.kserve import KServeModel
from edgeflow.transport.metrics import Metrics
from edgeflow.transport.tracing import Tracer

__all__ = ["model_name", "kserve_model", "agent_metrics", "agent_tracer"]


def model_name(artifact: str) -> str:
    """The KServe model name of ``model.artifact``: ``builtin:demo`` -> ``demo``, ``zoo:resnet18?...`` ->
    ``resnet18``, ``models/cnn.safetensors`` -> ``cnn``."""
    if artifact.startswith(BUILTIN_PREFIX):
        return artifact[len(BUILTIN_PREFIX) :]
    if artifact.startswith((ZOO_PREFIX, TEXT_PREFIX)):
        return artifact.partition(":")[2].partition("?")[0]
    return Path(artifact).name.removesuffix(".safetensors")


def kserve_model(config: NodeConfig, runtime: ModelRuntime) -> KServeModel:
    """The model an agent serves over KServe v2: name, fingerprint, inputs (position 0) and outputs (position N)."""
    inputs = [(t.name, datatype_of(t.dtype), tuple(t.shape)) for t in runtime.cut_info(0).tensors]
    out = runtime.cut_info(runtime.num_positions).tensors
    names = runtime.output_names(len(out))
    outputs = [(n, datatype_of(t.dtype), tuple(t.shape)) for n, t in zip(names, out)]
    return KServeModel(model_name(config.model.artifact), runtime.fingerprint, inputs, outputs)


def agent_metrics(agent: object, role: str) -> Metrics:
    """A :class:`Metrics` for ``agent`` that reads its compute queue's depth and requests in flight at each scrape."""
    metrics = Metrics(role)
    compute = getattr(agent, "compute", None)
    if compute is not None and hasattr(compute, "queued"):
        metrics.track_queue_depth(lambda: float(compute.queued))
    if hasattr(agent, "inflight"):
        metrics.track_inflight(lambda: float(getattr(agent, "inflight")))
    return metrics


def agent_tracer(config: NodeConfig) -> Tracer:
    """The node's tracer (``tracing`` section); disabled unless ``tracing.enabled``.

    Raises:
        ConfigError: an exporter that cannot be set up (otlp without its package).
    """
    t = config.tracing
    if not t.enabled:
        return Tracer.disabled()
    return Tracer.create(t.service_name or f"edgeflow-{config.role}", exporter=t.exporter, path=t.path, endpoint=t.endpoint)
