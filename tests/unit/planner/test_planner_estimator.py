"""Bandwidth/RTT estimation, compute corrections and conditions on synthetic sample streams."""

from __future__ import annotations

import numpy as np
import pytest

from edgeflow.core.planner import CodecCorrection, ComputeCorrection, ConditionsTracker, LinkEstimator, LinkState
from edgeflow.errors import PlanError


def feed(est, rng, rate_bps, rtt_s, t0, n, dt=0.1, noise=0.1, sizes=(20_000, 200_000)):
    """n transfers at ``rate_bps`` (send start to reply, so each includes one RTT), with RTT pings."""
    t = t0
    for _ in range(n):
        nbytes = int(rng.integers(*sizes))
        est.observe_rtt(rtt_s * float(rng.uniform(0.95, 1.05)), t)
        est.observe_transfer(nbytes, rtt_s + 8 * nbytes / rate_bps * float(np.exp(rng.normal(0, noise))), t)
        t += dt
    return t


@pytest.mark.parametrize("rate", [1e5, 2e6, 2e7, 5e8])
def test_tracks_a_fixed_rate(rate):
    est, rng = LinkEstimator(), np.random.default_rng(1)
    sizes = (int(rate * 0.05 / 8), int(rate * 0.5 / 8))  # transfers of 50-500 ms
    t = feed(est, rng, rate, 0.04, 0.0, 30, sizes=sizes)
    assert est.bandwidth_bps(t) == pytest.approx(rate, rel=0.1)
    assert est.rtt_s(t) == pytest.approx(0.04, rel=0.05)
    assert not est.needs_probe(t)


def test_follows_a_step_down_from_the_second_sample_and_settles():
    est, rng = LinkEstimator(), np.random.default_rng(2)
    t = feed(est, rng, 20e6, 0.02, 0.0, 20, noise=0.05)
    t = feed(est, rng, 2e6, 0.02, t, 1, noise=0.05)
    assert est.bandwidth_bps(t) > 0.9 * 20e6  # one sample could be an outlier: the median filter holds it
    t = feed(est, rng, 2e6, 0.02, t, 1, noise=0.05)
    assert est.bandwidth_bps(t) < 0.6 * 20e6
    t = feed(est, rng, 2e6, 0.02, t, 1, noise=0.05)
    assert est.bandwidth_bps(t) < 0.4 * 20e6
    t = feed(est, rng, 2e6, 0.02, t, 8, noise=0.05)
    assert est.bandwidth_bps(t) == pytest.approx(2e6, rel=0.1)


def test_step_up_is_followed_within_the_window():
    est, rng = LinkEstimator(window=8), np.random.default_rng(3)
    t = feed(est, rng, 2e6, 0.02, 0.0, 20, noise=0.05)
    t = feed(est, rng, 20e6, 0.02, t, 10, noise=0.05)
    assert est.bandwidth_bps(t) == pytest.approx(20e6, rel=0.1)


def test_a_single_outlier_is_ignored():
    est, rng = LinkEstimator(), np.random.default_rng(4)
    t = feed(est, rng, 10e6, 0.02, 0.0, 20, noise=0.02)
    before = est.bandwidth_bps(t)
    assert before == pytest.approx(10e6, rel=0.03)
    est.observe_transfer(100_000, 0.02 + 50 * 8 * 100_000 / 10e6, t)  # one transfer stalled 50x
    assert est.bandwidth_bps(t) == pytest.approx(before, rel=0.02)
    t = feed(est, rng, 10e6, 0.02, t, 3, noise=0.02)
    est.observe_transfer(100_000, 0.02 + 8 * 100_000 / 10e9, t)  # one impossibly fast
    assert est.bandwidth_bps(t) == pytest.approx(before, rel=0.03)


