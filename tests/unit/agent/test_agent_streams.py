"""Stream mode through in-process agents (agent/streams.py): residual hops, key frames, resync, isolation."""

from __future__ import annotations

import time

import pytest
import torch

from edgeflow.agent import Agent, ModelRuntime
from edgeflow.agent.streams import StreamRef, StreamSender
from edgeflow.config import StreamsConfig
from edgeflow.core.codecs import get_codec
from edgeflow.errors import InvalidRequest, StreamRejected
from edgeflow.transport import InferCall

# the tiny test model's activations are a few hundred bytes: a residual's own header then costs more than half a key
# frame, so these chains send residuals whenever they are no bigger than a key frame
STREAMS = {"key_ratio": 1.0}
LOSSLESS = "device[0:20]|lossless > edge[20:40]|lossless > cloud[40:]"
INT8 = "device[0:20]|int8 > edge[20:40]|int8 > cloud[40:]"


def _video(n: int, seed: int = 0) -> list[torch.Tensor]:
    """A static background with a small bright square that moves one pixel every third frame (the tiny test model's
    cut is 4x4: a frame that moves changes most of it, one that does not changes nothing)."""
    bg = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    frames = []
    for k in range(n):
        x = bg.clone()
        x[:, :, 2:5, (k // 3) % 10 : (k // 3) % 10 + 3] = 1.0
        frames.append(x)
    return frames


def _send(device: Agent, x: torch.Tensor, frame: int, stream: str = "cam", **kw):  # type: ignore[no-untyped-def]
    return device.submit_local([x], request_id=f"{stream}-{frame}-{time.monotonic_ns()}", deadline=time.monotonic() + 10,
                               stream=stream, frame=frame, **kw)  # fmt: skip


def _reference(runtime: ModelRuntime, x: torch.Tensor) -> torch.Tensor:
    return runtime.run(0, runtime.num_positions, [x]).values[0]


def test_a_lossless_stream_is_bit_exact_and_sends_residuals_after_its_key_frame(chain, runtime) -> None:  # type: ignore[no-untyped-def]
    device, edge, cloud = chain(LOSSLESS, streams=STREAMS)
    sent_bytes = []
    for k, x in enumerate(_video(6)):
        r = _send(device, x, k)
        assert torch.equal(r.values[0], _reference(runtime, x))  # bit-exact through two residual hops
        b = r.breakdown
        assert b.answered_by == "cloud" and not b.fallback
        if k % 3:  # the scene stood still: both hops send a residual, and save bytes
            assert b.stream_delta_hops == 2 and b.stream_saved_bytes > 0
        elif k == 0:
            assert b.stream_delta_hops == 0 and b.stream_saved_bytes == 0
        sent_bytes.append(sum(t.bytes_out for t in b.tiers))
    assert max(sent_bytes[1:3]) < sent_bytes[0]
    assert edge.stream_receiver.resyncs == cloud.stream_receiver.resyncs == 0


def test_an_int8_stream_keeps_the_answers_and_a_key_frame_comes_every_key_interval(chain, runtime) -> None:  # type: ignore[no-untyped-def]
    device, _, _ = chain(INT8, streams={**STREAMS, "key_interval": 3})
    hops = []
    for k, x in enumerate(_video(7)):
        r = _send(device, x, k)
        ref = _reference(runtime, x)
        assert torch.allclose(r.values[0], ref, atol=0.05 * float(ref.abs().max()) + 1e-3)
        hops.append(r.breakdown.stream_delta_hops)
    # a key frame every third frame; between them at least the first hop's residual pays (the edge's cut is 2 x 16
    # values, where an int8 residual's header outweighs an int8 payload)
    assert hops[::3] == [0, 0, 0] and all(h >= 1 for i, h in enumerate(hops) if i % 3)


def _coded(runtime: ModelRuntime, frames: list[torch.Tensor], position: int = 20, first: int = 0):  # type: ignore[no-untyped-def]
    """Frames ``first``, ``first + 1``, ... coded for the hop into the edge by a sender of our own (what a device
    would send)."""
    sender = StreamSender(StreamsConfig(**STREAMS))
    names = [i.name for i in runtime.cut_info(position).tensors]
    out = []
    for k, x in enumerate(frames, start=first):
        values = runtime.run(0, position, [x]).values
        out.append(sender.encode(StreamRef("me", "s", k), position, LOSSLESS, names, values, get_codec("lossless")))
    return out


def _call(coded, frame: int, caller: str = "peer:a", stream: str = "s") -> InferCall:  # type: ignore[no-untyped-def]
    return InferCall(f"r{frame}-{time.monotonic_ns()}", "", 20, coded.wire, plan=LOSSLESS, stream=stream, frame=frame,
                     caller=caller)  # fmt: skip


def test_a_lost_frame_a_duplicate_and_a_changed_shape_get_clear_statuses(chain, runtime) -> None:  # type: ignore[no-untyped-def]
    _, edge, _ = chain(LOSSLESS, streams=STREAMS)
    frames = _video(4)
    coded = _coded(runtime, frames)
    fp = runtime.fingerprint

    def call(c, k, **kw):  # type: ignore[no-untyped-def]
        ic = _call(c, k, **kw)
        ic.fingerprint = fp
        return edge.infer(ic, time.monotonic() + 10)

    assert not coded[0].delta and coded[1].delta and coded[2].delta
    call(coded[0], 0)
    with pytest.raises(StreamRejected, match=r"expected a residual against frame 0, got frame 2 against frame 1.*send a "
                                             r"key frame") as e:  # fmt: skip
        call(coded[2], 2)  # frame 1 was lost
    assert e.value.resync
    reply = call(coded[2].as_key(), 2)  # the sender's answer: the same frame as a key frame
    assert reply.position == runtime.num_positions
    with pytest.raises(StreamRejected, match="already received") as e:
        call(coded[2].as_key(), 2)
    assert not e.value.resync
    with pytest.raises(StreamRejected, match="holds no state"):
        call(coded[1], 1, caller="peer:b")  # another caller: the same stream id names nothing of the first's
    # a residual declaring another batch size than the reference
    bigger = _coded(runtime, [torch.cat([f, f]) for f in frames[2:4]], first=2)
    assert bigger[1].delta
    with pytest.raises(StreamRejected, match="shape changed"):
        call(bigger[1], 3)
    before = edge.stream_receiver.resyncs
    assert before >= 3


def test_another_callers_residual_cannot_touch_a_stream_of_the_same_name(chain, runtime) -> None:  # type: ignore[no-untyped-def]
    device, edge, _ = chain(LOSSLESS, streams=STREAMS)
    frames = _video(5)
    for k in range(3):
        _send(device, frames[k], k)
    # a stranger replays what it would send for "cam": refused, and the device's stream goes on unharmed
    forged = _coded(runtime, frames)
    assert forged[3].delta
    assert device.stream_sender is not None
    ic = _call(forged[3], 3, caller="peer:stranger", stream=device.stream_sender.upstream_id(StreamRef("local", "cam", 0)))
    ic.fingerprint = runtime.fingerprint
    with pytest.raises(StreamRejected, match="holds no state"):
        edge.infer(ic, time.monotonic() + 10)
    for k in (3, 4):  # the scene stands still
        r = _send(device, frames[2], k)
        assert r.breakdown.stream_delta_hops == 2 and torch.equal(r.values[0], _reference(runtime, frames[2]))


def test_evicted_streams_resync_and_answer_right(chain, runtime) -> None:  # type: ignore[no-untyped-def]
    device, edge, cloud = chain(LOSSLESS, streams=STREAMS)
    edge.stream_receiver.table.max_entries = 1  # the edge keeps one stream: two interleaved evict each other
    a, b = _video(4, seed=1), _video(4, seed=2)
    for k in range(4):
        for name, frames in (("a", a), ("b", b)):
            r = _send(device, frames[k], k, stream=name)
            assert torch.equal(r.values[0], _reference(runtime, frames[k]))
    assert edge.stream_receiver.resyncs >= 4 and edge.stream_receiver.table.evictions >= 6
    assert cloud.stream_receiver.resyncs == 0  # the edge kept its own hop in step


def test_a_duplicate_input_frame_is_refused_at_the_device(chain) -> None:  # type: ignore[no-untyped-def]
    device, _, _ = chain(LOSSLESS, streams=STREAMS)
    x = _video(1)[0]
    _send(device, x, 0)
    with pytest.raises(StreamRejected, match="frame 0 was already received"):
        _send(device, x, 0)
    with pytest.raises(InvalidRequest, match="stream id and a frame number"):
        device.submit_local([x], request_id="z", deadline=time.monotonic() + 5, stream="cam")


def test_a_plan_switch_sends_a_key_frame(chain, runtime) -> None:  # type: ignore[no-untyped-def]
    device, _, _ = chain(LOSSLESS, streams=STREAMS)
    x = _video(1)[0]  # a still scene
    other = "device[0:20]|lossless > edge[20:52]|lossless > cloud[52:]"
    hops = [_send(device, x, k, plan=p).breakdown.stream_delta_hops
            for k, p in enumerate([LOSSLESS, LOSSLESS, other, other])]  # fmt: skip
    assert hops == [0, 2, 0, 2]  # a plan switch starts every hop again from a key frame


def test_a_failed_hop_makes_the_next_frame_a_key_frame(chain, runtime) -> None:  # type: ignore[no-untyped-def]
    device, cloud = chain("device[0:20]|lossless > cloud[20:]", roles=("device", "cloud"), streams=STREAMS)
    frames = _video(4)
    assert _send(device, frames[0], 0).breakdown.stream_delta_hops == 0
    assert _send(device, frames[1], 1).breakdown.stream_delta_hops == 1
    assert cloud.drain(0.1)  # the cloud refuses: the device falls back, and no longer knows the cloud's state
    r = _send(device, frames[2], 2)
    assert r.breakdown.fallback and torch.equal(r.values[0], _reference(runtime, frames[2]))
    assert device.stream_sender is not None and len(device.stream_sender.table) == 0


def test_the_live_planner_prices_a_streams_hops_at_its_measured_bytes(chain) -> None:  # type: ignore[no-untyped-def]
    from edgeflow.agent.live import LivePlanner
    from edgeflow.config import PlannerConfig
    from edgeflow.core.plan import Plan
    from edgeflow.transport import Breakdown, TierTiming

    agents = chain("auto", roles=("device", "cloud"))
    live = LivePlanner.start(agents[0], PlannerConfig(), descriptions=[agents[1].describe()], profile_repeats=1)
    try:
        plan, other = Plan.parse("device[0:13]|lossless > cloud[13:]"), Plan.parse("device[0:20]|lossless > cloud[20:]")
        before, untouched = live.predict(plan), live.predict(other)
        assert before is not None and untouched is not None
        for _ in range(30):  # frames that each moved 1 kB where coding them on their own takes 10 kB
            tiers = [TierTiming("device", 0, 13, compute_s=1e-3, network_s=0.01, bytes_out=1000, bytes_back=100),
                     TierTiming("cloud", 13, 70, compute_s=1e-3)]  # fmt: skip
            live.observe(Breakdown(tiers, "cloud", stream_frame=True, stream_delta_hops=1, stream_saved_bytes=9000,
                                   stream_own_saved_bytes=9000), plan, decide=False)  # fmt: skip
        share = live.stream_share[(13, "lossless")]
        assert share == pytest.approx(0.1, rel=0.01) and len(live.stream_share) == 1
        after = live.predict(plan)
        assert after is not None and after.uplink_nbytes == pytest.approx(before.uplink_nbytes * share)
        assert live.predict(other).uplink_nbytes == untouched.uplink_nbytes  # a hop it has not measured: as profiled
    finally:
        live.close()


@pytest.mark.parametrize(
    "params, match",
    [
        ({"frame": 3}, "needs a non-empty string parameter 'stream'"),
        ({"stream": "", "frame": 3}, "needs a non-empty string parameter 'stream'"),
        ({"stream": "cam"}, "'frame' \\(int64\\) is required"),
        ({"stream": "cam", "frame": "3"}, "'frame' \\(int64\\) is required"),
        ({"stream": "cam", "frame": -1}, "outside 0.."),
        ({"stream": "c\x00m", "frame": 1}, "non-printable"),
        ({"stream": "x" * 300, "frame": 1}, "stream id is 300 characters"),
    ],
)
def test_bad_stream_parameters_are_invalid_argument(params: dict, match: str) -> None:
    from edgeflow.transport import WireLimits
    from edgeflow.transport._gen import agent_pb2 as pb
    from edgeflow.transport.messages import decode_request

    msg = pb.InferRequest(id="r", model_fingerprint="f")
    for k, v in params.items():
        if isinstance(v, str):
            msg.parameters[k].string_param = v
        else:
            msg.parameters[k].int64_param = v
    with pytest.raises(InvalidRequest, match=match):
        decode_request(msg.SerializeToString(), WireLimits())


def test_a_stream_frame_round_trips_on_the_wire() -> None:
    from edgeflow.transport import WireLimits
    from edgeflow.transport.messages import decode_request, encode_request

    got = decode_request(encode_request(InferCall("r", "f", 0, [], stream="cam/1", frame=2**40)), WireLimits())
    assert (got.stream, got.frame, got.caller) == ("cam/1", 2**40, "")  # the caller is the server's to say
    plain = decode_request(encode_request(InferCall("r", "f", 0, [])), WireLimits())
    assert (plain.stream, plain.frame) == ("", -1)


def test_stream_state_is_bounded_in_bytes_per_stream_and_in_total(runtime) -> None:  # type: ignore[no-untyped-def]
    from edgeflow.agent.streams import StreamReceiver

    frames = _video(3)
    coded = _coded(runtime, frames)
    nbytes = sum(v.numel() * v.element_size() for v in runtime.run(0, 20, [frames[0]]).values)

    def plain(i, t):  # type: ignore[no-untyped-def]
        from edgeflow.core.codecs import decode

        return decode(t.payload)

    small = StreamReceiver(StreamsConfig(max_stream_mb=(nbytes - 1) / 2**20), "edge")  # one stream's frame is too big
    small.decode(StreamRef("a", "s", 0), 20, coded[0].wire, plain)
    assert len(small.table) == 0
    with pytest.raises(StreamRejected, match="holds no state"):
        small.decode(StreamRef("a", "s", 1), 20, coded[1].wire, plain)
    total = StreamReceiver(StreamsConfig(max_mb=2.5 * nbytes / 2**20), "edge")  # two streams' references fit
    for name in ("s1", "s2", "s3"):
        total.decode(StreamRef("a", name, 0), 20, coded[0].wire, plain)
    assert len(total.table) == 2 and total.table.nbytes <= 2.5 * nbytes and total.table.evictions == 1
    with pytest.raises(StreamRejected, match="evicted"):
        total.decode(StreamRef("a", "s1", 1), 20, coded[1].wire, plain)  # the least recently used went first
    assert torch.equal(total.decode(StreamRef("a", "s3", 1), 20, coded[1].wire, plain)[0],
                       runtime.run(0, 20, [frames[1]]).values[0])  # fmt: skip


def test_a_relaying_edge_is_a_hop_of_its_own(chain, runtime) -> None:  # type: ignore[no-untyped-def]
    device, edge, cloud = chain("device[0:20]|lossless > cloud[20:]", roles=("device", "edge", "cloud"), streams=STREAMS)
    x = _video(1)[0]
    hops = []
    for k in range(3):
        r = _send(device, x, k)
        assert torch.equal(r.values[0], _reference(runtime, x)) and r.breakdown.answered_by == "cloud"
        hops.append(r.breakdown.stream_delta_hops)
    assert hops == [0, 2, 2]  # device>edge and edge>cloud each send residuals of the values at 20
    assert edge.stream_receiver.resyncs == cloud.stream_receiver.resyncs == 0


def test_the_live_planner_prices_each_hop_of_a_stream_on_its_own(chain) -> None:  # type: ignore[no-untyped-def]
    from edgeflow.agent.live import LivePlanner
    from edgeflow.config import PlannerConfig
    from edgeflow.core.plan import Plan
    from edgeflow.transport import Breakdown, TierTiming

    agents = chain("auto", roles=("device", "edge", "cloud"))
    live = LivePlanner.start(agents[0], PlannerConfig(), descriptions=[a.describe() for a in agents[1:]],
                             profile_repeats=1)  # fmt: skip
    try:
        plan = Plan.parse("device[0:13]|lossless > edge[13:20]|int8 > cloud[20:]")
        for _ in range(40):  # the device's hop saved 9 of 10 kB, the edge's 1.5 of 2 kB
            tiers = [TierTiming("device", 0, 13, compute_s=1e-3, network_s=0.01, bytes_out=1000, bytes_back=100),
                     TierTiming("edge", 13, 20, compute_s=1e-3, network_s=0.01, bytes_out=500, bytes_back=100),
                     TierTiming("cloud", 20, 70, compute_s=1e-3)]  # fmt: skip
            live.observe(Breakdown(tiers, "cloud", stream_frame=True, stream_delta_hops=2, stream_saved_bytes=10_500,
                                   stream_own_saved_bytes=9000), plan, decide=False)  # fmt: skip
        assert live.stream_share[(13, "lossless")] == pytest.approx(0.1, rel=0.01)
        assert live.stream_share[(20, "int8")] == pytest.approx(0.25, rel=0.01)
    finally:
        live.close()


def test_two_devices_one_identity_one_stream_name_never_share_state(chain, runtime, make_node) -> None:  # type: ignore[no-untyped-def]
    """Both devices reach the edge as the same caller (in process here; a shared TLS certificate in a deployment)
    and name their stream "cam": each sender's own id keeps their states apart, so every residual applies to the
    reconstruction it was coded against."""
    from edgeflow.agent import Agent, Upstream
    from edgeflow.transport import LoopbackClient

    first, edge, _ = chain(LOSSLESS, streams=STREAMS)
    up = Upstream(LoopbackClient(edge, address="edge-loopback"), fingerprint=runtime.fingerprint, role="device",
                  connect_s=1.0)  # fmt: skip
    second = Agent(make_node("device", LOSSLESS, True, streams=STREAMS), runtime, upstream=up, profile_repeats=0)
    try:
        a, b = _video(1, seed=1)[0], _video(1, seed=2)[0]
        for k in range(4):
            for device, x in ((first, a), (second, b)):
                r = _send(device, x, k)
                assert torch.equal(r.values[0], _reference(runtime, x))
                assert r.breakdown.stream_delta_hops == (0 if k == 0 else 2)
        assert edge.stream_receiver.resyncs == 0
    finally:
        second.close()
