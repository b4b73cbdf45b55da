"""Reconnect backoff and retries are gRPC's, set in the channel options; UNAVAILABLE is retried on unary calls."""

from __future__ import annotations

import json
import threading
from typing import Iterator

import pytest

from edgeflow.errors import PeerUnavailable
from edgeflow.transport import (
    SERVICE_NAME,
    AgentServer,
    Breakdown,
    Description,
    InferCall,
    InferReply,
    Keepalive,
    PeerClient,
    ShuttingDown,
    WireLimits,
    WireTensor,
)
from edgeflow.transport.options import Reconnect, channel_options, service_config


def test_channel_options_set_backoff_and_retries() -> None:
    limits = WireLimits(max_message_bytes=8 << 20)
    opts = dict(channel_options(limits, Keepalive(), Reconnect(initial_backoff_s=0.1, max_backoff_s=0.5)))
    assert opts["grpc.initial_reconnect_backoff_ms"] == 100 and opts["grpc.max_reconnect_backoff_ms"] == 500
    assert opts["grpc.min_reconnect_backoff_ms"] >= 100  # gRPC's floor for each of the three
    assert opts["grpc.enable_retries"] == 1
    assert opts["grpc.per_rpc_retry_buffer_size"] == limits.max_message_bytes  # a whole hop can be retried
    (method,) = json.loads(str(opts["grpc.service_config"]))["methodConfig"]
    assert {(n["service"], n["method"]) for n in method["name"]} == {
        (SERVICE_NAME, m) for m in ("Describe", "Probe", "Infer")
    }  # never InferStream
    policy = method["retryPolicy"]
    assert policy["retryableStatusCodes"] == ["UNAVAILABLE"] and policy["maxAttempts"] == 3
    assert policy["initialBackoff"].endswith("s") and float(policy["maxBackoff"][:-1]) > 0


def test_no_retry_policy_with_one_attempt() -> None:
    assert json.loads(service_config(Reconnect(retry_attempts=1))) == {"methodConfig": []}
    assert dict(channel_options(WireLimits(), Keepalive(), Reconnect(retry_attempts=1)))["grpc.enable_retries"] == 0


class _DrainingOnce:
    """Answers UNAVAILABLE (``ShuttingDown``) to the first attempt of each request id, then echoes."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}
        self._lock = threading.Lock()

    def describe(self, caller_fingerprint: str, caller_role: str) -> Description:
        return Description("cloud", "fp", 10, [1, 2], ["lossless"], "cloud[0:]")

    def infer(self, call: InferCall, deadline: float) -> InferReply:
        with self._lock:
            n = self.attempts[call.request_id] = self.attempts.get(call.request_id, 0) + 1
        if n == 1 or call.request_id == "always":
            raise ShuttingDown("draining")
        return InferReply(call.request_id, "fp", call.start, list(call.tensors), Breakdown([], "cloud"))


@pytest.fixture
def draining() -> Iterator[tuple[_DrainingOnce, AgentServer]]:
    handler = _DrainingOnce()
    s = AgentServer(handler, address="127.0.0.1:0", max_workers=4)
    s.start()
    yield handler, s
    s.stop(0).wait(5)


def test_unavailable_is_retried_by_the_channel(draining: tuple[_DrainingOnce, AgentServer]) -> None:
    handler, server = draining
    call = InferCall("r1", "fp", 3, [WireTensor("x", "FP32", (1,), "lossless", b"abcd")])
    with PeerClient(server.address) as c:
        reply = c.infer(call, timeout_s=10)
        assert reply.request_id == "r1" and handler.attempts["r1"] == 2
        with pytest.raises(PeerUnavailable, match="draining"):
            c.infer(InferCall("always", "fp", 3, []), timeout_s=10)
        assert handler.attempts["always"] == 3  # maxAttempts, then the caller sees it


def test_probe_of_a_dead_port_fails_fast() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with PeerClient(f"127.0.0.1:{port}") as c:
        with pytest.raises(PeerUnavailable):  # after the retries, not DeadlineExceeded: nothing waits for the peer
            c.probe(timeout_s=10)
