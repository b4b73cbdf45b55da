"""The vectorised search against brute force on seeded random cost tables, and constraints that never break."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeflow.core.plan import Plan
from edgeflow.core.planner import OBJECTIVES, Conditions, CostModel, LinkState, Planner, TierSpec, brute_force
from edgeflow.core.planner.synthetic import synthetic_conditions, synthetic_model
from edgeflow.errors import PlanError


def _instance(seed: int, **overrides):
    rng = np.random.default_rng(seed)
    kw = dict(
        num_positions=int(rng.integers(3, 9)),
        num_tiers=int(rng.integers(1, 4)),
        memory_caps=bool(rng.random() < 0.5),
        privacy=bool(rng.random() < 0.3),
        exit_source=str(rng.choice(["samples", "calibration"])),
        num_exits=int(rng.integers(0, 3)),
        max_accuracy_drop_pts=float(rng.choice([0.0, 0.5, 1.0, 2.0])),
    )
    kw.update(overrides)
    md = synthetic_model(rng, **kw)
    return md, synthetic_conditions(rng, len(md.tiers) - 1, md.names), rng


def _search_value(planner, cond, objective, slo):
    try:
        return planner.search(cond, objective, latency_slo_s=slo)
    except PlanError as e:
        assert "no feasible plan" in str(e)
        return None


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_search_finds_the_true_optimum(objective):
    agree = 0
    for seed in range(60):
        md, cond, rng = _instance(seed)
        slo = float(rng.uniform(0.005, 0.1)) if objective != "throughput" and seed % 2 else None
        res = _search_value(Planner(md), cond, objective, slo)
        best, choice = brute_force(md, cond, objective, latency_slo_s=slo)
        if res is None:
            assert choice is None, f"seed {seed}: search found nothing, brute force found {best}"
            continue
        assert res.best.value == pytest.approx(best, rel=1e-9, abs=1e-12), f"seed {seed}: {res.best} vs {choice}"
        assert res.best.breakdown.objective(objective) == pytest.approx(res.best.value, rel=1e-9)
        agree += 1
    assert agree >= 25  # many instances have a feasible plan (caps, SLOs and floors make some infeasible)


def test_alternatives_are_the_best_of_other_tier_sets():
    md, cond, _ = _instance(7, num_tiers=3, memory_caps=False, privacy=False, max_accuracy_drop_pts=3.0)
    res = Planner(md).search(cond, top_k=6)
    tier_sets = [c.choice.tiers for c in (res.best, *res.alternatives)]
    assert len(set(tier_sets)) == len(tier_sets) == 7
    values = [c.value for c in (res.best, *res.alternatives)]
    assert values == sorted(values)
    for c in res.alternatives:  # each is the optimum of its tier set
        best = min(
            md.evaluate(ch, cond).latency_s
            for ch in __import__("edgeflow.core.planner", fromlist=["all_choices"]).all_choices(md)
            if ch.tiers == c.choice.tiers and not md.violations(ch)
        )
        assert c.value == pytest.approx(best, rel=1e-9)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    privacy=st.booleans(),
    caps=st.booleans(),
    drop=st.sampled_from([0.0, 0.25, 1.0, 3.0]),
    objective=st.sampled_from(OBJECTIVES),
)
def test_constraints_never_break(seed, privacy, caps, drop, objective):
    md, cond, _ = _instance(seed, privacy=privacy, memory_caps=caps, max_accuracy_drop_pts=drop, num_positions=10)
    res = _search_value(Planner(md), cond, objective, None)
    if res is None:
        return
    floor = md.exit_model.final_accuracy - drop / 100.0
    for c in (res.best, *res.alternatives):
        assert md.violations(c.choice) == []
        assert c.breakdown.accuracy >= floor - 1e-12
        if privacy:
            assert c.plan.stages[0].tier == md.names[0]
        bounds = [s.start for s in c.plan.stages] + [md.num_positions]
        for s, a, b in zip(c.plan.stages, bounds, bounds[1:]):
            cap = md.tiers[md.names.index(s.tier)].memory_cap_nbytes
            assert cap is None or md.range_memory_nbytes(a, b) <= cap


def test_search_handles_large_models_quickly_enough_to_replan():
    rng = np.random.default_rng(0)
    md = synthetic_model(rng, num_positions=60, num_exits=3, grid=(0.8, 0.9, 0.95, 0.99),
                         codecs=("lossless", "fp16", "bf16", "int8", "int8c", "int4", "int2"),
                         input_codecs=("lossless", "png", "jpeg"), max_accuracy_drop_pts=1.0)  # fmt: skip
    pl = Planner(md)
    for bw in (1e5, 1e7, 1e9):
        res = pl.search(Conditions((LinkState(bw, 0.02), LinkState(bw * 10, 0.01))))
        assert res.best.breakdown.latency_s == pytest.approx(res.best.value)
    assert pl.num_plans > 10**6


def test_infeasible_everywhere_raises_naming_the_constraints(tiny):
    md = CostModel([TierSpec("device", tiny, memory_cap_nbytes=10.0)], param_nbytes=[1, 1, 1])
    with pytest.raises(PlanError, match="memory caps device"):
        Planner(md).search(Conditions(()))
    md = CostModel([TierSpec("device", tiny), TierSpec("cloud", tiny)])
    with pytest.raises(PlanError, match="SLO"):
        Planner(md).search(Conditions((LinkState(1e6, 0.1),)), latency_slo_s=1e-3)
    with pytest.raises(PlanError, match="objective"):
        Planner(md).search(Conditions((LinkState(1e6, 0.1),)), "speed")


def test_bandwidth_moves_the_cut(tiny):
    tiers = [TierSpec("device", tiny, compute_scale=20.0), TierSpec("cloud", tiny)]
    pl = Planner(CostModel(tiers))
    slow = pl.search(Conditions((LinkState(1e3, 0.02),))).best.plan
    fast = pl.search(Conditions((LinkState(1e9, 0.02),))).best
    assert slow == Plan.parse("device[0:]")
    assert fast.plan == Plan.parse("input|lossless > cloud[0:]")
    assert math.isfinite(fast.value)
