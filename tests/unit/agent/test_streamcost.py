"""agent/streamcost.py: a stream's share per hop, the device's samples at hops the plan does not use, and the live
planner planning with them."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from edgeflow.agent.compute import ComputeUnit
from edgeflow.agent.streamcost import HOPS_PER_SAMPLE, CutSampler, HopShares, own_hop
from edgeflow.agent.streams import StreamRef
from edgeflow.config import StreamsConfig
from edgeflow.core.codecs import get_codec
from edgeflow.core.plan import Plan


def _video(n: int) -> list[torch.Tensor]:
    """A static background with a small square that moves one pixel every third frame."""
    bg = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    frames = []
    for k in range(n):
        x = bg.clone()
        x[:, :, 2:5, (k // 3) % 10 : (k // 3) % 10 + 3] = 1.0
        frames.append(x)
    return frames


# ------------------------------------------------------------------------------------------------ shares
def test_residual_frames_set_the_share_and_one_key_per_period_costs_one_period_share() -> None:
    shares = HopShares(key_interval=10)
    for _ in range(20):
        shares.frame((8, "int8"), 0.1)
    assert shares.share((8, "int8")) == pytest.approx(0.1)
    # the key frame after a plan switch or at the period's end: 1/N of a key, not a fifth of one
    after_key = shares.frame((8, "int8"), 1.0)
    assert after_key == pytest.approx(0.1 + 0.1 * 0.9, rel=1e-6)
    assert after_key < 0.25


def test_a_run_of_key_frames_is_learned_fast() -> None:
    shares = HopShares(key_interval=64)
    for _ in range(10):
        shares.frame((0, "lossless"), 0.05)
    for _ in range(8):  # the camera pans: every residual costs more than the sender allows
        now = shares.frame((0, "lossless"), 1.0)
    assert now > 0.8


def test_a_hop_known_from_samples_only_carries_one_key_frame_per_period() -> None:
    shares = HopShares(key_interval=16)
    assert shares.share((0, "lossless")) is None
    assert shares.sample((0, "lossless"), 0.0) == pytest.approx(1 / 16)  # switching to it starts with a key frame
    assert shares.sample((20, "int8"), None) == 1.0  # a pair the sender would send as key frames: no saving known
    assert shares.frame((0, "lossless"), 1.0) == pytest.approx(1 / 16)  # the switch's key frame: as priced


def test_own_hop_is_the_hop_out_of_the_device() -> None:
    n = 70
    assert own_hop(Plan.parse("input|jpeg > edge[0:]"), n) == (0, "jpeg")
    assert own_hop(Plan.parse("device[0:8]|int8 > edge[8:]"), n) == (8, "int8")
    assert own_hop(Plan.parse("device[0:]"), n) is None


# ------------------------------------------------------------------------------------------------ sampler
class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _sampler(runtime, every: int = 2, budget: float = 1.0, clock=None):  # type: ignore[no-untyped-def]
    reports: list[dict] = []
    hops = [(0, "lossless"), (0, "int8"), *[(c, k) for c in runtime.cuts[:12] for k in ("lossless", "int8")]]
    cfg = StreamsConfig(key_ratio=1.0, sample_every_frames=every, sample_budget=budget)
    s = CutSampler(runtime, ComputeUnit(4), hops, get_codec, cfg, reports.append, clock=clock or _Clock())
    return s, reports


def _wait_samples(s: CutSampler, n: int) -> None:
    with s.sampled:
        assert s.sampled.wait_for(lambda: s.samples + s.dropped >= n, timeout=30)


def test_the_sampler_codes_two_consecutive_frames_at_the_input_and_a_turn_of_cuts(runtime) -> None:  # type: ignore[no-untyped-def]
    s, reports = _sampler(runtime)
    try:
        frames = _video(4)
        for k in range(3):  # frames 0, 1, 2: the pair (1, 2) is due
            s.offer(StreamRef("local", "cam", k), [frames[k]])
        assert s._job is not None and s.samples == 0  # queued, run once the frame that completed it is answered
        s.kick()
        _wait_samples(s, 1)
        assert s.samples == 1 and s.dropped == 0 and s.spent_s > 0
        got = reports[0]
        assert (0, "lossless") in got and (0, "int8") in got and len(got) == 2 + HOPS_PER_SAMPLE
        # the pair differs in nothing (the square moves every third frame): residuals cost a sliver of a key frame
        assert got[(0, "lossless")] is not None and got[(0, "lossless")] < 0.5
        # the sender's own coding, so the numbers are what it would send
        assert all(v is None or 0 < v <= 1.0 for v in got.values())
    finally:
        s.close()


def test_the_sampler_takes_only_consecutive_frames_and_keeps_its_budget(runtime) -> None:  # type: ignore[no-untyped-def]
    clock = _Clock()
    s, reports = _sampler(runtime, every=1, budget=0.05, clock=clock)
    try:
        frames = _video(8)
        s.offer(StreamRef("local", "cam", 0), [frames[0]])
        s.offer(StreamRef("local", "cam", 2), [frames[2]])  # frame 1 lost: no pair
        s.offer(StreamRef("other", "cam", 3), [frames[3]])  # another caller's stream: not a pair either
        assert s.samples == 0 and s._job is None
        s.offer(StreamRef("local", "cam", 3), [frames[3]])
        s.kick()
        _wait_samples(s, 1)
        assert s.samples == 1
        # no time has passed: what the sample took is over 5% of it, so no frame is kept or sampled
        for k in range(4, 8):
            s.offer(StreamRef("local", "cam", k), [frames[k]])
        assert s.samples == 1 and s._job is None and ("local", "cam") not in s._prev
        clock.t = s.spent_s / 0.05 + 1.0  # time enough for another within the budget
        s.offer(StreamRef("local", "cam", 8), [frames[0]])
        s.offer(StreamRef("local", "cam", 9), [frames[1]])
        s.kick()
        _wait_samples(s, 2)
        assert s.samples == 2 and s.stats()["spent_s"] == pytest.approx(s.spent_s)
        assert s.stats()["spent_share"] <= 0.05 + s.spent_s / clock.t
    finally:
        s.close()


def test_a_sample_waits_for_the_request_ahead_of_it(runtime) -> None:  # type: ignore[no-untyped-def]
    s, reports = _sampler(runtime, every=1)
    held, release, order = threading.Event(), threading.Event(), []

    def request() -> None:
        def work() -> None:
            held.set()
            release.wait(30)
            order.append("request")

        s.compute.run(work, time.monotonic() + 30)

    s.report = lambda shares: order.append("sample")
    t = threading.Thread(target=request)
    t.start()
    try:
        assert held.wait(30)
        frames = _video(2)
        s.offer(StreamRef("local", "cam", 0), [frames[0]])
        s.offer(StreamRef("local", "cam", 1), [frames[1]])
        s.kick()
        release.set()
        _wait_samples(s, 1)
        assert s.samples == 1 and order == ["request", "sample"]  # the request's compute is never held up by it
    finally:
        release.set()
        t.join()
        s.close()


# ------------------------------------------------------------------------------------------------ live planner
def test_the_live_planner_prices_sampled_hops_and_predicts_key_frames_at_full_bytes(chain) -> None:  # type: ignore[no-untyped-def]
    from edgeflow.agent.live import LivePlanner
    from edgeflow.config import PlannerConfig

    agents = chain("auto", roles=("device", "cloud"))
    live = LivePlanner.start(agents[0], PlannerConfig(), descriptions=[agents[1].describe()], profile_repeats=1)
    try:
        plan, cur = Plan.parse("input|lossless > cloud[0:]"), live.plan
        before = live.predict(plan)
        assert before is not None
        live._sampled({(0, "lossless"): 0.0})
        share = live.stream_estimate[(0, "lossless")]
        assert share == pytest.approx(1 / agents[0].config.streams.key_interval)
        after = live.predict(plan)
        assert after is not None and after.uplink_nbytes == pytest.approx(before.uplink_nbytes * share)
        key = live.predict_key_frame(plan)  # the frame that starts the stream on this hop moves all its bytes
        assert key is not None and key.uplink_nbytes == pytest.approx(before.uplink_nbytes)
        assert live.predict(plan).uplink_nbytes == pytest.approx(after.uplink_nbytes)  # and the share stays
        hop = own_hop(cur, live.model.num_positions)
        if hop is not None:  # the hop the current plan uses is measured by its frames, never by samples
            live._sampled({hop: 0.0})
            assert hop not in live.stream_estimate
    finally:
        live.close()


def test_the_sender_tells_which_frames_go_as_key_frames(runtime) -> None:  # type: ignore[no-untyped-def]
    from edgeflow.agent.streams import StreamSender

    sender, codec = StreamSender(StreamsConfig(key_ratio=1.0, key_interval=3)), get_codec("lossless")
    names = [i.name for i in runtime.cut_info(0).tensors]
    ref = StreamRef("local", "cam", 0)
    assert sender.keys_next(ref, 0, codec, "p")  # nothing sent yet
    sender.encode(ref, 0, "p", names, [_video(1)[0]], codec)
    assert not sender.keys_next(StreamRef("local", "cam", 1), 0, codec, "p")
    assert sender.keys_next(StreamRef("local", "cam", 1), 0, codec, "another plan")  # a plan switch starts again
    assert sender.keys_next(StreamRef("local", "cam", 1), 0, get_codec("int8"), "p")
    assert not sender.keys_next(ref, 0, get_codec("jpeg"), "p")  # never delta coded: priced as it is anyway
    for k in (1, 2):
        sender.encode(StreamRef("local", "cam", k), 0, "p", names, [_video(1)[0]], codec)
    assert sender.keys_next(StreamRef("local", "cam", 3), 0, codec, "p")  # the key interval ends
