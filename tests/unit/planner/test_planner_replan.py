"""Re-planning hysteresis: one step -> one switch after the hold; noisy steady links -> no flapping."""

from __future__ import annotations

import numpy as np
import pytest

from edgeflow.core.plan import Plan
from edgeflow.core.planner import Conditions, CostModel, LinkState, Planner, Replanner, TierSpec
from edgeflow.errors import PlanError


@pytest.fixture
def planner(tiny):
    tiers = [TierSpec("device", tiny, compute_scale=4.0), TierSpec("cloud", tiny)]
    return Planner(CostModel(tiers))


def best(planner, bw):
    return planner.search(Conditions((LinkState(bw, 0.02),))).best


def run(rp, rng, schedule, *, dt=0.1, until=10.0, noise=0.1, rtt=0.02):
    """Requests every ``dt``: each feeds one transfer on the current plan's hop sizes, then decide()."""
    switches, t = [], 0.0
    while t < until:
        bw = schedule(t)
        nbytes = int(rng.integers(20_000, 60_000))
        rp.observe_rtt(0, rtt, t)
        rp.observe_transfer(0, nbytes, rtt + 8 * nbytes / bw * float(np.exp(rng.normal(0, noise))), t)
        d = rp.decide(t)
        assert d.reason
        if d.switched:
            switches.append((round(t, 3), str(d.plan), d.reason))
        t += dt
    return switches


def test_one_step_gives_one_switch_after_the_hold(planner):
    high, low = 5e6, 2e4
    start = best(planner, high)
    assert best(planner, low).plan != start.plan
    rp = Replanner(planner, start.plan, hold_s=0.3, min_evaluations=2)
    switches = run(rp, np.random.default_rng(0), lambda t: high if t < 5.0 else low)
    assert len(switches) == 1, switches
    t, plan, reason = switches[0]
    assert 5.0 + 0.3 <= t <= 5.0 + 0.6  # the estimate turns at the 2nd sample, then the hold
    assert plan == str(best(planner, low).plan) and reason.startswith("switch:")


CROSSOVERS = (6.75e4, 2.7e5)  # bit/s where the best plan of this model changes


@pytest.mark.parametrize("bw", [3e4, *CROSSOVERS, 1e6])
def test_noisy_steady_link_does_not_flap(planner, bw):
    start = best(planner, bw)
    rp = Replanner(planner, start.plan)
    assert run(rp, np.random.default_rng(int(bw)), lambda t: bw, until=20.0, noise=0.25) == []


@pytest.mark.parametrize("bw", CROSSOVERS)
def test_without_hysteresis_the_same_stream_flaps(planner, bw):
    start = best(planner, bw)
    rp = Replanner(planner, start.plan, margin=0.0, hold_s=0.0, min_evaluations=1,
                   min_interval_s=0.0)  # fmt: skip
    assert len(run(rp, np.random.default_rng(int(bw)), lambda t: bw, until=20.0, noise=0.25)) >= 3


def test_gain_below_the_margin_keeps_and_says_why(planner):
    slow = best(planner, 2e4).plan
    rp = Replanner(planner, slow, margin=10.0)  # nothing gains 1000%
    d = rp.decide_with(Conditions((LinkState(1e9, 0.02),)), 0.0)
    assert d.plan is None and "gain" in d.reason and "< margin" in d.reason
    assert d.current_value > d.best_value


def test_switch_needs_the_hold_and_evaluations(planner):
    slow_best = best(planner, 2e4)
    rp = Replanner(planner, slow_best.plan, hold_s=1.0, min_evaluations=3)
    fast = Conditions((LinkState(1e9, 0.02),))
    reasons = [rp.decide_with(fast, t).reason for t in (0.0, 0.5, 1.0)]
    assert all(r.startswith("pending") for r in reasons[:2]) and reasons[2].startswith("switch")
    assert rp.current == best(planner, 1e9).plan


def test_interrupted_gain_restarts_the_hold(planner):
    rp = Replanner(planner, best(planner, 2e4).plan, hold_s=0.5, min_evaluations=2)
    fast, slow = Conditions((LinkState(1e9, 0.02),)), Conditions((LinkState(2e4, 0.02),))
    assert rp.decide_with(fast, 0.0).reason.startswith("pending")
    assert rp.decide_with(slow, 0.3).reason.startswith("keep")
    assert rp.decide_with(fast, 0.6).reason.startswith("pending")
    assert not rp.decide_with(fast, 0.9).switched  # 0.3 s since the gain came back
    assert rp.decide_with(fast, 1.1).switched


