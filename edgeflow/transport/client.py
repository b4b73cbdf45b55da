"""Client side of edgeflow.v1.Agent: what an agent uses to talk to its upstream peer.

Every call has a deadline; failed calls raise edgeflow errors (:func:`edgeflow.transport.status.error_of`):
``PeerUnavailable``, ``DeadlineExceeded``, or ``RemoteError`` carrying the peer's status code and message.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, Sequence

import grpc

from edgeflow.errors import BadReply, PeerUnavailable
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.errors import InvalidRequest, RequestRejected
from edgeflow.transport.messages import (
    Description,
    InferCall,
    InferReply,
    WireLimits,
    decode_description,
    decode_reply,
    encode_request,
)
from edgeflow.transport.auth import bearer_metadata
from edgeflow.transport.options import Keepalive, TlsFiles, channel_credentials, channel_options, channel_target
from edgeflow.transport.service import SERVICE_NAME
from edgeflow.transport.tracing import outgoing_metadata
from edgeflow.transport.status import code_from_number, error_of
from edgeflow.transport.wire import frame, split_fields

__all__ = ["PeerClient", "LinkEstimate", "raise_for_error"]

_UNEXPECTED_LIMIT = 64  # stream replies for ids not outstanding dropped before the stream is ended as a bad peer


@dataclass(frozen=True)
class LinkEstimate:
    """What :meth:`PeerClient.measure_link` found: round trip seconds and bits per second each way."""

    rtt_s: float
    up_bps: float
    down_bps: float


def raise_for_error(reply: InferReply, peer: str = "") -> InferReply:
    """Return ``reply``, or raise the edgeflow error for a failed stream item."""
    if reply.error_code:
        raise error_of(code_from_number(reply.error_code), reply.error_message, peer)
    return reply


_NOT_CONNECTED = "failed to connect to all addresses"  # gRPC's words for a call never sent: no connection


class PeerClient:
    """A channel to one peer agent.

    Args:
        address: ``host:port``.
        limits: message limits, the same as the peer's server uses.
        keepalive: keepalive settings, the same as the peer's server uses.
        tls: connect with TLS (client certificate when ``tls.cert``/``tls.key`` are set); ``None``: plaintext.
        token: send ``authorization: Bearer <token>`` on every call (see :mod:`edgeflow.transport.auth`).
        metadata: more gRPC metadata for every call, e.g. ``{"application": "edgeflow"}`` for a Ray Serve upstream.
        endpoints: more addresses of the same tier: calls are spread over ``address`` and these by gRPC's
            ``round_robin`` policy (IP literals only; see :func:`~edgeflow.transport.options.channel_target`).

    The current trace context (:mod:`edgeflow.transport.tracing`) travels with every call as ``traceparent``.
    """

    def __init__(
        self,
        address: str,
        *,
        limits: WireLimits = WireLimits(),
        keepalive: Keepalive = Keepalive(),
        tls: TlsFiles | None = None,
        token: str | None = None,
        metadata: Mapping[str, str] | None = None,
        endpoints: Sequence[str] = (),
    ):
        self.address = address if not endpoints else ",".join([address, *endpoints])
        self._tls = tls is not None
        self._base_metadata = (*(bearer_metadata(token) or ()), *(metadata or {}).items())
        self.limits = limits
        self.unexpected_replies = 0  # stream replies for ids never sent (or answered already): dropped
        target = channel_target(address, endpoints)
        options = channel_options(limits, keepalive, round_robin=bool(endpoints))
        if tls is not None:
            self._channel = grpc.secure_channel(target, channel_credentials(tls), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        path = f"/{SERVICE_NAME}/"
        self._describe = self._channel.unary_unary(path + "Describe")
        self._infer = self._channel.unary_unary(path + "Infer")
        self._infer_stream = self._channel.stream_stream(path + "InferStream")
        self._probe = self._channel.unary_unary(path + "Probe")

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        """Per-call metadata: token, extra metadata, and the current trace context."""
        out = (*self._base_metadata, *outgoing_metadata())
        return out or None

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        try:
            yield
        except grpc.RpcError as e:
            raise error_of(e.code(), self._explained(e.code(), e.details() or ""), self.address) from None
        except RequestRejected as e:  # a reply we cannot parse or that is over the bounds: the peer's fault
            raise BadReply(f"peer {self.address} sent a bad reply: {e}") from None

    def _explained(self, code: grpc.StatusCode | None, details: str, *, closed_twice: bool = False) -> str:
        """gRPC's connect failure, said plainly when it is a TLS handshake that failed. ``closed_twice``: the peer
        accepted the connection and closed it before any call, twice in a row (a killed peer closes once, then
        refuses): what a TLS server does to a plaintext client or to a certificate it does not trust."""
        if code != grpc.StatusCode.UNAVAILABLE:
            return details
        if "handshake failed" in details.lower():
            return f"TLS handshake failed: {details}"
        if closed_twice and self._tls:
            return f"TLS handshake failed (the peer closed the connection: does it trust our certificate?): {details}"
        if closed_twice:
            return f"TLS handshake failed? the peer closed a plaintext connection (does it serve TLS?): {details}"
        return details

    def _call(self, method: grpc.UnaryUnaryMultiCallable, request: bytes, *, timeout_s: float,
              wait_for_ready: bool) -> bytes:  # fmt: skip
        """One unary call. ``wait_for_ready``: a peer not reachable yet is retried until ``timeout_s`` (as gRPC's own
        wait_for_ready does), but a failed TLS handshake ends the wait at once, as UNAVAILABLE saying so, instead
        of DEADLINE_EXCEEDED after the whole timeout. A call never sent is the only one retried."""
        deadline = time.monotonic() + timeout_s
        pause, closed = 0.02, 0
        for _ in range(100_000):  # bounded by the deadline long before
            left = deadline - time.monotonic()
            try:
                return method(request, timeout=max(left, 0.0), wait_for_ready=False, metadata=self._metadata)
            except grpc.RpcError as e:
                code, details = e.code(), e.details() or ""
                if code != grpc.StatusCode.UNAVAILABLE or _NOT_CONNECTED not in details:
                    raise
                if "handshake failed" in details.lower():
                    raise
                if "Socket closed" in details:
                    closed += 1
                    if closed >= 2:
                        raise error_of(code, self._explained(code, details, closed_twice=True), self.address) from None
                elif not wait_for_ready:
                    raise
                else:
                    closed = 0
                if time.monotonic() + pause >= deadline:
                    if not wait_for_ready:
                        raise
                    raise error_of(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"not reachable within {timeout_s:g} s: {details}", self.address) from None  # fmt: skip
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
        raise error_of(grpc.StatusCode.DEADLINE_EXCEEDED, "not reachable", self.address)  # pragma: no cover

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the channel connects.

        Raises:
            PeerUnavailable: not connected within ``timeout_s``.
        """
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise PeerUnavailable(f"peer {self.address}: not reachable within {timeout_s:g} s") from None

    def describe(self, fingerprint: str = "", role: str = "", *, timeout_s: float = 5.0,
                 with_upstream: bool = False) -> Description:  # fmt: skip
        """Handshake: the peer's description. With ``fingerprint`` set, a peer serving another model answers
        FAILED_PRECONDITION (raised as ``RemoteError``). ``with_upstream``: the peer also describes its own
        upstream (``Description.upstream_description``, or why not in ``upstream_error``).
        """
        req = pb.DescribeRequest(model_fingerprint=fingerprint, caller_role=role, with_upstream=with_upstream)
        req = req.SerializeToString()
        with self._mapped():
            data = self._call(self._describe, req, timeout_s=timeout_s, wait_for_ready=True)
            return decode_description(data)

    def infer(self, call: InferCall, *, timeout_s: float, wait_for_ready: bool = False) -> InferReply:
        """Send one request; the reply's payloads are views of the received message.

        ``reply.wire_nbytes`` is the reply's size; the request's size is ``len(encode_request(call))`` —
        use :meth:`infer_bytes` to get both without encoding twice.
        """
        return self.infer_bytes(encode_request(call), timeout_s=timeout_s, wait_for_ready=wait_for_ready)

    def infer_bytes(self, request: bytes, *, timeout_s: float, wait_for_ready: bool = False) -> InferReply:
        """Send an already encoded ``InferRequest`` (see :func:`~edgeflow.transport.messages.encode_request`)."""
        with self._mapped():
            data = self._call(self._infer, request, timeout_s=timeout_s, wait_for_ready=wait_for_ready)
            return decode_reply(data, self.limits)

    def infer_stream(self, calls: Iterable[InferCall], *, timeout_s: float) -> Iterator[InferReply]:
        """Pipeline ``calls`` over one InferStream; yields replies in completion order (match by id).

        Failed items come back with ``error_code`` set; see :func:`raise_for_error`. ``timeout_s`` bounds
        the whole stream. Only replies to requests outstanding are yielded: one for an id never sent (or answered
        already) is dropped and counted (``unexpected_replies``), and past 64 of them the stream ends with
        ``BadReply``; the stream ends as soon as every request sent has its reply.
        """
        lock = threading.Lock()
        outstanding: set[str] = set()  # ids sent and not answered yet
        sent_all = threading.Event()

        def requests() -> Iterator[bytes]:
            for c in calls:
                with lock:
                    outstanding.add(c.request_id)
                yield encode_request(c)
            sent_all.set()

        unexpected = 0
        with self._mapped():
            responses = self._infer_stream(requests(), timeout=timeout_s, metadata=self._metadata)
            try:
                for data in responses:
                    reply = decode_reply(data, self.limits)
                    with lock:
                        known = reply.request_id in outstanding
                        outstanding.discard(reply.request_id)
                        finished = sent_all.is_set() and not outstanding
                    if not known:  # never sent, or answered already: a peer's lie or bug, never the caller's answer
                        unexpected += 1
                        self.unexpected_replies += 1
                        if unexpected > _UNEXPECTED_LIMIT:
                            raise BadReply(f"peer {self.address} sent {unexpected} stream replies for requests not "
                                           f"outstanding (e.g. {reply.request_id[:64]!r}): stream ended")  # fmt: skip
                        continue
                    yield reply
                    if finished:  # every request answered: stop reading (a peer may keep sending)
                        return
            finally:
                responses.cancel()  # ends the call now, not at its deadline (a no-op once it has ended)

    def probe(self, *, send_nbytes: int = 0, reply_nbytes: int = 0, echo: bool = False, timeout_s: float = 10.0) -> float:
        """Round trip of ``send_nbytes`` up and ``reply_nbytes`` (or the echo) down; returns seconds.

        Small probes measure RTT; large ones bandwidth: ``bandwidth ≈ nbytes / (t_large - t_small)``.
        """
        meta = pb.ProbeRequest(id="probe", reply_nbytes=reply_nbytes, echo=echo).SerializeToString()
        data = frame(meta, 15, [bytes(send_nbytes)])
        with self._mapped():
            t0 = time.perf_counter()
            out = self._probe(data, timeout=timeout_s, metadata=self._metadata)
            elapsed = time.perf_counter() - t0
            split_fields(out, 15, max_payloads=1, max_payload_nbytes=self.limits.max_message_bytes)
        return elapsed

    def probe_upstream(self, *, send_nbytes: int = 0, timeout_s: float = 10.0) -> float:
        """Seconds the peer's own probe of *its* upstream took, carrying ``send_nbytes`` up (``ProbeRequest.forward``):
        the next hop measured without a route to it. Raises ``RemoteError`` (FAILED_PRECONDITION) when the peer has
        no upstream, ``PeerUnavailable`` / ``DeadlineExceeded`` when its upstream does not answer.
        """
        meta = pb.ProbeRequest(id="probe", forward=True, forward_send_nbytes=send_nbytes).SerializeToString()
        with self._mapped():
            out = self._probe(frame(meta, 15, [b""]), timeout=timeout_s, metadata=self._metadata)
            rest, _ = split_fields(out, 15, max_payloads=1, max_payload_nbytes=self.limits.max_message_bytes)
        reply = pb.ProbeResponse()
        try:
            reply.ParseFromString(rest)
        except Exception as e:  # protobuf's DecodeError
            raise InvalidRequest(f"malformed ProbeResponse from {self.address}: {e}") from None
        return reply.forward_s

    def measure_link(self, *, nbytes: int = 1 << 20, repeats: int = 3, timeout_s: float = 10.0) -> LinkEstimate:
        """Estimate RTT and bandwidth both ways with :meth:`probe` (best of ``repeats`` each).

        ``rtt_s`` is the fastest empty probe; ``up_bps``/``down_bps`` are ``8 * nbytes`` over the extra time a
        probe carrying ``nbytes`` up (or down) takes beyond it. Includes gRPC and Python overheads, as real
        hops do.
        """
        rtt = min(self.probe(timeout_s=timeout_s) for _ in range(repeats))
        up = min(self.probe(send_nbytes=nbytes, timeout_s=timeout_s) for _ in range(repeats))
        down = min(self.probe(reply_nbytes=nbytes, timeout_s=timeout_s) for _ in range(repeats))
        return LinkEstimate(rtt, 8 * nbytes / max(up - rtt, 1e-9), 8 * nbytes / max(down - rtt, 1e-9))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "PeerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

