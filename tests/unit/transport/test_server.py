"""AgentServer + PeerClient over real gRPC on 127.0.0.1, with a fake handler: bytes, errors, health, reflection."""

from __future__ import annotations

import socket
import time
from typing import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from edgeflow.errors import CodecError, DeadlineExceeded, PeerUnavailable
from edgeflow.transport import (
    SERVICE_NAME,
    AgentServer,
    Breakdown,
    Description,
    FingerprintMismatch,
    InferCall,
    InferReply,
    InvalidRequest,
    Keepalive,
    Overloaded,
    PeerClient,
    RemoteError,
    RequestTooLarge,
    ShuttingDown,
    TierTiming,
    WireLimits,
    WireTensor,
    raise_for_error,
)
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.transport._gen import agent_pb2_grpc
from edgeflow.transport.options import channel_options, server_options

LIMITS = WireLimits(max_message_bytes=4 << 20)
FAILURES = {
    "invalid": InvalidRequest("input 0 has datatype FP64, expected FP32"),
    "codec": CodecError("corrupt header: CRC-32 mismatch"),
    "big": RequestTooLarge("batch 999, limit 8"),
    "busy": Overloaded("compute queue full"),
    "fingerprint": FingerprintMismatch("model fingerprint mismatch"),
    "draining": ShuttingDown("agent is shutting down"),
    "upstream-down": PeerUnavailable("upstream 127.0.0.1:1 unavailable"),
    "relayed": RemoteError("INVALID_ARGUMENT", "cloud says no", "127.0.0.1:2"),
    "bug": ValueError("oops"),
    "long": InvalidRequest("codec " + "x" * 20_000),  # echoed request values must not overflow the status header
}


class EchoHandler:
    """Echoes the tensors back; request ids ``fail:<kind>`` raise, ``sleep:<s>`` sleep first."""

    def describe(self, caller_fingerprint: str, caller_role: str) -> Description:
        if caller_fingerprint and caller_fingerprint != "fp":
            raise FingerprintMismatch(f"model fingerprint mismatch: {caller_role} has {caller_fingerprint}, agent serves fp")
        return Description("cloud", "fp", 10, [1, 2], ["lossless"], "cloud[0:]")

    def infer(self, call: InferCall, deadline: float) -> InferReply:
        kind, _, arg = call.request_id.partition(":")
        if kind == "fail":
            raise FAILURES[arg]
        if kind == "sleep":
            time.sleep(float(arg))
        timing = TierTiming("cloud", call.start, call.start, bytes_in=call.wire_nbytes)
        tensors = [WireTensor(t.name, t.datatype, t.shape, t.codec, t.payload) for t in call.tensors]
        return InferReply(call.request_id, "fp", call.start, tensors, Breakdown([timing], "cloud"))


@pytest.fixture(scope="module")
def server() -> Iterator[AgentServer]:
    s = AgentServer(EchoHandler(), address="127.0.0.1:0", limits=LIMITS, max_workers=8)
    s.start()
    yield s
    s.stop(0).wait(5)


@pytest.fixture(scope="module")
def client(server: AgentServer) -> Iterator[PeerClient]:
    with PeerClient(server.address, limits=LIMITS) as c:
        c.wait_ready(5)
        yield c


def _call(request_id: str = "r", payload: bytes = b"abc") -> InferCall:
    return InferCall(request_id, "fp", 3, [WireTensor("x", "FP32", (1, 2), "lossless", payload)])


def test_unary_round_trip_keeps_payload_bytes(client: PeerClient) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    reply = client.infer(_call(payload=payload), timeout_s=5)
    assert bytes(reply.tensors[0].payload) == payload
    assert reply.breakdown.tiers[0].bytes_in > len(payload)
    assert reply.wire_nbytes > len(payload)