def test_small_transfers_carry_no_rate_and_staleness_asks_for_a_probe():
    est = LinkEstimator(stale_after_s=2.0)
    assert est.needs_probe(0.0) and est.probe_nbytes(0.0) > 0
    est.observe_rtt(0.05, 0.0)
    assert not est.observe_transfer(500, 0.051, 0.1)  # 500 B: below min_nbytes
    assert not est.observe_transfer(5_000, 0.052, 0.2)  # mostly round trip
    assert est.bandwidth_bps(0.2) is None and est.needs_probe(0.2)
    assert est.observe_transfer(1_000_000, 0.05 + 0.8, 0.3)  # a probe: 1 MB in 0.8 s
    assert est.bandwidth_bps(0.3) == pytest.approx(1e7) and not est.needs_probe(1.0)
    assert est.needs_probe(2.5)  # no traffic since
    assert est.probe_nbytes(2.5) == int(1e7 * 0.05 * 2 / 8)  # two round trips of transfer: it delays requests
    assert est.bandwidth_bps(20.0) is None  # forgotten after max_age_s ...
    assert est.probe_nbytes(20.0) == int(1e7 * 0.05 * 2 / 8)  # ... but still sizes the probe (not a blind default)


def test_compute_correction_converges_and_bounds_outliers():
    c = ComputeCorrection()
    assert c.params("edge", 0.0) == (0.0, 1.0)
    for i in range(40):
        c.observe("edge", 0.02, 0.01, 0.1, float(i))
    fixed, factor = c.params("edge", 40.0)
    assert fixed + factor * 0.01 == pytest.approx(0.02, rel=0.02)  # one range: what it runs is predicted right
    c.observe("edge", 100.0, 0.01, 0.1, 41.0)  # one outlier: removed by the median filter
    assert c.params("edge", 41.0) == pytest.approx((fixed, factor), rel=1e-6)
    cold = ComputeCorrection()
    cold.observe("device", 0.105, 0.020, 0.1, 0.0)  # a cold first run, 5x its profile
    assert cold.params("device", 0.0) == pytest.approx((0.0, 1.0), abs=1e-9)
    cold.observe("device", 0.105, 0.020, 0.1, 0.1)  # twice: believed
    assert cold.params("device", 0.1)[1] > 3.0
    with pytest.raises(PlanError):
        ComputeCorrection(decay=0.0)


def test_compute_correction_fits_a_fixed_cost_per_stage_and_a_proportional_part():
    # the agent runs a stage in 2 ms + 0.5 x its profile: short stages cost relatively more than long ones
    c = ComputeCorrection()
    for i in range(30):
        predicted = (0.02, 0.08)[i % 2]
        c.observe("device", 0.002 + 0.5 * predicted, predicted, 0.1, i * 0.1)
    fixed, factor = c.params("device", 3.0)
    assert fixed == pytest.approx(0.002, abs=3e-4) and factor == pytest.approx(0.5, rel=0.05)
    assert fixed + factor * 0.05 == pytest.approx(0.027, rel=0.03)  # a range it never ran
    # an idle tier fades back to its profile: no correction learned under other conditions is kept frozen
    later = c.params("device", 3.0 + 10.0 + 90.0)
    assert abs(later[1] - 1.0) < 0.1 and abs(later[0]) < 0.001


def test_conditions_need_estimates_or_a_fallback():
    tr = ConditionsTracker(["device", "edge", "cloud"])
    assert tr.conditions(0.0) is None and tr.stale_links(0.0) == [0, 1]
    tr = ConditionsTracker(["device", "cloud"], fallback=[LinkState(1e6, 0.05)])
    assert tr.conditions(0.0).links == (LinkState(1e6, 0.05),)
    tr.observe_rtt(0, 0.02, 0.0)
    tr.observe_transfer(0, 1_000_000, 0.02 + 0.4, 0.0)
    tr.observe_stage("device", 0.03, 0.01, 0.01, 0.0)
    tr.observe_stage("device", 0.03, 0.01, 0.01, 0.0)
    tr.observe_queue("cloud", 0.004)
    cond = tr.conditions(0.1)
    assert cond.links[0].bandwidth_bps == pytest.approx(2e7) and cond.links[0].rtt_s == pytest.approx(0.02)
    predicted = cond.compute_fixed_s["device"] + cond.compute_factor["device"] * 0.01
    assert predicted == pytest.approx(0.03, rel=0.02) and cond.queue_s == {"cloud": 0.004}
    with pytest.raises(PlanError, match="link estimators"):
        ConditionsTracker(["device", "cloud"], fallback=[])


