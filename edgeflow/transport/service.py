"""An agent's rpcs as functions of bytes: what :class:`~edgeflow.transport.AgentServer` serves over gRPC and what a
Ray Serve replica (``edgeflow.rayserve``) serves behind Serve's gRPC proxy, so both answer alike.

Every rpc is ``(request bytes, CallInfo) -> response bytes`` and raises edgeflow errors; the caller maps them to
statuses (:func:`edgeflow.transport.status.status_of`). Every inference request, ``edgeflow.v1`` Infer, a stream
item or a KServe ModelInfer, goes through :meth:`AgentService.serve_call`: one span, one set of metrics, one call
of the handler's ``infer``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Protocol

from edgeflow.errors import EdgeflowError, InvalidRequest, NoUpstream, RequestTooLarge
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.transport.messages import (
    Description,
    InferCall,
    InferReply,
    WireLimits,
    decode_request,
    encode_description,
    encode_reply,
)
from edgeflow.transport.status import code_number, status_of
from edgeflow.transport.tracing import Tracer
from edgeflow.transport.wire import frame, split_fields

if TYPE_CHECKING:
    from edgeflow.transport.kserve import KServeModel, KServeServicer
    from edgeflow.transport.metrics import Metrics

__all__ = ["SERVICE_NAME", "AgentHandler", "RelayingHandler", "CallInfo", "AgentService", "describe_with_upstream",
           "forward_probe", "MAX_DETAILS_CHARS", "status_for"]  # fmt: skip

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Agent"].full_name  # "edgeflow.v1.Agent"
_log = logging.getLogger(__name__)


class AgentHandler(Protocol):
    """What an agent implements; the server calls it from its worker threads (concurrently)."""

    def describe(self, caller_fingerprint: str, caller_role: str) -> Description:
        """Answer the handshake. Raises FingerprintMismatch if ``caller_fingerprint`` is set and differs."""
        ...

    def infer(self, call: InferCall, deadline: float) -> InferReply:
        """Serve one request before ``deadline`` (a ``time.monotonic()`` value). Raises edgeflow errors."""
        ...


class RelayingHandler(AgentHandler, Protocol):
    """An agent with an upstream it can speak for: the server then also answers ``DescribeRequest.with_upstream``
    and ``ProbeRequest.forward``. For a handler without these a forwarded probe is FAILED_PRECONDITION and a
    description asked for with its upstream comes back with ``upstream_error`` set."""

    def describe_upstream(self, deadline: float) -> Description:
        """The upstream's handshake answer, asked for now. Raises NoUpstream, or TransportError if it does not answer."""
        ...

    def probe_upstream(self, send_nbytes: int, deadline: float) -> float:
        """Seconds one probe of the upstream carrying ``send_nbytes`` up takes. Raises NoUpstream / TransportError."""
        ...


@dataclass(frozen=True)
class CallInfo:
    """What a served call brings besides its bytes.

    Attributes:
        deadline: ``time.monotonic()`` value to answer by.
        metadata: the call's invocation metadata (``traceparent`` is read from it).
        caller: who called: the TLS client certificate's identity when there is one, else the connection (peer
            address and port). Stream ids are scoped by it (``InferCall.caller``).
    """

    deadline: float
    metadata: tuple[tuple[str, Any], ...] = ()
    caller: str = ""