@pytest.mark.parametrize(
    "kind, error, code",
    [
        ("invalid", RemoteError, "INVALID_ARGUMENT"),
        ("codec", RemoteError, "INVALID_ARGUMENT"),
        ("big", RemoteError, "RESOURCE_EXHAUSTED"),
        ("busy", RemoteError, "RESOURCE_EXHAUSTED"),
        ("fingerprint", RemoteError, "FAILED_PRECONDITION"),
        ("draining", PeerUnavailable, None),
        ("upstream-down", PeerUnavailable, None),
        ("relayed", RemoteError, "INVALID_ARGUMENT"),
        ("bug", RemoteError, "INTERNAL"),
    ],
)
def test_errors_map_to_status_codes_and_back(client: PeerClient, kind: str, error: type, code: str | None) -> None:
    with pytest.raises(error) as err:
        client.infer(_call(f"fail:{kind}"), timeout_s=5)
    if code:
        assert err.value.code == code
    message = str(FAILURES[kind].details if kind == "relayed" else FAILURES[kind])
    assert message in str(err.value)
    assert client.infer(_call(), timeout_s=5).request_id == "r"  # still serving


def test_deadline_is_enforced(client: PeerClient) -> None:
    with pytest.raises(DeadlineExceeded):
        client.infer(_call("sleep:0.5"), timeout_s=0.1)


def test_oversized_message_is_resource_exhausted(client: PeerClient) -> None:
    with pytest.raises(RemoteError) as err:
        client.infer(_call(payload=bytes(5 << 20)), timeout_s=5)
    assert err.value.code == "RESOURCE_EXHAUSTED"


def test_garbage_bytes_are_invalid_argument(server: AgentServer) -> None:
    with grpc.insecure_channel(server.address) as ch:
        raw = ch.unary_unary(f"/{SERVICE_NAME}/Infer")
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\x7a\xff\xff\xff\x0f", timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed message" in err.value.details()


def test_stream_answers_every_item_and_reports_failed_ones(client: PeerClient) -> None:
    ids = [f"s{i}" for i in range(10)] + ["fail:invalid", "sleep:0.05"]
    replies = list(client.infer_stream((_call(i) for i in ids), timeout_s=10))
    assert sorted(r.request_id for r in replies) == sorted(ids)
    failed = [r for r in replies if r.error_code]
    assert [r.request_id for r in failed] == ["fail:invalid"]
    with pytest.raises(RemoteError, match="INVALID_ARGUMENT"):
        raise_for_error(failed[0])


def test_describe_and_fingerprint_handshake(client: PeerClient) -> None:
    assert client.describe("fp", "edge").role == "cloud"
    with pytest.raises(RemoteError) as err:
        client.describe("other", "edge")
    assert err.value.code == "FAILED_PRECONDITION" and "fingerprint mismatch" in err.value.details


def test_probe_echo_and_download(client: PeerClient) -> None:
    assert client.probe(send_nbytes=100_000, echo=True) > 0
    assert client.probe(reply_nbytes=1_000_000) > 0
    with pytest.raises(RemoteError, match="RESOURCE_EXHAUSTED"):
        client.probe(reply_nbytes=1 << 40)
    link = client.measure_link(nbytes=256 * 1024, repeats=2)
    assert link.rtt_s > 0 and link.up_bps > 1e6 and link.down_bps > 1e6  # loopback: far above 1 Mbit/s


class RelayHandler(EchoHandler):
    """Speaks for an upstream (1 ms round trip, 1 Gbit/s); while ``down`` the upstream does not answer."""

    def __init__(self) -> None:
        self.down = False
        self.forwarded: list[tuple[int, float]] = []  # (bytes, seconds left before the caller's deadline)

    def describe_upstream(self, deadline: float) -> Description:
        if self.down:
            raise PeerUnavailable("upstream 127.0.0.1:9 unavailable: connection refused")
        return Description("cloud", "fp", 10, [1, 2], ["lossless"], "cloud[0:]")

    def probe_upstream(self, send_nbytes: int, deadline: float) -> float:
        if self.down:
            raise PeerUnavailable("upstream 127.0.0.1:9 unavailable: connection refused")
        self.forwarded.append((send_nbytes, deadline - time.monotonic()))
        return 1e-3 + 8 * send_nbytes / 1e9


