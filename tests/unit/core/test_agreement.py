"""The checks of an upstream's answer against the device's own exit head (core/exits/agreement.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeflow.core.exits.agreement import AgreementSamples, AgreementTest, plan_answers, plan_check


def _samples(seed: int = 0, s: int = 400, c: int = 10) -> AgreementSamples:
    """Two heads (positions 5 and 9) on ``s`` samples: head 5 right ~90% of the time, head 9 ~95%."""
    rng = np.random.default_rng(seed)
    final = rng.integers(c, size=s)

    def head(right: float) -> np.ndarray:
        top = np.where(rng.random(s) < right, final, rng.integers(c, size=s))
        logits = rng.normal(size=(s, c))
        logits[np.arange(s), top] += rng.uniform(0.5, 6.0, size=s)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    return AgreementSamples((5, 9), np.stack([head(0.9), head(0.95)], 1), final, "calibration")


def test_the_honest_answer_is_the_first_confident_upstream_exit_else_the_output() -> None:
    s = _samples()
    assert (plan_answers(s, []) == s.final).all()
    p9 = s.head(9)
    ans = plan_answers(s, [(9, 0.8)])
    fire = p9.max(1) >= 0.8
    assert (ans[fire] == p9[fire].argmax(1)).all() and (ans[~fire] == s.final[~fire]).all()
    assert (plan_answers(s, [(7, 0.1)]) == s.final).all()  # no head there: never an answer


def test_the_threshold_is_the_false_alarm_quantile_of_the_honest_answers_probability() -> None:
    s = _samples()
    check = plan_check(s, 5, [], 0.02)
    p = s.head(5)[np.arange(s.num_samples), s.final]
    assert check.threshold == pytest.approx(np.quantile(p, 0.02))
    assert check.false_alarm == pytest.approx((p < check.threshold).mean()) and check.false_alarm <= 0.02
    assert check.agreement == pytest.approx((s.head(5).argmax(1) == s.final).mean())
    assert check.num_samples == s.num_samples and check.head == 5
    assert plan_check(s, 5, [], 0.1).threshold > check.threshold  # more false alarms allowed: a higher bar


def test_only_samples_the_device_does_not_answer_itself_are_calibrated_on() -> None:
    s = _samples()
    forwarded = s.head(5).max(1) < 0.9
    check = plan_check(s, 5, [], 0.02, local_exits=[(5, 0.9)])
    assert check.num_samples == int(forwarded.sum())
    assert check.agreement == pytest.approx((s.head(5)[forwarded].argmax(1) == s.final[forwarded]).mean())
    everything = plan_check(s, 5, [], 0.02, local_exits=[(5, 1e-9)])  # nothing forwarded: too few to calibrate on
    assert everything.num_samples == s.num_samples


def test_bad_arguments_are_refused() -> None:
    s = _samples()
    with pytest.raises(KeyError, match="no exit head at position 6"):
        plan_check(s, 6, [], 0.01)
    with pytest.raises(ValueError, match="false_alarm"):
        plan_check(s, 5, [], 0.7)
    with pytest.raises(ValueError, match="must be"):
        AgreementSamples((5,), np.zeros((3, 2, 10)), np.zeros(3, dtype=np.int64))


def test_a_class_the_head_finds_implausible_is_suspicious_and_strict_flags_disagreement() -> None:
    check = plan_check(_samples(), 5, [], 0.02)
    probs = torch.tensor([[0.90, 0.09, 0.01], [0.50, 0.45, 0.05]])
    got = check.suspicious(probs, torch.tensor([2, 1]))
    assert got.tolist() == [0.01 < check.threshold, 0.45 < check.threshold]
    assert check.suspicious(probs, torch.tensor([0, 1]), strict=True).tolist() == [False, True]


def _run(test: AgreementTest, rate: float, n: int, seed: int) -> list[bool]:
    rng = np.random.default_rng(seed)
    return [test.observe(bool(a)) for a in rng.random(n) < rate]


def test_the_running_test_stays_quiet_on_honest_traffic() -> None:
    test = AgreementTest(0.95, drop=0.1, alpha=0.001, beta=0.01)
    states = _run(test, 0.95, 5000, seed=1)  # seeded: deterministic
    assert sum(states) == 0 and test.observed == 5000


def test_the_running_test_catches_a_liar_that_starts_late_and_lets_it_go_when_it_stops() -> None:
    test = AgreementTest(0.95, drop=0.1, alpha=0.001, beta=0.01)
    assert not any(_run(test, 0.95, 2000, seed=2))  # a long honest past does not shield a later liar (CUSUM)
    lying = _run(test, 0.95 * 0.7, 200, seed=3)  # 30% of answers flipped
    first = lying.index(True)
    assert first < 100 and all(lying[first:])
    honest = _run(test, 1.0, 200, seed=4)
    assert not honest[-1]  # trusted again once it answers honestly: from the capped statistic down to the lower bound
    assert honest.index(False) == pytest.approx((test.upper - test.lower) / abs(test.llr_agree), abs=2)


def test_the_boundaries_follow_wald() -> None:
    t = AgreementTest(0.9, drop=0.2, alpha=0.01, beta=0.05)
    assert t.upper == pytest.approx(np.log(0.95 / 0.01)) and t.lower == pytest.approx(np.log(0.05 / 0.99))
    assert t.llr_agree == pytest.approx(np.log(0.7 / 0.9)) and t.llr_disagree == pytest.approx(np.log(0.3 / 0.1))
    always = AgreementTest(1.0, drop=0.1, alpha=0.01, beta=0.01)  # a head that always agreed: taken as 99%
    assert always.rate == 0.99 and np.isfinite(always.llr_disagree) and always.observe(False) is False
