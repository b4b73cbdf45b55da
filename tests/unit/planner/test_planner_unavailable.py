"""Tiers down and back: the search plans around them, the replanner leaves them at once and returns at once."""

from __future__ import annotations

import pytest

from edgeflow.core.planner import Conditions, CostModel, LinkState, Planner, Replanner, TierSpec
from edgeflow.errors import PlanError

FAST = Conditions((LinkState(1e9, 1e-4), LinkState(1e9, 1e-4)))


@pytest.fixture
def planner(tiny):  # type: ignore[no-untyped-def]
    # a slow device and edge on fast links: the best plan offloads to the cloud
    tiers = [TierSpec("device", tiny, compute_scale=20.0), TierSpec("edge", tiny, compute_scale=10.0),
             TierSpec("cloud", tiny)]  # fmt: skip
    return Planner(CostModel(tiers))


def test_search_plans_around_down_tiers(planner: Planner) -> None:
    assert "cloud" in planner.search(FAST).best.plan.tiers
    assert set(planner.search(FAST, unavailable={"cloud"}).best.plan.tiers) <= {"device", "edge"}
    assert planner.search(FAST, unavailable={"edge"}).best.plan.tiers == ("device",)  # the cloud is past the edge
    with pytest.raises(PlanError, match="source"):
        planner.search(FAST, unavailable={"device"})
    with pytest.raises(PlanError, match="not in the chain"):
        planner.search(FAST, unavailable={"gpu"})


def test_replanner_leaves_a_down_tier_at_once_and_returns_at_once(planner: Planner) -> None:
    start = planner.search(FAST).best
    rp = Replanner(planner, start.plan, hold_s=10.0, min_evaluations=5,
                   min_interval_s=100.0)  # fmt: skip
    rp.set_unavailable({"cloud"})
    d = rp.decide_with(FAST, 1.0)
    assert d.switched and "cloud" not in d.plan.tiers and "unreachable" in d.reason  # no hold, no interval
    assert not rp.decide_with(FAST, 1.1).switched
    rp.set_unavailable(())
    back = rp.decide_with(FAST, 1.2)  # min_interval_s and hold_s do not apply to a tier's return
    assert back.switched and back.plan == start.plan and back.reason.endswith("cloud back")
    assert not rp.decide_with(FAST, 1.3).switched


def test_slo_gives_way_when_tiers_are_down(planner: Planner) -> None:
    start = planner.search(FAST).best
    slo = start.breakdown.latency_s * 1.01  # only plans using the cloud meet it
    rp = Replanner(planner, start.plan, latency_slo_s=slo)
    with pytest.raises(PlanError):
        planner.search(FAST, latency_slo_s=slo, unavailable={"edge"})
    rp.set_unavailable({"edge"})
    d = rp.decide_with(FAST, 1.0)
    assert d.switched and d.plan.tiers == ("device",)