@pytest.mark.parametrize("factor", [0.1, 10.0])
def test_a_level_shift_restarts_the_window_after_two_samples(factor):
    rate, new = 5e6, 5e6 * factor
    sizes = (int(new * 0.05 / 8), int(new * 0.5 / 8))  # transfers of 50-500 ms at the new rate
    est, rng = LinkEstimator(), np.random.default_rng(6)
    t = feed(est, rng, rate, 0.02, 0.0, 20, noise=0.05)
    t = feed(est, rng, new, 0.02, t, 1, noise=0.05, sizes=sizes)
    assert est.bandwidth_bps(t) == pytest.approx(rate, rel=0.1)  # one sample: maybe an outlier
    t = feed(est, rng, new, 0.02, t, 1, noise=0.05, sizes=sizes)
    assert est.bandwidth_bps(t) == pytest.approx(new, rel=0.15)  # two: the new level
    off = LinkEstimator(shift_ratio=None)
    t = feed(off, rng, rate, 0.02, 0.0, 20, noise=0.05)
    t = feed(off, rng, new, 0.02, t, 2, noise=0.05, sizes=sizes)
    assert off.bandwidth_bps(t) != pytest.approx(new, rel=0.5)  # without: still mostly the old level


def test_noise_does_not_restart_the_window():
    est, rng = LinkEstimator(), np.random.default_rng(8)
    t = feed(est, rng, 5e6, 0.02, 0.0, 200, noise=0.25)
    assert len(est._samples) == est.window
    assert est.bandwidth_bps(t) == pytest.approx(5e6, rel=0.25)


def test_short_transfers_are_no_evidence_of_a_shift():
    """On a fast link a 1 KB message is timed by per-message overhead: its rate reads low, but is not a drop."""
    est = LinkEstimator()
    t = 0.0
    for _ in range(10):  # 100 KB at 100 Mbit/s: 8 ms of transfer each, an RTT of 2 ms
        est.observe_rtt(0.002, t)
        est.observe_transfer(100_000, 0.002 + 0.008, t)
        t += 0.05
    for _ in range(2):  # then 1 KB messages taking 3 ms of overhead: they read 2.7 Mbit/s
        est.observe_transfer(1_000, 0.002 + 0.003, t)
        t += 0.05
    assert est.bandwidth_bps(t) > 20e6  # pulled down by the harmonic mean, not restarted at 2.7 Mbit/s


def test_small_stages_teach_the_fixed_part_not_the_factor():
    c = ComputeCorrection()
    c.observe("device", 0.9, 1.0, 1.0, 0.0)  # the whole model: measured 0.9x the profile
    c.observe("device", 0.9, 1.0, 1.0, 0.1)
    for i in range(20):
        c.observe("device", 0.003, 0.001, 1.0, 0.2 + 0.01 * i)  # a 1 ms stage, 3 ms with its fixed overhead
    fixed, factor = c.params("device", 0.5)
    assert factor < 1.3  # not the 3x of the tiny stage: the whole model is still near its profile
    assert fixed + factor * 0.001 == pytest.approx(0.003, rel=0.1)  # and the tiny stage is priced right


