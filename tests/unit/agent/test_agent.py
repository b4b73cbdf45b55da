"""Agent chains in one process: equivalence with the unsplit model, exits, relays, bad input, lifecycle."""

from __future__ import annotations

import time
from typing import Callable

import pytest
import torch

from edgeflow.agent import Agent, DeviceClient, ModelRuntime, Upstream
from edgeflow.core.codecs import get_codec
from edgeflow.errors import DeadlineExceeded, PeerUnavailable
from edgeflow.transport import (
    FingerprintMismatch,
    InferCall,
    LoopbackClient,
    RemoteError,
    ShuttingDown,
    WireTensor,
    datatype_of,
)
from edgeflow.transport.messages import decode_reply, encode_reply

ChainFactory = Callable[..., list[Agent]]
EXIT_AT = 20  # where the conftest's runtime has its exit head (after layer1)


def _x(batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _reference(runtime: ModelRuntime, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return runtime.model(x)


@pytest.mark.parametrize(
    "plan",
    [
        "device[0:13]|lossless > cloud[13:]",
        "device[0:7]|lossless > edge[7:36]|lossless > cloud[36:]",  # a cut with two live tensors (skip)
        "cloud[0:]",
        "device[0:]",
    ],
)
def test_lossless_chain_is_bit_exact(chain: ChainFactory, runtime: ModelRuntime, plan: str) -> None:
    agents = chain(plan)
    device = DeviceClient(agents[0])
    x = _x(2)
    result = device.infer(x)
    assert torch.equal(result.output, _reference(runtime, x))
    assert [t.tier for t in result.breakdown.tiers] == [a.role for a in agents]
    assert result.answered_by == agents[-1].role and result.exit_position == -1


def test_lossy_chain_stays_close(chain: ChainFactory, runtime: ModelRuntime) -> None:
    agents = chain("device[0:13]|int8 > edge[13:36]|int8 > cloud[36:]")
    x = _x(4)
    out = DeviceClient(agents[0]).infer(x).output
    ref = _reference(runtime, x)
    assert not torch.equal(out, ref)
    assert (out - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3
    assert torch.equal(out.argmax(1), ref.argmax(1))


def test_breakdown_counts_bytes_and_time_per_hop(chain: ChainFactory) -> None:
    dev, edge, cloud = chain("device[0:13]|int8 > edge[13:36]|lossless > cloud[36:]")
    r = DeviceClient(dev).infer(_x())
    d, e, c = r.breakdown.tiers
    assert (d.start, d.stop, e.start, e.stop, c.start, c.stop) == (0, 13, 13, 36, 36, 70)
    assert d.bytes_out == e.bytes_in > 0 and e.bytes_out == c.bytes_in > 0
    assert d.bytes_back > e.bytes_back > 0 and c.bytes_out == 0  # the breakdown grows on the way down
    assert all(t.compute_s > 0 and t.total_s >= t.compute_s for t in (d, e, c))
    assert d.total_s >= e.total_s >= c.total_s
    assert r.latency_s >= d.total_s


def test_confident_exit_answers_on_the_device(chain: ChainFactory, runtime: ModelRuntime) -> None:
    agents = chain(f"device[0:30]|int8 > cloud[30:]  exits@{EXIT_AT}:0.9")
    r = DeviceClient(agents[0]).infer(_x(2))
    assert r.answered_by == "device" and r.exit_position == EXIT_AT and r.breakdown.exit_confidence > 0.99
    assert r.output.argmax(1).tolist() == [3, 3]
    assert len(r.breakdown.tiers) == 1 and r.breakdown.tiers[0].bytes_out == 0


def test_unconfident_exit_continues_upstream(chain: ChainFactory, runtime: ModelRuntime, make_head) -> None:  # type: ignore[no-untyped-def]
    info = runtime.cut_info(EXIT_AT)
    saved = runtime.exits[EXIT_AT]
    runtime.exits[EXIT_AT] = make_head(info.tensors[info.primary].shape[1], 3, confident=False)
    try:
        agents = chain(f"device[0:30]|lossless > cloud[30:]  exits@{EXIT_AT}:0.5")
        x = _x()
        r = DeviceClient(agents[0]).infer(x)
        assert r.answered_by == "cloud" and r.exit_position == -1
        assert torch.equal(r.output, _reference(runtime, x))
    finally:
        runtime.exits[EXIT_AT] = saved


def test_exit_evaluated_by_the_tier_that_reaches_it(chain: ChainFactory) -> None:
    agents = chain(f"device[0:13]|lossless > edge[13:36]|lossless > cloud[36:]  exits@{EXIT_AT}:0.9")
    r = DeviceClient(agents[0]).infer(_x())
    assert r.answered_by == "edge" and r.exit_position == EXIT_AT
    assert [t.tier for t in r.breakdown.tiers] == ["device", "edge"]


def test_tier_absent_from_the_plan_relays_untouched(chain: ChainFactory, runtime: ModelRuntime) -> None:
    agents = chain("device[0:13]|lossless > cloud[13:]", roles=("device", "edge", "cloud"))
    x = _x()
    r = DeviceClient(agents[0]).infer(x)
    assert torch.equal(r.output, _reference(runtime, x))
    edge = r.breakdown.tiers[1]
    assert edge.tier == "edge" and edge.start == edge.stop == 13 and edge.compute_s == 0


def test_range_call_returns_the_values_at_stop(chain: ChainFactory, runtime: ModelRuntime) -> None:
    (cloud,) = chain("cloud[0:]")
    codec = get_codec("lossless")
    x = _x()
    call = InferCall("range", runtime.fingerprint, 0, [WireTensor("x", "FP32", (1, 3, 16, 16), "lossless", codec.encode(x))],
                     stop=7, output_codec="lossless")
    reply = LoopbackClient(cloud).infer(call, timeout_s=5)
    expected = runtime.partition.run_range(0, 7, x)
    from edgeflow.core.codecs import decode

    got = [decode(t.payload) for t in reply.tensors]
    assert reply.position == 7 and len(got) == 2
    assert all(torch.equal(g, e) for g, e in zip(got, expected))
    assert [t.name for t in reply.tensors] == [t.name for t in runtime.cut_info(7).tensors]


def test_pipelined_inputs_come_back_in_order(chain: ChainFactory, runtime: ModelRuntime) -> None:
    agents = chain("device[0:13]|lossless > edge[13:36]|lossless > cloud[36:]")
    xs = [_x(1, seed) for seed in range(12)]
    with DeviceClient(agents[0], max_inflight=3) as device:
        outs = [r.output for r in device.infer_many(xs)]
    assert all(torch.equal(o, _reference(runtime, x)) for o, x in zip(outs, xs))


# ------------------------------------------------------------------------------------------- bad input
def _valid_call(runtime: ModelRuntime, start: int = 13) -> InferCall:
    values = runtime.partition.run_range(0, start, _x())
    values = [values] if isinstance(values, torch.Tensor) else list(values)
    codec = get_codec("lossless")
    tensors = [
        WireTensor(i.name, datatype_of(i.dtype), tuple(v.shape), "lossless", codec.encode(v))
        for i, v in zip(runtime.cut_info(start).tensors, values)
    ]
    return InferCall("bad", runtime.fingerprint, start, tensors)


def _mutate(call: InferCall, **changes: object) -> InferCall:
    t = call.tensors[0]
    fields = {"name": t.name, "datatype": t.datatype, "shape": t.shape, "codec": t.codec, "payload": t.payload}
    fields.update(changes)
    call.tensors[0] = WireTensor(**fields)  # type: ignore[arg-type]
    return call


def _corrupt(payload: bytes, at: int) -> bytes:
    b = bytearray(payload)
    b[at] ^= 0xFF
    return bytes(b)


BAD = {
    "fingerprint": (lambda c, rt: setattr(c, "fingerprint", "0" * 32), "FAILED_PRECONDITION", "fingerprint mismatch"),
    "no fingerprint": (lambda c, rt: setattr(c, "fingerprint", ""), "FAILED_PRECONDITION", "carries none"),
    "position out of range": (lambda c, rt: setattr(c, "start", 999), "INVALID_ARGUMENT", "start position 999 out of range"),
    "position is the output": (lambda c, rt: setattr(c, "start", 70), "INVALID_ARGUMENT", "nothing left to run"),
    "tensor count": (lambda c, rt: c.tensors.pop(), "INVALID_ARGUMENT", "takes 1 tensors"),
    "name": (lambda c, rt: _mutate(c, name="nope"), "INVALID_ARGUMENT", "named 'nope'"),
    "dtype": (lambda c, rt: _mutate(c, datatype="FP64"), "INVALID_ARGUMENT", "datatype FP64, expected FP32"),
    "shape": (lambda c, rt: _mutate(c, shape=(1, 4, 5, 5)), "INVALID_ARGUMENT", "expected [B, 4, 4, 4]"),
    "rank": (lambda c, rt: _mutate(c, shape=(1, 4)), "INVALID_ARGUMENT", "expected rank 4"),
    "batch": (lambda c, rt: _mutate(c, shape=(9, 4, 4, 4)), "RESOURCE_EXHAUSTED", "batch 9, limit 8"),
    "unknown codec": (lambda c, rt: _mutate(c, codec="zip"), "INVALID_ARGUMENT", "unknown codec 'zip'"),
    "codec mismatch": (lambda c, rt: _mutate(c, codec="int8"), "INVALID_ARGUMENT", "declared codec 'int8' but the payload is 'lossless'"),
    "shape lie": (lambda c, rt: _mutate(c, shape=(2, 4, 4, 4)), "INVALID_ARGUMENT", "but the payload holds"),
    "truncated": (lambda c, rt: _mutate(c, payload=bytes(c.tensors[0].payload)[:-5]), "INVALID_ARGUMENT", "truncated"),
    "corrupt header": (lambda c, rt: _mutate(c, payload=_corrupt(bytes(c.tensors[0].payload), 30)), "INVALID_ARGUMENT", "corrupt header"),
    "corrupt body": (lambda c, rt: _mutate(c, payload=_corrupt(bytes(c.tensors[0].payload), -3)), "INVALID_ARGUMENT", ""),
    "unknown output codec": (lambda c, rt: setattr(c, "output_codec", "gzip"), "INVALID_ARGUMENT", "unknown codec 'gzip'"),
    "bad codec spec": (lambda c, rt: _mutate(c, codec="int8:q5"), "INVALID_ARGUMENT", "declared codec"),
    "garbage codec spec": (lambda c, rt: _mutate(c, codec="lossless:j1"), "INVALID_ARGUMENT", "declared codec 'lossless:j1'"),
    "long fingerprint": (lambda c, rt: setattr(c, "fingerprint", "f" * 5000), "INVALID_ARGUMENT", "model fingerprint is 5000"),
    "not a payload": (lambda c, rt: _mutate(c, payload=b"\x80\x04pickle"), "INVALID_ARGUMENT", "truncated payload"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_requests_are_refused_and_the_agent_keeps_serving(chain: ChainFactory, runtime: ModelRuntime, case: str) -> None:
    (cloud,) = chain("cloud[0:]")
    client = LoopbackClient(cloud)
    mutate, code, words = BAD[case]
    call = _valid_call(runtime)
    mutate(call, runtime)
    with pytest.raises(RemoteError) as err:
        client.infer(call, timeout_s=5)
    assert err.value.code == code
    assert words in err.value.details
    reply = client.infer(_valid_call(runtime), timeout_s=5)
    assert reply.position == runtime.num_positions


def test_memory_cap_refuses_large_requests(chain: ChainFactory, runtime: ModelRuntime) -> None:
    (cloud,) = chain("cloud[0:]", compute={"memory_cap_mb": 0.0004})  # 419 bytes: one 4x4x4 fp32 map fits
    with pytest.raises(RemoteError) as err:
        LoopbackClient(cloud).infer(_valid_call(runtime, start=7), timeout_s=5)  # two maps cross position 7
    assert err.value.code == "RESOURCE_EXHAUSTED" and "memory cap" in err.value.details


# ------------------------------------------------------------------------------------------- handshake
def test_handshake_refuses_an_upstream_with_another_model(chain: ChainFactory, runtime: ModelRuntime) -> None:
    (cloud,) = chain("cloud[0:]")
    up = Upstream(LoopbackClient(cloud, address="cloud:1"), fingerprint="f" * 32, role="edge", connect_s=1)
    with pytest.raises(FingerprintMismatch) as err:
        up.handshake()
    assert "f" * 32 in str(err.value) and runtime.fingerprint in str(err.value)


def test_describe_reports_profile_and_inputs(chain: ChainFactory, runtime: ModelRuntime) -> None:
    (cloud,) = chain("cloud[0:]")
    cloud.profile = cloud._measure_profile(1)
    d = LoopbackClient(cloud).describe()
    assert d.fingerprint == runtime.fingerprint and d.num_positions == 70 and d.cuts == runtime.cuts
    assert "lossless" in d.codecs and d.plan == "cloud[0:70]" and d.inputs == [("x", "FP32", (1, 3, 16, 16))]
    bounds = [(p.start, p.stop) for p in d.profile]
    assert bounds[0][0] == 0 and bounds[-1][1] == 70 and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert sum(p.compute_s for p in d.profile) > 0


# ------------------------------------------------------------------------------------------- lifecycle
def test_draining_agent_refuses_new_requests(chain: ChainFactory, runtime: ModelRuntime) -> None:
    (cloud,) = chain("cloud[0:]")
    assert cloud.drain(0.1)
    with pytest.raises(PeerUnavailable, match="shutting down"):
        LoopbackClient(cloud).infer(_valid_call(runtime), timeout_s=5)
    with pytest.raises(ShuttingDown):
        cloud.submit_local([_x()], request_id="r", deadline=time.monotonic() + 1)


def test_upstream_down_is_reported_as_unavailable(runtime: ModelRuntime, make_node) -> None:  # type: ignore[no-untyped-def]
    from edgeflow.transport import PeerClient

    up = Upstream(PeerClient("127.0.0.1:1"), fingerprint=runtime.fingerprint, role="device", connect_s=0.3)
    node = make_node("device", "device[0:13]|int8 > cloud[13:]", True, fallback={"enabled": False})  # else: finished here
    agent = Agent(node, runtime, upstream=up, profile_repeats=0)
    try:
        with pytest.raises(PeerUnavailable, match="did not answer the handshake"):
            DeviceClient(agent).infer(_x())
    finally:
        agent.close()


def test_deadline_covers_the_whole_request(chain: ChainFactory) -> None:
    agents = chain("device[0:13]|lossless > cloud[13:]", compute={"slowdown_factor": 1000.0})
    with pytest.raises(DeadlineExceeded):
        DeviceClient(agents[0]).infer(_x(), timeout_s=0.05)


def test_reply_payloads_survive_reencoding(chain: ChainFactory, runtime: ModelRuntime) -> None:
    (cloud,) = chain("cloud[0:]")
    reply = LoopbackClient(cloud).infer(_valid_call(runtime), timeout_s=5)
    again = decode_reply(encode_reply(reply), LoopbackClient(cloud).limits)
    assert [bytes(t.payload) for t in again.tensors] == [bytes(t.payload) for t in reply.tensors]
