"""The cost model on a profile small enough to check by hand, and its errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgeflow.core.plan import Plan
from edgeflow.core.planner import Choice, Conditions, CostModel, ExitModel, LinkState, PowerSpec, TierSpec
from edgeflow.errors import PlanError

BW = 8e6  # 1000 bytes take 1 ms


def two_tier(tiny, exits=None, **kw):
    tiers = [TierSpec("device", tiny, compute_scale=4.0, power=PowerSpec(0.5, 3.0, 1.0)), TierSpec("cloud", tiny)]
    return CostModel(tiers, exits, **kw)


def test_split_plan_by_hand(tiny):
    md = two_tier(tiny)
    b = md.evaluate(Plan.parse("device[0:1]|int8 > cloud[1:]"), Conditions((LinkState(BW, 0.02),)))
    # device 4 x 10 ms; int8 encode 1 ms, 1000 B at 8 Mbit/s 1 ms, rtt 20 ms, decode 2 ms; cloud 50 ms; reply 40 B
    assert b.compute_s == pytest.approx({"device": 0.04, "cloud": 0.05})
    assert (b.encode_s, b.decode_s, b.rtt_s) == pytest.approx((1e-3, 2e-3, 0.02))
    assert b.transfer_s == pytest.approx(1e-3 + 40 * 8 / BW)
    assert b.latency_s == pytest.approx(0.04 + 1e-3 + 1e-3 + 4e-5 + 0.02 + 2e-3 + 0.05)
    assert b.uplink_nbytes == 1000
    # device energy: 3 W x (40 + 1 ms) + 1 W x 1 ms transmitting + 0.5 W x the rest of the wait
    assert b.energy_j == pytest.approx(3.0 * 0.041 + 1.0 * 1e-3 + 0.5 * (b.latency_s - 0.042))
    # load: device 41 ms, link 1 ms, cloud 52 ms
    assert b.bottleneck_s == pytest.approx(0.052)


def test_cloud_only_sends_the_input_with_its_codec(tiny):
    md = two_tier(tiny)
    cond = Conditions((LinkState(BW, 0.02),), queue_s={"cloud": 0.005, "device": 0.5})
    b = md.evaluate(Plan.parse("input|jpeg > cloud[0:]"), cond)
    assert b.latency_s == pytest.approx(2e-3 + 2e-3 + 0.02 + 1e-3 + 0.005 + 0.06 + 4e-5)  # device queue not paid
    assert md.evaluate(Plan.parse("cloud[0:]"), cond).uplink_nbytes == 8000  # lossless when unnamed


def test_relay_through_a_skipped_edge_crosses_both_links(tiny):
    tiers = [TierSpec("device", tiny), TierSpec("edge", tiny), TierSpec("cloud", tiny)]
    md = CostModel(tiers)
    cond = Conditions((LinkState(BW, 0.02), LinkState(BW / 2, 0.01)))
    b = md.evaluate(Plan.parse("device[0:2]|int8 > cloud[2:]"), cond)
    assert b.rtt_s == pytest.approx(0.03)
    assert b.transfer_s == pytest.approx(1e-3 + 2e-3 + 40 * 8 / BW + 40 * 8 / (BW / 2))
    assert "edge" not in b.compute_s


def test_exit_outcomes_are_weighted(tiny):
    # one sample in four is confident at position 1 (on the device)
    em = ExitModel.from_samples([1], [[0.95], [0.1], [0.2], [0.3]], [[True], [False], [True], [True]], [True] * 4, (0.9,))
    md = two_tier(tiny, em)
    cond = Conditions((LinkState(BW, 0.02),))
    full = md.evaluate(Plan.parse("device[0:1]|int8 > cloud[1:]"), cond).latency_s
    b = md.evaluate(Plan.parse("device[0:1]|int8 > cloud[1:]  exits@1:0.9"), cond)
    assert b.exit_prob == pytest.approx(0.25)
    assert b.latency_s == pytest.approx(0.25 * 0.04 + 0.75 * full)
    assert b.accuracy == pytest.approx(1.0)
    n = md.num_positions  # each outcome's own latency: exit at 1 pays only the device's 40 ms
    assert b.outcome_latency_s == pytest.approx({1: 0.04, n: full})


def test_accuracy_subtracts_codec_drops_and_checks_the_floor(tiny):
    md = two_tier(tiny, codec_accuracy_drop={(1, "int8"): 0.6}, max_accuracy_drop_pts=0.5)
    ch = md.choice_of(Plan.parse("device[0:1]|int8 > cloud[1:]"))
    assert md.evaluate(ch, Conditions((LinkState(BW, 0.0),))).accuracy == pytest.approx(1.0 - 0.006)
    assert any("accuracy" in v for v in md.violations(ch))
    assert md.violations(md.choice_of(Plan.parse("device[0:2]|int8 > cloud[2:]"))) == []


def test_memory_caps_and_privacy_are_reported(tiny):
    tiers = [TierSpec("device", tiny, memory_cap_nbytes=18_000), TierSpec("cloud", tiny)]
    md = CostModel(tiers, privacy=True, param_nbytes=[1000, 2000, 3000])
    assert md.range_memory_nbytes(0, 1) == 1000 + 16000
    assert md.violations(md.choice_of(Plan.parse("device[0:2]|int8 > cloud[2:]")))[0].startswith("memory")
    assert md.violations(md.choice_of(Plan.parse("cloud[0:]")))[0].startswith("privacy")
    with pytest.raises(PlanError, match="param_nbytes"):
        CostModel(tiers)


def test_compute_factor_and_stage_prediction(tiny):
    md = two_tier(tiny)
    assert md.stage_compute_s("device", 0, 2) == pytest.approx(0.12)
    cond = Conditions((LinkState(BW, 0.0),), compute_factor={"device": 0.5})
    assert md.evaluate(Plan.parse("device[0:]"), cond).latency_s == pytest.approx(0.12)


def test_errors_name_the_problem(tiny):
    md = two_tier(tiny)
    with pytest.raises(PlanError, match="need 1 links"):
        md.evaluate(Plan.parse("device[0:]"), Conditions(()))
    with pytest.raises(PlanError, match="edge"):
        md.choice_of(Plan.parse("edge[0:]"))
    with pytest.raises(PlanError, match="no exit head"):
        md.choice_of(Plan.parse("device[0:]  exits@2:0.9"))
    with pytest.raises(PlanError, match="bandwidth_bps"):
        LinkState(0.0, 0.01)
    with pytest.raises(PlanError, match="chain order"):
        CostModel([TierSpec("cloud", tiny), TierSpec("device", tiny)])
    with pytest.raises(PlanError, match="int9"):
        CostModel([TierSpec("device", tiny)], activation_codecs=["int9"])


def test_to_plan_round_trips(tiny):
    md = CostModel([TierSpec("device", tiny), TierSpec("edge", tiny), TierSpec("cloud", tiny)])
    for text, codec in [("device[0:1]|int8 > edge[1:2]|lossless > cloud[2:]", None), ("input|jpeg > edge[0:2]|int8 > cloud[2:]", "jpeg")]:
        ch = md.choice_of(Plan.parse(text))
        assert str(md.to_plan(ch)) == text and ch.input_codec == codec
    assert md.choice_of(Plan.parse("input|jpeg > edge[0:2]|int8 > cloud[2:]")) == Choice((1, 2), (2,), ("jpeg", "int8"))
    assert md.canonical(Plan.parse("edge[0:2]|int8 > cloud[2:]")) == Plan.parse("input|lossless > edge[0:2]|int8 > cloud[2:]")
    assert np.isfinite(md.drop_pts).sum() == 2 + 2 * 2  # input codecs at 0, activation codecs at both cuts
