"""The planner takes the dct codec like any other: chosen at a cut when the link is scarce, not when it is wide."""

from __future__ import annotations

from edgeflow.core.plan import Plan
from edgeflow.core.planner import Conditions, CostModel, LinkState, TierSpec, codec_drops_from_cuts, search
from edgeflow.core.profile import CodecCost, ModelProfile


def _model(prof: ModelProfile, drop_pts: float) -> CostModel:
    for pos in (1, 2):  # dct: 8x fewer bytes than int8 at the cuts, but 5 ms + 5 ms of codec time
        prof.positions[pos].codecs["dct"] = CodecCost(125, 5e-3, 5e-3)
    tiers = [TierSpec("device", prof, compute_scale=4.0), TierSpec("cloud", prof)]
    drops = {(1, "dct"): drop_pts, (2, "dct"): drop_pts, (1, "int8"): 0.0, (2, "int8"): 0.0}
    return CostModel(tiers, activation_codecs=["lossless", "int8", "dct"], input_codecs=["lossless"],
                     codec_accuracy_drop=drops, max_accuracy_drop_pts=1.0)  # fmt: skip


def _best(md: CostModel, bandwidth_bps: float) -> Plan:
    return search(md, Conditions((LinkState(bandwidth_bps, 0.01),))).best.plan


def test_scarce_bandwidth_picks_dct_and_a_wide_link_does_not(tiny) -> None:
    md = _model(tiny, drop_pts=0.5)
    scarce = _best(md, 20e3)  # 20 kbit/s: int8's 1000 B take 400 ms, dct's 125 B 50 ms
    assert any((s.codec or "").startswith("dct") for s in scarce.stages), str(scarce)
    wide = _best(md, 1e9)
    assert not any((s.codec or "").startswith("dct") for s in wide.stages), str(wide)


def test_dct_over_the_accuracy_floor_is_never_picked(tiny) -> None:
    md = _model(tiny, drop_pts=1.5)  # measured drop above the 1-point floor
    plan = _best(md, 20e3)
    assert not any((s.codec or "").startswith("dct") for s in plan.stages), str(plan)


def test_codec_drops_read_only_the_named_models_measured_rows() -> None:
    report = {"rows": [
        {"cut": 20, "codec": "dct:d15", "accuracy_loss_pts": 0.83},
        {"model": "demo", "cut": 29, "codec": "int2:z1", "accuracy_loss_pts": -0.28},
        {"model": "mobilenet_v2", "cut": 20, "codec": "dct:d15", "accuracy_loss_pts": None, "agreement": 1.0},
    ]}  # fmt: skip
    assert codec_drops_from_cuts(report) == {(20, "dct"): 0.83, (29, "int2"): 0.0}
    assert codec_drops_from_cuts(report, model="mobilenet_v2") == {}