def test_infeasible_current_plan_is_left_at_once(planner):
    rp = Replanner(planner, Plan.parse("device[0:]"), latency_slo_s=0.2)  # device-only takes 240 ms
    d = rp.decide_with(Conditions((LinkState(1e9, 0.02),)), 0.0)
    assert d.switched and "infeasible" in d.reason and "SLO" in d.reason


def test_no_estimate_yet_keeps_and_stale_links_are_reported(planner):
    rp = Replanner(planner, Plan.parse("device[0:]"))
    d = rp.decide(0.0)
    assert not d.switched and "no bandwidth" in d.reason
    assert rp.stale_links(0.0) == [0]
    rp.observe_stage("device", 0.48, 0, 3)  # measured twice the prediction of 240 ms, twice (one could be noise)
    rp.observe_stage("device", 0.48, 0, 3)
    fixed, factor = rp.tracker.correction.params("device", 0.0)
    assert fixed + factor * 0.24 == pytest.approx(0.48, rel=0.02)
    with pytest.raises(PlanError):
        Replanner(planner, Plan.parse("edge[0:]"))


def test_a_single_stalled_transfer_never_switches(planner):
    bw = 1e6  # one sample 100x slower in a plain mean of 8 would read ~75 kbit/s, where another plan wins
    start = best(planner, bw)
    assert best(planner, bw * 8 / 107).plan != start.plan
    rp = Replanner(planner, start.plan, min_evaluations=1, hold_s=0.0)
    stall = {3.0}  # one transfer 100x slower than the link
    rng = np.random.default_rng(5)
    switches, t = [], 0.0
    while t < 6.0:
        nbytes = 40_000
        slow = 100.0 if round(t, 1) in stall else 1.0
        rp.observe_rtt(0, 0.02, t)
        rp.observe_transfer(0, nbytes, 0.02 + slow * 8 * nbytes / bw * float(np.exp(rng.normal(0, 0.05))), t)
        if rp.decide(t).switched:
            switches.append(t)
        t = round(t + 0.1, 1)
    assert switches == []


def test_a_real_change_right_after_a_switch_does_not_wait_out_the_interval(planner):
    mid, low, high = 1.3e5, 2e4, 1e9  # between the crossovers the best plan splits
    assert len({str(best(planner, b).plan) for b in (mid, low, high)}) == 3
    cond = {b: Conditions((LinkState(b, 0.02),)) for b in (mid, low, high)}

    def drive(changed_ratio):
        rp = Replanner(planner, best(planner, high).plan, hold_s=0.0, min_evaluations=1, min_interval_s=1.0,
                       changed_ratio=changed_ratio)  # fmt: skip
        assert rp.decide_with(cond[mid], 0.0).switched  # chosen for mid
        return [rp.decide_with(cond[low], t) for t in (0.2, 0.4, 1.2)]

    fast = drive(2.0)  # the link fell 6.5x since the split was chosen
    assert fast[0].switched and "bandwidth moved" in fast[0].reason and fast[0].plan == best(planner, low).plan
    slow = drive(None)
    assert [d.switched for d in slow] == [False, False, True]
    assert "after a switch" in slow[0].reason


def test_noise_never_waives_the_interval(planner):
    bw = CROSSOVERS[1]
    start = best(planner, bw)
    rp = Replanner(planner, start.plan, margin=0.0, hold_s=0.0, min_evaluations=1,
                   min_interval_s=1.0)  # fmt: skip
    switches = run(rp, np.random.default_rng(7), lambda t: bw, until=20.0, noise=0.25)
    times = [t for t, _, _ in switches]
    assert all(b - a >= 1.0 - 1e-9 for a, b in zip(times, times[1:])), times
    assert not any("bandwidth moved" in r for _, _, r in switches)


def test_the_models_own_learning_never_waives_the_interval(planner):
    link = (LinkState(1.3e5, 0.02),)
    rp = Replanner(planner, best(planner, 1e9).plan, hold_s=0.0, min_evaluations=1, min_interval_s=1.0)
    assert rp.decide_with(Conditions(link), 0.0).switched
    slow_device = Conditions(link, compute_factor={"device": 5.0})  # a compute correction, not the network
    assert best(planner, 1.3e5).plan != planner.search(slow_device).best.plan
    assert [rp.decide_with(slow_device, t).switched for t in (0.2, 0.5, 1.1)] == [False, False, True]
