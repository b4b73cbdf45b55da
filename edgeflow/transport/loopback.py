"""An in-process stand-in for :class:`~edgeflow.transport.client.PeerClient` (no sockets, no threads).

Requests and replies still go through the real wire encoding, and handler errors come back as the same
edgeflow errors a gRPC peer would produce, so agent logic can be tested, and chained, in one process.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator

import grpc

from edgeflow.errors import BadReply, RequestRejected
from edgeflow.transport.messages import (
    Description,
    InferCall,
    InferReply,
    WireLimits,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from edgeflow.transport.server import AgentHandler, describe_with_upstream, forward_probe
from edgeflow.transport.status import error_of, status_of

__all__ = ["LoopbackClient"]


class LoopbackClient:
    """Calls ``handler`` directly, through the wire encoding and the status mapping.

    Args:
        handler: the agent to call.
        address: a label used in error messages.
        limits: applied when parsing, as the real server does.
    """

    def __init__(self, handler: AgentHandler, *, address: str = "loopback", limits: WireLimits = WireLimits()):
        self._handler = handler
        self.address = address
        self.limits = limits

    def _call(self, fn):  # type: ignore[no-untyped-def]
        try:
            return fn()
        except Exception as e:  # exactly what a gRPC server + client pair would turn it into
            code, message = status_of(e)
            raise error_of(code, message, self.address) from None

    def wait_ready(self, timeout_s: float) -> None:
        return None

    def describe(self, fingerprint: str = "", role: str = "", *, timeout_s: float = 5.0,
                 with_upstream: bool = False) -> Description:  # fmt: skip
        d = self._call(lambda: self._handler.describe(fingerprint, role))
        return describe_with_upstream(self._handler, d, time.monotonic() + timeout_s) if with_upstream else d

    def infer(self, call: InferCall, *, timeout_s: float, wait_for_ready: bool = False) -> InferReply:
        return self.infer_bytes(encode_request(call), timeout_s=timeout_s)

    def infer_bytes(self, request: bytes, *, timeout_s: float, wait_for_ready: bool = False) -> InferReply:
        deadline = time.monotonic() + timeout_s
        if len(request) > self.limits.max_message_bytes:
            message = f"message of {len(request)} bytes larger than max {self.limits.max_message_bytes}"
            raise error_of(grpc.StatusCode.RESOURCE_EXHAUSTED, message, self.address)
        data = self._call(lambda: encode_reply(self._handler.infer(decode_request(request, self.limits), deadline)))
        try:
            return decode_reply(data, self.limits)
        except RequestRejected as e:  # as the gRPC client: a reply we cannot parse is the peer's fault
            raise BadReply(f"peer {self.address} sent a bad reply: {e}") from None

    def infer_stream(self, calls: Iterable[InferCall], *, timeout_s: float) -> Iterator[InferReply]:
        for c in calls:
            yield self.infer(c, timeout_s=timeout_s)

    def probe(self, *, send_nbytes: int = 0, reply_nbytes: int = 0, echo: bool = False, timeout_s: float = 10.0) -> float:
        return 0.0

    def probe_upstream(self, *, send_nbytes: int = 0, timeout_s: float = 10.0) -> float:
        deadline = time.monotonic() + timeout_s
        return self._call(lambda: forward_probe(self._handler, send_nbytes, deadline, self.limits))

    def close(self) -> None:
        return None

    def __enter__(self) -> "LoopbackClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
