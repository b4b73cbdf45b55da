"""The gRPC server every agent runs: edgeflow.v1.Agent, KServe v2 (inference.GRPCInferenceService), health, reflection.

Handlers are registered with identity (de)serializers, so a request reaches us as one ``bytes`` object and
tensor payloads are sliced out of it without copies (:mod:`edgeflow.transport.messages`). The agent logic is
a :class:`AgentHandler`; this module only moves bytes and maps errors to status codes.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgeflow.transport.auth import TokenInterceptor
from edgeflow.transport.messages import WireLimits
from edgeflow.transport.options import Keepalive, TlsFiles, server_credentials, server_options
from edgeflow.transport.pool import LifoThreadPool
from edgeflow.transport.service import (
    SERVICE_NAME,
    AgentHandler,
    AgentService,
    CallInfo,
    RelayingHandler,
    describe_with_upstream,
    forward_probe,
    status_for,
)
from edgeflow.transport.tracing import Tracer

if TYPE_CHECKING:
    from edgeflow.transport.kserve import KServeModel
    from edgeflow.transport.metrics import Metrics

__all__ = ["SERVICE_NAME", "AgentHandler", "RelayingHandler", "AgentServer", "describe_with_upstream", "forward_probe"]

_log = logging.getLogger(__name__)
_QUEUED_PER_THREAD = 16  # calls queued per worker thread before gRPC itself answers RESOURCE_EXHAUSTED
_INFERENCE_RPCS = frozenset({"Infer", "Probe", "ModelInfer"})  # unary rpcs that take an inference slot
_T = TypeVar("_T")


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
        kserve: also serve KServe v2 (``inference.GRPCInferenceService``) for this model, through the same entry
            point as Infer (see :mod:`edgeflow.transport.kserve`); None: only edgeflow.v1.
        metrics: observe every request (see :mod:`edgeflow.transport.metrics`).
        tracer: a span per request (see :mod:`edgeflow.transport.tracing`); None: contexts passed on only.
        version: edgeflow's version, for KServe ServerMetadata.
        stream_idle_s: an InferStream with nothing in flight that sends nothing this long is ended (DEADLINE_EXCEEDED).
        streams_per_peer: InferStreams one connection may hold at once; beyond: RESOURCE_EXHAUSTED.
        control_workers: threads kept for health, Describe and metadata, which never take an inference slot.
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
        stream_idle_s: float = 10.0,
        streams_per_peer: int = 8,
        control_workers: int = 8,
        kserve: "KServeModel | None" = None,
        metrics: "Metrics | None" = None,
        tracer: Tracer | None = None,
        version: str = "",
    ):
        self._handler = handler
        self._requested = address
        self.limits = limits
        self._stream_inflight = stream_inflight
        self._default_timeout_s = default_timeout_s
        self._serving = False
        self.service = AgentService(handler, limits=limits, kserve=kserve, metrics=metrics, tracer=tracer,
                                    ready=lambda: self._serving, version=version)  # fmt: skip
        self._stream_idle_s = stream_idle_s
        self._streams_per_peer = streams_per_peer
        # inference (Infer, Probe, InferStream, ModelInfer) takes one of max_workers slots, refused at once beyond;
        # health, Describe and metadata run on control_workers threads of their own, so no inference load or idle
        # stream can lock them out
        self._inference_slots = threading.BoundedSemaphore(max_workers)
        self._max_inference = max_workers
        self._peer_streams: dict[str, int] = {}
        self._peer_lock = threading.Lock()
        self._items = LifoThreadPool(max_workers, name="edgeflow-stream")
        self._rpcs = LifoThreadPool(max_workers + control_workers, name="edgeflow-rpc")
        self._server = grpc.server(
            self._rpcs,
            options=server_options(limits, keepalive),
            # gRPC counts calls waiting for a thread too: a burst that our own gate refuses in microseconds must not
            # refuse health on the way, so this only bounds the memory of queued calls
            maximum_concurrent_rpcs=_QUEUED_PER_THREAD * (max_workers + control_workers),
            interceptors=[TokenInterceptor(auth_token)] if auth_token is not None else None,
        )
        self._server.add_generic_rpc_handlers(self._generic_handlers())
        self._health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        # inference.GRPCInferenceService lives in a private descriptor pool (edgeflow.transport.kserve_pb), which
        # reflection (default pool only) cannot describe: clients of it bring the .proto (proto/kserve/)
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

    def _generic_handlers(self) -> list[grpc.GenericRpcHandler]:
        out = []
        for service, methods in self.service.services().items():
            handlers = {name: self._unary(fn, gated=name in _INFERENCE_RPCS) for name, fn in methods.items()}
            if service == SERVICE_NAME:
                handlers["InferStream"] = grpc.stream_stream_rpc_method_handler(self._gated_stream)
            out.append(grpc.method_handlers_generic_handler(service, handlers))
        return out

    # ------------------------------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Start serving; returns the bound ``host:port``."""
        self._server.start()
        self.set_serving(True)
        return self.address

    def set_serving(self, serving: bool) -> None:
        """Report SERVING / NOT_SERVING through grpc.health.v1 (overall and for edgeflow.v1.Agent)."""
        self._serving = serving
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
            code, message = status_for(e)
            if code == grpc.StatusCode.INTERNAL:
                _log.exception("internal error serving %s", context.peer())
            context.abort(code, message)
            raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def _call_info(self, context: grpc.ServicerContext) -> CallInfo:
        return CallInfo(self._deadline(context), tuple(context.invocation_metadata() or ()), _caller_of(context))

    def _unary(self, method: Callable[[bytes, CallInfo], bytes], *, gated: bool) -> grpc.RpcMethodHandler:
        def serve(data: bytes, ctx: grpc.ServicerContext) -> bytes:
            if not gated:
                return self._run(ctx, lambda: method(data, self._call_info(ctx)))
            self._take_slot(ctx)
            try:
                return self._run(ctx, lambda: method(data, self._call_info(ctx)))
            finally:
                self._inference_slots.release()

        return grpc.unary_unary_rpc_method_handler(serve)

    def _take_slot(self, context: grpc.ServicerContext) -> None:
        if not self._inference_slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"all {self._max_inference} inference slots are busy (queues.workers); retry later")  # fmt: skip

    def _gated_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        """InferStream within the limits: one inference slot, at most ``streams_per_peer`` per connection."""
        peer = context.peer()
        with self._peer_lock:
            held = self._peer_streams.get(peer, 0)
            if held < self._streams_per_peer:
                self._peer_streams[peer] = held + 1
        if held >= self._streams_per_peer:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{peer} already holds {held} InferStreams (queues.streams_per_peer)")  # fmt: skip
        try:
            self._take_slot(context)
            try:
                yield from self._infer_stream(requests, context)
            finally:
                self._inference_slots.release()
        finally:
            with self._peer_lock:
                left = self._peer_streams.pop(peer, 1) - 1
                if left > 0:
                    self._peer_streams[peer] = left

    def _infer_stream(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        info = self._call_info(context)
        deadline = info.deadline
        replies: queue.Queue[bytes | tuple[str, int]] = queue.Queue()
        slots = threading.Semaphore(self._stream_inflight)
        received = [0, time.monotonic()]  # requests read, when the last one came (the reader writes, we read)

        def done(data: bytes) -> None:
            replies.put(self.service.infer_item(data, info))

        def read() -> None:
            count = 0
            try:
                for data in requests:
                    received[0], received[1] = received[0] + 1, time.monotonic()
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
            now = time.monotonic()
            if not context.is_active() or now > deadline + 1.0:
                return
            if total is None and sent == received[0] and now - received[1] > self._stream_idle_s:
                # nothing in flight and nothing sent for stream_idle_s: free the slot for someone who will
                context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                              f"InferStream idle: no request for {self._stream_idle_s:g} s (deadlines.stream_idle_s)")  # fmt: skip
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


def _caller_of(context: grpc.ServicerContext) -> str:
    """Who made a call: ``tls:<subject>`` of a verified client certificate, else ``peer:<address:port>`` (one
    connection; a caller that reconnects is a new caller, so its streams resynchronise with a key frame)."""
    try:
        auth = context.auth_context() or {}
    except Exception:  # not every context offers it
        auth = {}
    for key in ("x509_subject", "x509_common_name"):
        values = auth.get(key) or ()
        if values:
            return "tls:" + b"/".join(values).decode("utf-8", "replace")
    return f"peer:{context.peer()}"
