"""Failures upstream: a tier finishes the model itself (and says so); a request id seen twice is computed once; the
agent counts both, and requests shed, in Describe."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import pytest
import torch

from edgeflow.agent import Agent, DeviceClient, ModelRuntime
from edgeflow.agent.failover import FALLBACK_CODES, failure_kind, latency_target_s, reserve_s, stall_after_s, upstream_deadline
from edgeflow.agent.replay import ReplyCache
from edgeflow.core.codecs import get_codec
from edgeflow.errors import DeadlineExceeded, PeerUnavailable
from edgeflow.testing.threads import in_thread
from edgeflow.transport import (
    Breakdown,
    Counters,
    FingerprintMismatch,
    InferCall,
    InferReply,
    LoopbackClient,
    RangeProfile,
    RemoteError,
    WireTensor,
)
from edgeflow.transport.messages import (
    WireLimits,
    decode_description,
    decode_reply,
    encode_description,
    encode_reply,
)

EXIT_AT = 20  # where the conftest's runtime has its exit head (after layer1)
ChainFactory = Callable[..., list[Agent]]
SPLIT = "device[0:13]|lossless > cloud[13:]"


def _x(batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _reference(runtime: ModelRuntime, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return runtime.model(x)


class _BrokenPeer:
    """Wraps a peer: Describe works, Infer fails with ``error`` (after sleeping ``stall_s``, capped by the call's
    timeout, as a stalled peer would)."""

    def __init__(self, peer: Any, error: Exception, stall_s: float = 0.0):
        self.peer, self.error, self.stall_s = peer, error, stall_s
        self.address = peer.address
        self.timeouts: list[float] = []

    def describe(self, *args: Any, **kwargs: Any) -> Any:
        return self.peer.describe(*args, **kwargs)

    def infer_bytes(self, request: bytes, *, timeout_s: float, wait_for_ready: bool = False) -> InferReply:
        self.timeouts.append(timeout_s)
        if self.stall_s:
            time.sleep(min(self.stall_s, timeout_s))
        raise self.error

    def close(self) -> None:
        self.peer.close()


def _break(agent: Agent, error: Exception, stall_s: float = 0.0) -> _BrokenPeer:
    assert agent.upstream is not None
    broken = _BrokenPeer(agent.upstream.peer, error, stall_s)
    agent.upstream.peer = broken
    return broken


# ------------------------------------------------------------------------------------------- fallback
@pytest.mark.parametrize(
    "error",
    [PeerUnavailable("peer cloud-loopback: connection refused"), DeadlineExceeded("peer cloud-loopback: deadline"),
     *[RemoteError(code, "boom", "cloud-loopback") for code in sorted(FALLBACK_CODES)]],  # fmt: skip
    ids=lambda e: type(e).__name__ + getattr(e, "code", ""),
)
def test_device_finishes_when_the_upstream_fails(chain: ChainFactory, runtime: ModelRuntime, error: Exception) -> None:
    device, _ = chain(SPLIT)
    _break(device, error)
    x = _x(2)
    r = DeviceClient(device).infer(x)
    assert torch.equal(r.output, _reference(runtime, x))  # lossless: the same as the unsplit model
    b = r.breakdown
    assert b.answered_by == "device" and b.fallback_tier == "device"
    assert b.fallback.startswith("device: upstream cloud at cloud-loopback ") and "finished [13:70] locally" in b.fallback
    (t,) = b.tiers
    assert (t.start, t.stop, t.bytes_out, t.bytes_back) == (0, 70, 0, 0)
    assert device.fallbacks == 1 and device.last_fallback == b.fallback


@pytest.mark.parametrize(
    "error", [RemoteError("INVALID_ARGUMENT", "bad", "x"), RemoteError("FAILED_PRECONDITION", "other model", "x"),
              RemoteError("UNAUTHENTICATED", "no token", "x"), FingerprintMismatch("other model")],  # fmt: skip
    ids=lambda e: getattr(e, "code", type(e).__name__),
)
def test_bugs_are_not_covered_by_a_fallback(chain: ChainFactory, error: Exception) -> None:
    device, _ = chain(SPLIT)
    _break(device, error)
    with pytest.raises(type(error)):
        DeviceClient(device).infer(_x())
    assert device.fallbacks == 0


def test_fallback_can_be_turned_off(chain: ChainFactory) -> None:
    device, _ = chain(SPLIT, fallback={"enabled": False})
    _break(device, PeerUnavailable("down"))
    with pytest.raises(PeerUnavailable):
        DeviceClient(device).infer(_x())


def test_edge_finishes_when_the_cloud_fails_and_the_reply_says_so(chain: ChainFactory, runtime: ModelRuntime) -> None:
    device, edge, _ = chain("device[0:13]|lossless > edge[13:36]|lossless > cloud[36:]")
    _break(edge, PeerUnavailable("peer cloud-loopback: connection refused"))
    x = _x()
    r = DeviceClient(device).infer(x)
    assert torch.equal(r.output, _reference(runtime, x))
    assert [(t.tier, t.start, t.stop) for t in r.breakdown.tiers] == [("device", 0, 13), ("edge", 13, 70)]
    assert r.answered_by == "edge" and r.breakdown.fallback.startswith("edge: upstream cloud")
    assert edge.fallbacks == 1 and device.fallbacks == 0
    assert r.breakdown.tiers[0].bytes_out > 0  # the device's hop worked


def test_relaying_tier_decodes_and_finishes(chain: ChainFactory, runtime: ModelRuntime) -> None:
    device, edge, _ = chain(SPLIT, roles=("device", "edge", "cloud"))  # the edge only relays
    _break(edge, PeerUnavailable("down"))
    x = _x()
    r = DeviceClient(device).infer(x)
    assert torch.equal(r.output, _reference(runtime, x))
    assert [(t.tier, t.start, t.stop) for t in r.breakdown.tiers] == [("device", 0, 13), ("edge", 13, 70)]
    assert "finished [13:70] locally" in r.breakdown.fallback


def test_fallback_evaluates_the_plan_exits(chain: ChainFactory) -> None:
    device, _ = chain(f"device[0:13]|lossless > cloud[13:]  exits@{EXIT_AT}:0.9")  # the confident head at 20
    _break(device, PeerUnavailable("down"))
    r = DeviceClient(device).infer(_x())
    assert r.exit_position == EXIT_AT and r.breakdown.tiers[0].stop == EXIT_AT
    assert f"finished [13:{EXIT_AT}] locally" in r.breakdown.fallback


def test_stalled_peer_leaves_time_to_finish_here(chain: ChainFactory, runtime: ModelRuntime) -> None:
    device, _ = chain(SPLIT, fallback={"local_margin_s": 0.3})
    broken = _break(device, DeadlineExceeded("peer cloud-loopback: deadline exceeded"), stall_s=60.0)
    x = _x()
    r = DeviceClient(device).infer(x, timeout_s=2.0)  # raises DeadlineExceeded if the stall took it all
    assert torch.equal(r.output, _reference(runtime, x)) and r.breakdown.fallback
    assert broken.timeouts and broken.timeouts[0] <= 2.0 - 0.3  # the upstream got the deadline less the reserve


def test_reserve_counts_the_rest_of_the_model() -> None:
    profile = [RangeProfile(0, 10, 1.0), RangeProfile(10, 20, 2.0), RangeProfile(20, 30, 4.0)]
    assert reserve_s(profile, 10, safety_factor=2.0, margin_s=0.5) == pytest.approx(2 * 6.0 + 0.5)
    assert reserve_s(profile, 15, safety_factor=1.0, margin_s=0.0) == pytest.approx(1.0 + 4.0)
    assert reserve_s(profile, 30, safety_factor=2.0, margin_s=0.1) == pytest.approx(0.1)
    assert reserve_s([], 0, safety_factor=2.0, margin_s=0.1) == pytest.approx(0.1)


def test_upstream_deadline_keeps_the_reserve_only_when_it_can() -> None:
    assert upstream_deadline(10.0, 3.0, now=5.0) == 7.0
    assert upstream_deadline(10.0, 6.0, now=5.0) == 10.0  # finishing here would be late anyway: try upstream


def test_latency_target_comes_from_fallback_then_the_planner() -> None:
    from edgeflow.config import FallbackConfig

    assert latency_target_s(FallbackConfig(), None) is None
    assert latency_target_s(FallbackConfig(), 400.0) == pytest.approx(0.4)
    assert latency_target_s(FallbackConfig(slo_ms=250.0), 400.0) == pytest.approx(0.25)
    assert latency_target_s(FallbackConfig(enabled=False, slo_ms=250.0), 400.0) is None


def test_stall_time_is_a_multiple_of_the_prediction_with_a_floor() -> None:
    from edgeflow.config import FallbackConfig

    assert stall_after_s(FallbackConfig(), None) is None  # no live planner, no prediction: the deadline rules
    assert stall_after_s(FallbackConfig(), 0.010) == pytest.approx(0.2)  # 4 x 10 ms is under the 200 ms floor
    assert stall_after_s(FallbackConfig(), 0.250) == pytest.approx(1.0)
    assert stall_after_s(FallbackConfig(stall_factor=2.0, stall_min_ms=50.0), 0.1) == pytest.approx(0.2)
    assert stall_after_s(FallbackConfig(stall_factor=0.0), 0.250) is None
    assert stall_after_s(FallbackConfig(enabled=False), 0.250) is None


def test_failure_kinds() -> None:
    assert failure_kind(PeerUnavailable("x")) == "unavailable"
    assert failure_kind(DeadlineExceeded("x")) == "did not answer in time"
    assert failure_kind(RemoteError("RESOURCE_EXHAUSTED", "full")) == "answered RESOURCE_EXHAUSTED"
    assert failure_kind(RemoteError("INVALID_ARGUMENT", "bad")) is None
    assert failure_kind(FingerprintMismatch("x")) is None


def test_breakdown_fallback_travels_on_the_wire() -> None:
    reply = InferReply("r", "fp", 3, [], Breakdown([], "edge", -1, 0.0, "edge: upstream cloud at a:1 unavailable: x"))
    back = decode_reply(encode_reply(reply), WireLimits())
    assert back.breakdown.fallback == reply.breakdown.fallback and back.breakdown.fallback_tier == "edge"
    assert Breakdown().fallback == "" and Breakdown().to_json()["fallback"] == ""


# ------------------------------------------------------------------------------------------- duplicates
def _call(runtime: ModelRuntime, request_id: str = "dup-1", seed: int = 1, start: int = 0) -> InferCall:
    x = _x(seed=seed)
    codec = get_codec("lossless")
    return InferCall(request_id, runtime.fingerprint, start, [WireTensor("x", "FP32", tuple(x.shape), "lossless",
                                                                       codec.encode(x))])  # fmt: skip


def _count_serves(agent: Agent, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    served: list[str] = []
    real = agent._serve

    def serve(call: InferCall, deadline: float) -> InferReply:
        served.append(call.request_id)
        return real(call, deadline)

    monkeypatch.setattr(agent, "_serve", serve)
    return served


def test_duplicate_request_is_computed_once(chain: ChainFactory, runtime: ModelRuntime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (cloud,) = chain("cloud[0:]")
    served = _count_serves(cloud, monkeypatch)
    peer = LoopbackClient(cloud)
    first = peer.infer(_call(runtime), timeout_s=10)
    again = peer.infer(_call(runtime), timeout_s=10)
    assert served == ["dup-1"] and cloud.duplicates_served == 1
    assert encode_reply(first) == encode_reply(again)  # the same bytes, timings included
    peer.infer(_call(runtime, "dup-2"), timeout_s=10)  # another id: computed
    assert served == ["dup-1", "dup-2"]


def test_concurrent_duplicates_share_one_compute(chain: ChainFactory, runtime: ModelRuntime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (cloud,) = chain("cloud[0:]")
    served: list[str] = []
    real = cloud._serve

    def serve(call: InferCall, deadline: float) -> InferReply:  # the first copy computes until the others wait on it
        served.append(call.request_id)
        for _ in range(1000):
            if cloud.duplicates_served == 3:
                break
            time.sleep(0.01)
        return real(call, deadline)

    monkeypatch.setattr(cloud, "_serve", serve)
    sends = [in_thread(lambda: encode_reply(LoopbackClient(cloud).infer(_call(runtime, "dup-c"), timeout_s=30)))
             for _ in range(4)]  # fmt: skip
    for t, _ in sends:
        t.join(timeout=60)
    replies = [out[0] for _, out in sends if out]
    assert len(replies) == 4 and len(set(replies)) == 1
    assert served == ["dup-c"] and cloud.duplicates_served == 3


def test_legs_of_one_request_do_not_collide(chain: ChainFactory, runtime: ModelRuntime) -> None:
    device, cloud = chain(SPLIT)
    r = DeviceClient(device).infer(_x())  # reaches the cloud at position 13
    assert r.answered_by == "cloud"
    reply = LoopbackClient(cloud).infer(_call(runtime, r.request_id), timeout_s=10)  # the same id, at position 0
    assert reply.breakdown.tiers[0].start == 0 and cloud.duplicates_served == 0


def test_failed_request_is_not_remembered(chain: ChainFactory, runtime: ModelRuntime, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (cloud,) = chain("cloud[0:]")
    real = cloud._serve
    calls: list[int] = []

    def flaky(call: InferCall, deadline: float) -> InferReply:
        calls.append(1)
        if len(calls) == 1:
            raise PeerUnavailable("transient")
        return real(call, deadline)

    monkeypatch.setattr(cloud, "_serve", flaky)
    with pytest.raises(PeerUnavailable):
        LoopbackClient(cloud).infer(_call(runtime), timeout_s=10)
    LoopbackClient(cloud).infer(_call(runtime), timeout_s=10)
    assert len(calls) == 2 and len(cloud.replies) == 1


def _reply(nbytes: int) -> InferReply:
    return InferReply("r", "fp", 1, [WireTensor("y", "UINT8", (nbytes,), "lossless", bytes(nbytes))])


def test_reply_cache_is_bounded() -> None:
    now = [0.0]
    cache = ReplyCache(max_entries=2, max_nbytes=100, ttl_s=10.0, clock=lambda: now[0])
    for k in "abc":
        cache.run(k, lambda: _reply(10), deadline=time.monotonic() + 5)
    assert len(cache) == 2 and cache.nbytes == 20  # "a" dropped, oldest first
    cache.run("big", lambda: _reply(200), deadline=time.monotonic() + 5)
    assert "big" not in cache._entries and cache.nbytes == 20  # answered, not kept
    now[0] = 11.0
    cache.run("d", lambda: _reply(10), deadline=time.monotonic() + 5)
    assert list(cache._entries) == ["d"] and cache.nbytes == 10  # the others expired
    assert cache.run(None, lambda: _reply(1), deadline=0.0).tensors[0].shape == (1,)  # no id: not kept
    assert len(cache) == 1 and cache.duplicates == 0


def test_same_id_with_other_inputs_is_not_a_duplicate(chain: ChainFactory, runtime: ModelRuntime) -> None:
    (cloud,) = chain("cloud[0:]")
    peer = LoopbackClient(cloud)
    a = peer.infer(_call(runtime, "same-id", seed=1), timeout_s=10)
    b = peer.infer(_call(runtime, "same-id", seed=2), timeout_s=10)  # same id, same sizes, other pixels
    assert cloud.duplicates_served == 0 and a.tensors[0].payload != b.tensors[0].payload


# ------------------------------------------------------------------------------------------- counters
def test_describe_counts_fallbacks(chain: ChainFactory) -> None:
    device, edge, cloud = chain("device[0:13]|lossless > edge[13:36]|lossless > cloud[36:]")
    _break(edge, PeerUnavailable("peer cloud-loopback: connection refused"))
    r = DeviceClient(device).infer(_x())
    c = decode_description(encode_description(edge.describe())).counters  # as a Describe caller reads them
    assert c.fallbacks >= 1 and c.last_fallback == r.breakdown.fallback and c.last_fallback.startswith("edge: ")
    assert (c.requests, c.duplicates_served, c.shed) == (1, 0, 0)
    assert device.describe().counters == Counters(requests=1)  # its hop worked: no fallback of its own
    assert cloud.describe().counters == Counters()  # never reached


def test_describe_counts_duplicates_served(chain: ChainFactory, runtime: ModelRuntime) -> None:
    (cloud,) = chain("cloud[0:]")
    peer = LoopbackClient(cloud)
    peer.infer(_call(runtime), timeout_s=10)
    assert cloud.describe().counters == Counters(requests=1)
    peer.infer(_call(runtime), timeout_s=10)  # the same id and inputs: served from the reply cache
    assert cloud.describe().counters == Counters(requests=2, duplicates_served=1)


def test_describe_counts_requests_shed(chain: ChainFactory, runtime: ModelRuntime) -> None:
    (cloud,) = chain("cloud[0:]", queues={"compute": 1})
    gate = threading.Event()
    deadline = time.monotonic() + 30
    holders = [in_thread(lambda: cloud.compute.run(lambda: gate.wait(30), deadline)) for _ in range(2)]
    for _ in range(3000):  # one computes, one waits: the queue is full
        if cloud.compute.queued == 1:
            break
        time.sleep(0.01)
    try:
        with pytest.raises(RemoteError) as e:
            LoopbackClient(cloud).infer(_call(runtime), timeout_s=10)
        assert e.value.code == "RESOURCE_EXHAUSTED"
    finally:
        gate.set()
        for t, _ in holders:
            t.join(30)
    LoopbackClient(cloud).infer(_call(runtime, "after"), timeout_s=10)  # room again: served, not shed
    assert cloud.describe().counters == Counters(requests=2, shed=1)
