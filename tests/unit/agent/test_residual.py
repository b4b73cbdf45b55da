"""The time a request spends beyond every modelled term: measured from a reply's breakdown, tracked per tier set."""

from __future__ import annotations

import pytest

from edgeflow.agent.residual import Residual, unmodelled_s
from edgeflow.transport import Breakdown, TierTiming


def _reply(left_s: float, *, fallback: str = "", stream: bool = False) -> Breakdown:
    # the device: encode 1 ms, network 20 ms (its call less the edge's total), decode 0.5 ms; the edge: 3 ms of
    # its own parts and 0.25 ms unmodelled; the device's own leftover makes up the rest of ``left_s``
    edge = TierTiming("edge", 0, 70, queue_s=0.0005, compute_s=0.002, decode_s=0.0005, total_s=0.00325)
    own = left_s - 0.00025
    device = TierTiming("device", 0, 0, encode_s=0.001, network_s=0.02, decode_s=0.0005,
                        total_s=0.001 + 0.02 + 0.0005 + edge.total_s + own)  # fmt: skip
    b = Breakdown([device, edge], "edge", fallback=fallback)
    b.stream_frame = stream
    return b


def test_unmodelled_time_is_the_sources_total_less_every_measured_term() -> None:
    assert unmodelled_s(_reply(0.0015)) == pytest.approx(0.0015)
    assert unmodelled_s(Breakdown([], "")) is None


def test_the_mean_is_kept_per_tier_set_and_outliers_are_winsorised() -> None:
    r = Residual(weight=0.5, cap_factor=4.0, floor_s=0.005)
    assert r.seconds(("edge",)) == 0.0
    r.observe(("edge",), _reply(0.002))
    r.observe(("edge",), _reply(0.004))
    assert r.seconds(("edge",)) == pytest.approx(0.003)
    assert r.seconds(("device",)) == 0.0  # another tier set learns on its own
    r.observe(("edge",), _reply(1.0))  # a 1 s pause counts at most 4x the mean so far (12 ms)
    assert r.seconds(("edge",)) == pytest.approx(0.003 + 0.5 * (0.012 - 0.003))
    before = r.seconds(("edge",))
    r.observe(("edge",), _reply(0.5, fallback="edge: upstream cloud down; finished locally"))
    r.observe(("edge",), _reply(0.5, stream=True))
    assert r.seconds(("edge",)) == before  # a fallback's path is not the plan's; a frame is coded by its stream
    r.observe(("edge",), _reply(-0.01))  # clock rounding: never below 0
    assert r.seconds(("edge",)) == pytest.approx(before / 2)
    with pytest.raises(ValueError, match="weight"):
        Residual(weight=0)
