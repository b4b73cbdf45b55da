"""Issue 17 item 1: stream frames through real agent processes — residual hops, resync statuses, caller isolation."""

from __future__ import annotations

import time

import grpc
import pytest
import torch
import yaml

from edgeflow.agent import AgentClient, DeviceClient
from edgeflow.agent.streams import StreamRef, StreamSender
from edgeflow.config import StreamsConfig
from edgeflow.core.codecs import decode, get_codec
from edgeflow.errors import RemoteError, StreamRejected
from edgeflow.transport import SERVICE_NAME, InferCall, WireLimits
from edgeflow.transport.messages import decode_reply, encode_request

PLAN = "device[0:20]|lossless > edge[20:52]|lossless > cloud[52:]"
CALL_TIMEOUT_S = 60.0  # a bound for the test, not a timing assertion


def _video(n: int, seed: int = 0, moving: bool = False) -> list[torch.Tensor]:
    """Demo-sized frames: a fixed background with an 8x8 patch, still or moving 4 pixels a frame."""
    bg = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
    frames = []
    for k in range(n):
        x = bg.clone()
        c = 4 * k if moving else 8
        x[:, :, 20:28, c : c + 8] = torch.tensor([1.0, 0.2, 0.1]).view(1, 3, 1, 1)
        frames.append(x)
    return frames


def _ref(runtime, x):  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return runtime.model(x)


def test_a_stream_through_edge_and_cloud_processes_is_bit_exact_and_sends_residuals(edge, runtime, make_device_config) -> None:  # type: ignore[no-untyped-def]
    frames = _video(4) + _video(3, moving=True)
    with DeviceClient.from_config(make_device_config(edge.address, PLAN)) as device:
        results = [device.infer(x, stream="cam", frame=k) for k, x in enumerate(frames)]
        with pytest.raises(StreamRejected, match="frame 2 was already received"):
            device.infer(frames[2], stream="cam", frame=2)
        assert device.infer(frames[0], stream="cam", frame=7).answered_by == "cloud"  # and it keeps serving
    for x, r in zip(frames, results):
        assert torch.equal(r.output, _ref(runtime, x))
        assert not r.breakdown.fallback
    hops = [r.breakdown.stream_delta_hops for r in results]
    assert hops[:4] == [0, 2, 2, 2]  # a still scene: both hops send residuals after the key frame
    sent = [r.breakdown.tiers[0].bytes_out for r in results]
    assert max(sent[1:4]) * 5 < sent[0]  # still frames cost a fraction of the key frame on the device's hop
    assert all(r.breakdown.stream_saved_bytes > 0 for r in results[1:4])


def _own_connection(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])  # a TCP connection each


def _coded(runtime, frames: list[torch.Tensor], first: int = 0):  # type: ignore[no-untyped-def]
    """Frames coded for the hop into the edge by a sender of our own, as a device would."""
    sender = StreamSender(StreamsConfig())
    names = [i.name for i in runtime.cut_info(20).tensors]
    return [sender.encode(StreamRef("me", "s", k), 20, PLAN, names, runtime.run(0, 20, [x]).values,
                          get_codec("lossless")) for k, x in enumerate(frames, start=first)]  # fmt: skip


def _send(ch: grpc.Channel, runtime, coded, frame: int, stream: str = "shared-id"):  # type: ignore[no-untyped-def]
    call = InferCall(f"{stream}-{frame}-{time.monotonic_ns()}", runtime.fingerprint, 20, coded.wire, plan=PLAN,
                     stream=stream, frame=frame)  # fmt: skip
    raw = ch.unary_unary(f"/{SERVICE_NAME}/Infer")(encode_request(call), timeout=CALL_TIMEOUT_S)
    reply = decode_reply(raw, WireLimits())
    return decode(reply.tensors[0].payload)