class AgentService:
    """An agent's rpcs as byte functions (see the module doc).

    Args:
        handler: the agent logic.
        limits: message limits, applied by the parser.
        kserve: serve ``inference.GRPCInferenceService`` for this model too (None: only ``edgeflow.v1.Agent``).
        metrics: observe every request here (None: no metrics).
        tracer: a span per request (None: contexts are passed on, nothing recorded).
        ready: whether the agent takes requests (KServe ServerReady / ModelReady).
        version: edgeflow's version (KServe ServerMetadata).
    """

    def __init__(self, handler: AgentHandler, *, limits: WireLimits = WireLimits(), kserve: "KServeModel | None" = None,
                 metrics: "Metrics | None" = None, tracer: Tracer | None = None, ready: Callable[[], bool] = lambda: True,
                 version: str = "") -> None:  # fmt: skip
        self.handler = handler
        self.limits = limits
        self.metrics = metrics
        self.tracer = tracer or Tracer.disabled()
        self._zeros = b""
        self.kserve: KServeServicer | None = None
        if kserve is not None:
            from edgeflow.transport.kserve import KServeServicer

            self.kserve = KServeServicer(kserve, infer=lambda c, info: self.serve_call(c, info, "ModelInfer"),
                                         ready=ready, limits=limits, version=version)  # fmt: skip

    def services(self) -> dict[str, dict[str, Callable[[bytes, CallInfo], bytes]]]:
        """The unary rpcs by service and name (``InferStream`` is the server's own: it is not unary)."""
        out: dict[str, dict[str, Callable[[bytes, CallInfo], bytes]]] = {
            SERVICE_NAME: {"Describe": self.describe, "Infer": self.infer, "Probe": self.probe}
        }
        if self.kserve is not None:
            from edgeflow.transport.kserve_pb import KSERVE_SERVICE

            methods = self.kserve.methods()
            infer = methods["ModelInfer"]
            methods["ModelInfer"] = lambda data, info: self._observed("ModelInfer", lambda: infer(data, info))
            out[KSERVE_SERVICE] = methods
        return out

    def _observed(self, rpc: str, fn: Callable[[], bytes]) -> bytes:
        """``fn()``, counting a failure before the request reached :meth:`serve_call` (which counts its own)."""
        try:
            return fn()
        except Exception as e:
            if self.metrics is not None and not getattr(e, "_edgeflow_observed", False):
                self.metrics.observe_error(rpc, e)
            raise

    # ------------------------------------------------------------------------------------------ inference
    def serve_call(self, call: InferCall, info: CallInfo, rpc: str = "Infer") -> InferReply:
        """One request through the handler, inside its span, observed by the metrics."""
        attrs = {"edgeflow.request_id": call.request_id, "edgeflow.start": call.start, "edgeflow.stop": call.stop}
        with self.tracer.server_span(f"edgeflow {rpc}", info.metadata, attrs):
            try:
                call.caller = info.caller or call.caller
                reply = self.handler.infer(call, info.deadline)
            except Exception as e:
                if self.metrics is not None:
                    self.metrics.observe_error(rpc, e)
                    e._edgeflow_observed = True  # type: ignore[attr-defined]
                raise
        if self.metrics is not None:
            self.metrics.observe_reply(rpc, reply)
        return reply

    def infer(self, data: bytes, info: CallInfo) -> bytes:
        return self._observed("Infer", lambda: encode_reply(self.serve_call(decode_request(data, self.limits), info)))

    def infer_item(self, data: bytes, info: CallInfo) -> bytes:
        """One InferStream item; a failure becomes an error item, so one bad item does not end the stream."""
        try:
            return self._observed(
                "InferStream", lambda: encode_reply(self.serve_call(decode_request(data, self.limits), info, "InferStream"))
            )
        except Exception as e:
            code, message = status_for(e)
            if code.name == "INTERNAL":
                _log.exception("internal error serving a stream item")
            failed = InferReply(_peek_id(data), "", 0, [], error_code=code_number(code), error_message=message)
            return encode_reply(failed)

    # ------------------------------------------------------------------------------------------ handshake, probes
    def describe(self, data: bytes, info: CallInfo) -> bytes:
        req = pb.DescribeRequest()
        try:
            req.ParseFromString(data)
        except Exception as e:  # protobuf's DecodeError
            raise InvalidRequest(f"malformed DescribeRequest: {e}") from None
        d = self.handler.describe(req.model_fingerprint, req.caller_role)
        return encode_description(describe_with_upstream(self.handler, d, info.deadline) if req.with_upstream else d)

    def probe(self, data: bytes, info: CallInfo) -> bytes:
        rest, payloads = split_fields(data, 15, max_payloads=1, max_payload_nbytes=self.limits.max_message_bytes)
        req = pb.ProbeRequest()
        try:
            req.ParseFromString(rest)
        except Exception as e:
            raise InvalidRequest(f"malformed ProbeRequest: {e}") from None
        if req.forward:
            seconds = forward_probe(self.handler, req.forward_send_nbytes, info.deadline, self.limits)
            return frame(pb.ProbeResponse(id=req.id, forward_s=seconds).SerializeToString(), 15, [b""])
        if req.echo:
            out: bytes | memoryview = payloads[0] if payloads else b""
        else:
            n = req.reply_nbytes
            if not 0 <= n <= self.limits.max_message_bytes - 1024:
                raise RequestTooLarge(f"reply_nbytes {n} outside 0..{self.limits.max_message_bytes - 1024}")
            if len(self._zeros) < n:
                self._zeros = bytes(n)
            out = memoryview(self._zeros)[:n]
        return frame(pb.ProbeResponse(id=req.id).SerializeToString(), 15, [out])