def test_a_relaying_agent_describes_and_probes_its_upstream_for_the_caller() -> None:
    handler = RelayHandler()
    server = AgentServer(handler, address="127.0.0.1:0", limits=LIMITS)
    server.start()
    try:
        with PeerClient(server.address, limits=LIMITS) as c:
            d = c.describe("fp", "device", with_upstream=True)
            assert d.role == "cloud" and d.upstream_description is not None and d.upstream_description.plan == "cloud[0:]"
            assert d.upstream_error == "" and c.describe("fp", "device").upstream_description is None  # only if asked
            assert c.probe_upstream(send_nbytes=125_000, timeout_s=2.0) == pytest.approx(2e-3)
            assert handler.forwarded[-1][0] == 125_000 and 0 < handler.forwarded[-1][1] < 2.1  # the caller's deadline
            for n in (8 << 20, -1):  # a probe, not a way to make this agent send a message-limit's worth upstream
                with pytest.raises(RemoteError) as err:
                    c.probe_upstream(send_nbytes=n)
                assert err.value.code == "RESOURCE_EXHAUSTED" and f"forward_send_nbytes {n} outside" in err.value.details
            handler.down = True
            d = c.describe("fp", "device", with_upstream=True)  # the agent still answers for itself
            assert d.role == "cloud" and d.upstream_description is None and "connection refused" in d.upstream_error
            with pytest.raises(PeerUnavailable, match="connection refused"):
                c.probe_upstream(timeout_s=2.0)
            handler.down = False
            assert c.probe_upstream(timeout_s=2.0) == pytest.approx(1e-3)  # and keeps serving
    finally:
        server.stop(0).wait(5)


def test_an_agent_that_relays_nothing_says_so(client: PeerClient) -> None:
    with pytest.raises(RemoteError) as err:
        client.probe_upstream(send_nbytes=10)
    assert err.value.code == "FAILED_PRECONDITION" and "does not forward probes" in err.value.details
    d = client.describe("fp", "device", with_upstream=True)
    assert d.upstream_description is None and "does not speak for an upstream" in d.upstream_error


def test_generated_stub_is_a_standard_client(server: AgentServer) -> None:
    with grpc.insecure_channel(server.address) as ch:
        stub = agent_pb2_grpc.AgentStub(ch)
        req = pb.InferRequest(id="std", model_fingerprint="fp", start=3, raw_input_contents=[b"hello"])
        t = req.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        t.parameters["codec"].string_param = "lossless"
        resp = stub.Infer(req, timeout=5)
        assert resp.id == "std" and list(resp.raw_output_contents) == [b"hello"]
        assert resp.breakdown.tiers[0].tier == "cloud"
        assert stub.Describe(pb.DescribeRequest(), timeout=5).model_fingerprint == "fp"


def test_health_from_the_standard_client(server: AgentServer) -> None:
    with grpc.insecure_channel(server.address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for name in ("", SERVICE_NAME):
            status = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        server.set_serving(False)
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            server.set_serving(True)


def test_reflection_lists_and_describes_the_service(server: AgentServer) -> None:
    with grpc.insecure_channel(server.address) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        resp = next(iter(stub.ServerReflectionInfo(iter([req]), timeout=5)))
        names = {s.name for s in resp.list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
        db = ProtoReflectionDescriptorDatabase(ch)
        service = db.FindFileContainingSymbol(SERVICE_NAME)
        assert "Infer" in {m.name for s in service.service for m in s.method}


def test_unreachable_peer_is_peer_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with PeerClient(f"127.0.0.1:{port}") as c:
        with pytest.raises(PeerUnavailable):
            c.infer(_call(), timeout_s=2)
        with pytest.raises(PeerUnavailable, match="not reachable"):
            c.wait_ready(0.2)


def test_keepalive_options_agree() -> None:
    ka = Keepalive(time_s=20, timeout_s=5, permit_without_calls=True)
    client = dict(channel_options(LIMITS, ka))
    server = dict(server_options(LIMITS, ka))
    assert server["grpc.http2.min_recv_ping_interval_without_data_ms"] <= client["grpc.keepalive_time_ms"]
    assert server["grpc.keepalive_permit_without_calls"] == client["grpc.keepalive_permit_without_calls"] == 1
    for side in (client, server):
        assert side["grpc.max_receive_message_length"] == side["grpc.max_send_message_length"] == LIMITS.max_message_bytes


def test_long_status_messages_are_cut_to_fit_a_header(client: PeerClient) -> None:
    with pytest.raises(RemoteError) as err:
        client.infer(_call("fail:long"), timeout_s=5)
    assert err.value.code == "INVALID_ARGUMENT"  # not RESOURCE_EXHAUSTED for an 8 KiB header block
    assert 2000 < len(err.value.details) < 2200 and err.value.details.endswith("more characters)")