def _refused(ch, runtime, coded, frame: int, match: str, stream: str = "shared-id") -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        _send(ch, runtime, coded, frame, stream)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION, e.value.details()
    assert match in (e.value.details() or ""), e.value.details()
    return e.value.details() or ""


def test_an_edge_process_refuses_lost_duplicate_reshaped_and_foreign_frames_and_keeps_each_callers_state(edge, runtime) -> None:  # type: ignore[no-untyped-def]
    frames = _video(5)
    coded = _coded(runtime, frames)
    assert not coded[0].delta and all(c.delta for c in coded[1:])
    a, b = _own_connection(edge.address), _own_connection(edge.address)
    try:
        assert torch.equal(_send(a, runtime, coded[0], 0), _ref(runtime, frames[0]))
        said = _refused(a, runtime, coded[2], 2, "expected a residual against frame 0, got frame 2 against frame 1")
        assert said.endswith("send a key frame")  # frame 1 was lost: the sender is told what to do
        assert torch.equal(_send(a, runtime, coded[2].as_key(), 2), _ref(runtime, frames[2]))
        _refused(a, runtime, coded[2].as_key(), 2, "frame 2 was already received")  # a duplicate
        # another caller naming the same stream id reaches nothing of the first's, and cannot disturb it
        _refused(b, runtime, coded[3], 3, "holds no state for the stream")
        assert torch.equal(_send(b, runtime, _coded(runtime, frames[:1], first=9)[0], 9), _ref(runtime, frames[0]))
        assert torch.equal(_send(a, runtime, coded[3], 3), _ref(runtime, frames[3]))  # its own residual applies
        twice = _coded(runtime, [torch.cat([f, f]) for f in frames[3:5]], first=3)  # batch 2 from here on
        _refused(a, runtime, twice[1], 4, "shape changed")
        assert torch.equal(_send(a, runtime, coded[4], 4), _ref(runtime, frames[4]))  # the refusal changed nothing
    finally:
        a.close()
        b.close()


@pytest.fixture(scope="module")
def forgetful_edge(tmp_path_factory, tools, cloud):  # type: ignore[no-untyped-def]
    """An edge process that keeps the state of one stream only."""
    d = tmp_path_factory.mktemp("streams")
    node = yaml.safe_load((tools.NODES / "edge.yaml").read_text())
    node["streams"] = {"max_streams": 1}
    (d / "edge.yaml").write_text(yaml.safe_dump(node))
    agent = tools.AgentProcess(d / "edge.yaml", upstream=cloud.address, plan=PLAN)
    yield agent
    assert agent.stop() == 0, agent.log


def test_evicted_streams_get_the_resync_status_and_a_device_process_recovers(forgetful_edge, tools, runtime) -> None:  # type: ignore[no-untyped-def]
    device = tools.AgentProcess("device", upstream=forgetful_edge.address, plan=PLAN)
    try:
        a, b = _video(4, seed=1), _video(4, seed=2)
        with AgentClient(device.address) as client:
            for k in range(4):
                for name, frames in (("a", a), ("b", b)):  # interleaved: each evicts the other at the edge
                    r = client.infer(frames[k], stream=name, frame=k)
                    assert torch.equal(r.output, _ref(runtime, frames[k]))
                    if k:  # the device sent a residual, was told the edge had evicted the stream, sent a key frame
                        assert r.breakdown.stream_saved_bytes < 0 and r.breakdown.stream_delta_hops == 0
            with pytest.raises(RemoteError) as e:
                client.infer(a[3], stream="a", frame=3)
            assert e.value.code == "FAILED_PRECONDITION" and "already received" in e.value.details
            r = client.infer(a[3], stream="solo", frame=0)
            r = client.infer(a[3], stream="solo", frame=1)  # one stream fits: residuals again on both hops
            assert r.breakdown.stream_delta_hops == 2 and torch.equal(r.output, _ref(runtime, a[3]))
        assert "Traceback" not in device.log
    finally:
        assert device.stop() == 0, device.log
