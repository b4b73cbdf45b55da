"""Issue 14 item 2: idle InferStreams cannot lock health and Describe out, and are ended (real agent process)."""

from __future__ import annotations

import threading

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgeflow.transport import SERVICE_NAME
from edgeflow.transport._gen import agent_pb2 as pb

STREAMS_PER_CHANNEL = 40  # more than the 16 inference slots and the 8-stream cap of one connection
CALL_TIMEOUT_S = 120.0  # a bound for the test, not a timing assertion: idle streams are ended long before


@pytest.fixture(scope="module")
def strict_cloud(tmp_path_factory, tools):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("idle")
    node = yaml.safe_load((tools.NODES / "cloud.yaml").read_text())
    node.setdefault("deadlines", {})["stream_idle_s"] = 2.0
    node.setdefault("queues", {}).update(workers=16, streams_per_peer=8)
    (d / "cloud.yaml").write_text(yaml.safe_dump(node))
    agent = tools.AgentProcess(d / "cloud.yaml", plan=tools.LOSSLESS_PLAN)
    yield agent
    assert agent.stop() == 0, agent.log


def _own_connection(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])  # a TCP connection each


def _open_idle_streams(ch: grpc.Channel, release: threading.Event) -> list[grpc.Future]:
    def nothing():  # type: ignore[no-untyped-def]
        release.wait(CALL_TIMEOUT_S)  # sends no request until the test ends
        return
        yield b""  # pragma: no cover

    stream = ch.stream_stream(f"/{SERVICE_NAME}/InferStream")
    return [stream(nothing(), timeout=CALL_TIMEOUT_S) for _ in range(STREAMS_PER_CHANNEL)]


def test_idle_streams_leave_health_and_describe_reachable_and_are_ended(strict_cloud, runtime, images) -> None:  # type: ignore[no-untyped-def]
    from edgeflow.agent.client import AgentClient

    release = threading.Event()
    channels = [_own_connection(strict_cloud.address) for _ in range(3)]  # 3 x 8 streams > 16 slots
    try:
        calls = [c for ch in channels for c in _open_idle_streams(ch, release)]
        with grpc.insecure_channel(strict_cloud.address) as ch:
            health = health_pb2_grpc.HealthStub(ch)
            describe = ch.unary_unary(f"/{SERVICE_NAME}/Describe")
            for _ in range(20):  # while the streams are open: never RESOURCE_EXHAUSTED
                for service in ("", SERVICE_NAME):
                    reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT_S)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                raw = describe(pb.DescribeRequest().SerializeToString(), timeout=CALL_TIMEOUT_S)
                assert pb.DescribeResponse.FromString(raw).model_fingerprint == runtime.fingerprint
        codes: dict[str, int] = {}
        for call in calls:  # each ends: refused at once (per-connection cap or slots) or ended as idle
            code, details = call.code(), call.details() or ""
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                assert "idle" in details, details
                key = "idle"
            else:
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
                assert "streams_per_peer" in details or "inference slots" in details, details
                key = "streams_per_peer" if "streams_per_peer" in details else "slots"
            codes[key] = codes.get(key, 0) + 1
        assert codes.get("idle", 0) >= 8 and codes.get("streams_per_peer", 0) >= 1, codes
        assert sum(codes.values()) == 3 * STREAMS_PER_CHANNEL
    finally:
        release.set()
        for ch in channels:
            ch.close()
    with AgentClient(strict_cloud.address) as client:  # and the agent still serves inference
        assert client.infer(images[0]).answered_by == "cloud"