def test_codec_correction_learns_each_tiers_encode_and_decode():
    c = CodecCorrection()
    assert c.factors == {}
    c.observe("device", encode=(0.004, 0.001))  # one reading: the median filter waits for a second
    assert c.factors["device"] == (1.0, 1.0)
    for _ in range(30):
        c.observe("device", encode=(0.004, 0.001))
        c.observe("edge", decode=(0.0005, 0.001))
    assert c.factors["device"][0] == pytest.approx(4.0, rel=0.01) and c.factors["device"][1] == 1.0
    assert c.factors["edge"] == (1.0, pytest.approx(0.5, rel=0.01))


def test_message_overhead_is_taken_off_passive_samples_and_priced_into_the_round_trip():
    # 16 KB messages on a 30 Mbit/s link whose messages pay 2 ms beyond an empty probe's round trip
    rate, rtt, overhead, nbytes = 30e6, 0.003, 0.002, 16_000
    plain, aware = LinkEstimator(), LinkEstimator(overhead_s=overhead)
    for i in range(8):
        for est in (plain, aware):
            est.observe_rtt(rtt, i * 0.1)
            est.observe_transfer(nbytes, rtt + overhead + 8 * nbytes / rate, i * 0.1)
    assert plain.bandwidth_bps(0.8) == pytest.approx(8 * nbytes / (overhead + 8 * nbytes / rate))  # 20 Mbit/s
    assert aware.bandwidth_bps(0.8) == pytest.approx(rate)
    aware.observe_transfer(1_000_000, 8 * 1_000_000 / rate + rtt, 0.9, message=False)  # a probe pays no overhead
    assert aware.bandwidth_bps(0.9) == pytest.approx(rate)
    tr = ConditionsTracker(["device", "edge"], [aware])
    assert tr.conditions(0.9).links[0].rtt_s == pytest.approx(rtt + overhead)  # what the next message pays
    with pytest.raises(PlanError, match="overhead_s"):
        LinkEstimator(overhead_s=-1.0)


def test_a_restart_forgets_the_old_level_only_for_a_usable_sample():
    est, rng = LinkEstimator(), np.random.default_rng(5)
    t = feed(est, rng, 2e6, 0.01, 0.0, 10, noise=0.0)
    assert est.bandwidth_bps(t) == pytest.approx(2e6, rel=0.01)
    assert not est.observe_transfer(1_000, 0.0105, t, restart=True)  # mostly round trip: unusable, nothing lost
    assert est.bandwidth_bps(t) == pytest.approx(2e6, rel=0.01)
    assert est.observe_transfer(16_384, 0.01 + 8 * 16_384 / 2e5, t, restart=True)  # one probe at a 10x lower rate
    assert est.bandwidth_bps(t) == pytest.approx(2e5, rel=0.01)  # one sample would not pass the median filter otherwise


def test_a_probe_too_quick_to_time_restarts_a_stale_slow_estimate() -> None:
    est = LinkEstimator()
    est.observe_rtt(0.02, 0.0)
    for i in range(4):  # a nearly dead link: 2 KB probes take 0.35 s
        assert est.observe_transfer(2048, 0.02 + 8 * 2048 / 50e3, 1.0 + i, message=False)
    assert est.bandwidth_bps(4.0) == pytest.approx(50e3, rel=0.05)
    # the link is back at 30 Mbit/s: the same 2 KB probe is all round trip, too quick to time a rate from ...
    t = 6.0
    assert est.observe_transfer(2048, 0.02 + 8 * 2048 / 30e6, t, message=False)  # ... but it bounds it from below
    bound = est.bandwidth_bps(t)
    assert bound is not None and 2e6 < bound < 30e6  # far above 50 kbit/s, never above the true rate
    assert est.probe_nbytes(t) > 4 * 2048  # the next probe is sized for the new level
    # a message that quick is not evidence (its time has the per-message overhead taken off)
    slow = LinkEstimator()
    slow.observe_rtt(0.02, 0.0)
    slow.observe_transfer(2048, 0.02 + 8 * 2048 / 50e3, 1.0, message=False)
    assert not slow.observe_transfer(2048, 0.02 + 8 * 2048 / 30e6, 2.0)
