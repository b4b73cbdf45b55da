"""The gRPC server every agent runs: edgeflow.v1.Agent plus standard health and reflection.

Handlers are registered with identity (de)serializers, so a request reaches us as one ``bytes`` object and
tensor payloads are sliced out of it without copies (:mod:`edgeflow.transport.messages`). The agent logic is
a :class:`AgentHandler`; this module only moves bytes and maps errors to status codes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import replace
from typing import Callable, Iterator, Protocol, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.errors import EdgeflowError, InvalidRequest, NoUpstream, RequestTooLarge
from edgeflow.transport.messages import (
    Description,
    InferCall,
    InferReply,
    WireLimits,
    decode_request,
    encode_description,
    encode_reply,
)
from edgeflow.transport.auth import TokenInterceptor
from edgeflow.transport.options import Keepalive, TlsFiles, server_credentials, server_options
from edgeflow.transport.pool import LifoThreadPool
from edgeflow.transport.status import code_number, status_of
from edgeflow.transport.wire import frame, split_fields

__all__ = ["SERVICE_NAME", "AgentHandler", "RelayingHandler", "AgentServer"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Agent"].full_name  # "edgeflow.v1.Agent"
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


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


class AgentServer:
    """A started-on-demand gRPC server for one agent.

    Args:
        handler: the agent logic.
        address: ``host:port`` to listen on; port 0 picks a free port (see :attr:`address` after start).
        limits: message-size and shape limits, applied by gRPC and by the parser.
        keepalive: keepalive settings, the same as the peers' clients use.
        tls: serve TLS with these files (mTLS when ``tls.ca`` is set); ``None`` for plaintext.
        max_workers: gRPC worker threads (bounds the requests served at once).
        stream_inflight: items of one InferStream served at once (reading the stream pauses beyond it,
            which pushes back on the sender through HTTP/2 flow control).
        default_timeout_s: deadline for calls that arrive without one.
        auth_token: require ``authorization: Bearer <auth_token>`` on edgeflow.v1.Agent calls (UNAUTHENTICATED
            otherwise; health and reflection stay open, see :mod:`edgeflow.transport.auth`); ``None``: no token.
    """

    def __init__(
        self,
        handler: AgentHandler,
        *,
        address: str = "127.0.0.1:0",
        limits: WireLimits = WireLimits(),
        keepalive: Keepalive = Keepalive(),
        tls: TlsFiles | None = None,
        max_workers: int = 16,
        stream_inflight: int = 4,
        default_timeout_s: float = 30.0,
        auth_token: str | None = None,
    ):
        self._handler = handler
        self._requested = address
        self.limits = limits
        self._stream_inflight = stream_inflight
        self._default_timeout_s = default_timeout_s
        self._zeros = b""
        self._items = LifoThreadPool(max_workers, name="edgeflow-stream")
        self._rpcs = LifoThreadPool(max_workers, name="edgeflow-rpc")
        self._server = grpc.server(
            self._rpcs,
            options=server_options(limits, keepalive),
            maximum_concurrent_rpcs=max_workers,  # beyond it gRPC answers RESOURCE_EXHAUSTED at once
            interceptors=[TokenInterceptor(auth_token)] if auth_token is not None else None,
        )
        self._server.add_generic_rpc_handlers([self._generic_handler()])
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server)
        host = address.rsplit(":", 1)[0]
        if tls is not None:
            port = self._server.add_secure_port(address, server_credentials(tls))
        else:
            port = self._server.add_insecure_port(address)
        if port == 0:
            raise OSError(f"cannot listen on {address}")
        self.port = port
        self.address = f"{host}:{port}"

    def _generic_handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Describe": grpc.unary_unary_rpc_method_handler(self._describe),
                "Infer": grpc.unary_unary_rpc_method_handler(self._infer),
                "InferStream": grpc.stream_stream_rpc_method_handler(self._infer_stream),
                "Probe": grpc.unary_unary_rpc_method_handler(self._probe),
            },
        )

    # ------------------------------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Start serving; returns the bound ``host:port``."""
        self._server.start()
        self.set_serving(True)
        return self.address

    def set_serving(self, serving: bool) -> None:
        """Report SERVING / NOT_SERVING through grpc.health.v1 (overall and for edgeflow.v1.Agent)."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            self._health.set(name, status)

    def stop(self, grace_s: float | None) -> threading.Event:
        """Stop taking calls; calls still running after ``grace_s`` are cancelled. Returns a done event."""
        self.set_serving(False)
        done = self._server.stop(grace_s)
        self._items.shutdown(wait=False, cancel_futures=True)
        self._rpcs.shutdown(wait=False)
        return done

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the server stops (or ``timeout_s``); True if it stopped."""
        return self._server.wait_for_termination(timeout_s)

    # ------------------------------------------------------------------------------------- handlers
    def _deadline(self, context: grpc.ServicerContext) -> float:
        remaining = context.time_remaining()
        if remaining is None or remaining > self._default_timeout_s:
            remaining = self._default_timeout_s
        return time.monotonic() + max(remaining, 0.0)

    def _run(self, context: grpc.ServicerContext, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except Exception as e:  # every failure becomes a status; the server keeps serving
            code, message = _status(e)
            if code == grpc.StatusCode.INTERNAL:
                _log.exception("internal error serving %s", context.peer())
            context.abort(code, message)
            raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def _describe(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        def go() -> bytes:
            req = pb.DescribeRequest()
            try:
                req.ParseFromString(data)
            except Exception as e:  # protobuf's DecodeError
                raise InvalidRequest(f"malformed DescribeRequest: {e}") from None
            d = self._handler.describe(req.model_fingerprint, req.caller_role)
            return encode_description(describe_with_upstream(self._handler, d, deadline) if req.with_upstream else d)

        deadline = self._deadline(context)
        return self._run(context, go)

    def _infer(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        deadline = self._deadline(context)
        return self._run(context, lambda: encode_reply(self._handler.infer(decode_request(data, self.limits), deadline)))

    def _infer_item(self, data: bytes, deadline: float) -> bytes:
        """One stream item; failures become an error item, so one bad item does not end the stream."""
        try:
            return encode_reply(self._handler.infer(decode_request(data, self.limits), deadline))
        except Exception as e:
            code, message = _status(e)
            if code == grpc.StatusCode.INTERNAL:
                _log.exception("internal error serving a stream item")
            failed = InferReply(_peek_id(data), "", 0, [], error_code=code_number(code), error_message=message)
            return encode_reply(failed)

    def _infer_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        deadline = self._deadline(context)
        replies: queue.Queue[bytes | tuple[str, int]] = queue.Queue()
        slots = threading.Semaphore(self._stream_inflight)

        def done(data: bytes) -> None:
            replies.put(self._infer_item(data, deadline))

        def read() -> None:
            count = 0
            try:
                for data in requests:
                    while not slots.acquire(timeout=0.1):
                        if not context.is_active() or time.monotonic() > deadline:
                            return
                    count += 1
                    self._items.submit(done, data)
            except Exception:  # the client went away or the stream broke: stop reading
                _log.debug("stream reader stopped", exc_info=True)
            finally:
                replies.put(("end", count))

        threading.Thread(target=read, name="edgeflow-stream-reader", daemon=True).start()
        sent, total = 0, None
        while total is None or sent < total:
            if not context.is_active() or time.monotonic() > deadline + 1.0:
                return
            try:
                item = replies.get(timeout=0.1)
            except queue.Empty:
                continue
            if isinstance(item, tuple):
                total = item[1]
                continue
            sent += 1
            slots.release()
            yield item

    def _probe(self, data: bytes, context: grpc.ServicerContext) -> bytes:
        def go() -> bytes:
            rest, payloads = split_fields(
                data, 15, max_payloads=1, max_payload_nbytes=self.limits.max_message_bytes
            )
            req = pb.ProbeRequest()
            try:
                req.ParseFromString(rest)
            except Exception as e:
                raise InvalidRequest(f"malformed ProbeRequest: {e}") from None
            if req.forward:
                seconds = forward_probe(self._handler, req.forward_send_nbytes, deadline, self.limits)
                return frame(pb.ProbeResponse(id=req.id, forward_s=seconds).SerializeToString(), 15, [b""])
            if req.echo:
                out = payloads[0] if payloads else b""
            else:
                n = req.reply_nbytes
                if not 0 <= n <= self.limits.max_message_bytes - 1024:
                    raise RequestTooLarge(f"reply_nbytes {n} outside 0..{self.limits.max_message_bytes - 1024}")
                if len(self._zeros) < n:
                    self._zeros = bytes(n)
                out = memoryview(self._zeros)[:n]
            return frame(pb.ProbeResponse(id=req.id).SerializeToString(), 15, [out])

        deadline = self._deadline(context)
        return self._run(context, go)


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
_MAX_DETAILS_CHARS = 2048


def _status(e: BaseException) -> tuple[grpc.StatusCode, str]:
    """:func:`status_of`, with the message cut to :data:`_MAX_DETAILS_CHARS`."""
    code, message = status_of(e)
    if len(message) > _MAX_DETAILS_CHARS:
        message = f"{message[:_MAX_DETAILS_CHARS]}... ({len(message) - _MAX_DETAILS_CHARS} more characters)"
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