# A forwarded probe makes this agent send that much upstream: kept to what a bandwidth probe needs (the live
# planner's are at most 4 MiB), so a caller cannot turn one small request into a message-limit's worth of traffic.
_MAX_FORWARD_NBYTES = 4 << 20


def describe_with_upstream(handler: AgentHandler, d: Description, deadline: float) -> Description:
    """``d`` with the handler's upstream described (``DescribeRequest.with_upstream``), or with why not: the answer
    about this agent stands either way."""
    ask = getattr(handler, "describe_upstream", None)
    try:
        if ask is None:
            raise NoUpstream(f"{d.role or 'this agent'} does not speak for an upstream")
        return replace(d, upstream_description=ask(deadline))
    except EdgeflowError as e:
        return replace(d, upstream_error=str(e))


def forward_probe(handler: AgentHandler, send_nbytes: int, deadline: float, limits: WireLimits) -> float:
    """Seconds the handler's probe of its upstream took (``ProbeRequest.forward``).

    Raises:
        NoUpstream: the handler does not forward probes.
        RequestTooLarge: ``send_nbytes`` is negative or over the bound.
    """
    forward = getattr(handler, "probe_upstream", None)
    if forward is None:
        raise NoUpstream("this agent does not forward probes")
    most = min(_MAX_FORWARD_NBYTES, limits.max_message_bytes - 1024)
    if not 0 <= send_nbytes <= most:
        raise RequestTooLarge(f"forward_send_nbytes {send_nbytes} outside 0..{most}")
    return float(forward(send_nbytes, deadline))


# A status message travels as an HTTP/2 header; gRPC clients refuse header blocks over 8 KiB (the call then
# fails RESOURCE_EXHAUSTED instead of with our status), and messages echo values taken from requests.
MAX_DETAILS_CHARS = 2048


def status_for(e: BaseException) -> tuple[Any, str]:
    """:func:`status_of`, with the message cut to :data:`MAX_DETAILS_CHARS`."""
    code, message = status_of(e)
    if len(message) > MAX_DETAILS_CHARS:
        message = f"{message[:MAX_DETAILS_CHARS]}... ({len(message) - MAX_DETAILS_CHARS} more characters)"
    return code, message


def _peek_id(data: bytes) -> str:
    """The request id of a possibly malformed request, or ``""``."""
    try:
        rest, _ = split_fields(data, 15, max_payloads=1 << 20, max_payload_nbytes=1 << 62)
        msg = pb.InferRequest()
        msg.ParseFromString(rest)
        return msg.id[:256]
    except Exception:  # best effort only
        return ""
