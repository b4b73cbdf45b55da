"""``add_*_to_server`` functions for an agent's services, as generated gRPC code has them, with identity
(de)serializers: a request reaches the servicer as ``bytes`` and its answer leaves as ``bytes``.

Ray Serve's gRPC proxy (``edgeflow.rayserve``) takes its routes from such functions (``grpc_servicer_functions``,
by import path): each rpc is forwarded to the replica method of the same name, raw bytes in and out, so the
replica parses requests exactly as :class:`~edgeflow.transport.AgentServer` does (zero-copy payloads, limits).
``InferStream`` is not registered: Serve's proxy forwards unary and server-streaming rpcs only.
"""

from __future__ import annotations

from typing import Any

import grpc

from edgeflow.transport.kserve_pb import KSERVE_METHODS, KSERVE_SERVICE
from edgeflow.transport.service import SERVICE_NAME

__all__ = ["AGENT_UNARY_METHODS", "add_AgentServicer_to_server", "add_GRPCInferenceServiceServicer_to_server"]

AGENT_UNARY_METHODS = ("Describe", "Infer", "Probe")


def _add(service: str, methods: tuple[str, ...], servicer: Any, server: Any) -> None:
    handlers = {m: grpc.unary_unary_rpc_method_handler(getattr(servicer, m)) for m in methods}
    # one handler per call: Ray's proxy server reads only the first of the sequence it is given
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))


def add_AgentServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802 (the generated-code name)
    """Register ``edgeflow.v1.Agent``'s unary rpcs (Describe, Infer, Probe) of ``servicer`` on ``server``."""
    _add(SERVICE_NAME, AGENT_UNARY_METHODS, servicer, server)


def add_GRPCInferenceServiceServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802
    """Register KServe v2's ``inference.GRPCInferenceService`` rpcs of ``servicer`` on ``server``."""
    _add(KSERVE_SERVICE, KSERVE_METHODS, servicer, server)
