"""Content-aware hop sizes: the proxy, the online fit with its prior, and what a hop's bytes add to a plan's paths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from edgeflow.core.plan import Plan
from edgeflow.core.planner import Conditions, CostModel, ExitModel, LinkState, TierSpec
from edgeflow.core.planner.content import ContentBytes, content_proxy, hop_deltas

BW = 8e6  # 1000 bytes take 1 ms


def test_the_proxy_grows_with_the_contents_detail_and_ignores_its_scale() -> None:
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 32, 32), 0.5)
    smooth = torch.linspace(0, 1, 32).repeat(1, 3, 32, 1)
    noisy = torch.rand((1, 3, 32, 32), generator=g)
    sizes = [content_proxy([x]) for x in (flat, smooth, noisy)]
    assert sizes[0] < sizes[1] < sizes[2]
    assert content_proxy([noisy * 1000 - 7]) == sizes[2]  # min-max quantised: the scale does not matter
    assert content_proxy([noisy, noisy]) == 2 * sizes[2]  # several tensors add up
    assert content_proxy([torch.tensor([[float("nan"), 1.0]])]) >= 1  # no error on odd values
    assert content_proxy([torch.arange(64, dtype=torch.int64)]) >= 1  # non-float tensors as they are


def test_a_hop_never_measured_is_priced_at_its_profiled_bytes() -> None:
    cb = ContentBytes()
    assert cb.predict(1, "int4", 5000.0, 3000.0) == 3000.0
    cb.observe(1, "int4", 5000.0, 4000.0)
    assert cb.predict(2, "int4", 5000.0, 3000.0) == 3000.0  # another hop
    assert cb.predict(1, "int8", 5000.0, 3000.0) == 3000.0  # another codec


def test_the_fit_learns_a_power_law_and_predicts_unseen_inputs() -> None:
    rng = np.random.default_rng(0)
    cb = ContentBytes()
    for _ in range(200):  # bytes = 2 * proxy^1.5, 5% log noise
        p = float(np.exp(rng.uniform(np.log(2000), np.log(8000))))
        cb.observe(1, "int4", p, 2 * p**1.5 * float(np.exp(rng.normal(0, 0.05))))
    profiled = 2 * 3000**1.5  # the profiling input was a plain one
    for p in (2500.0, 4000.0, 7000.0):
        assert cb.predict(1, "int4", p, profiled) == pytest.approx(2 * p**1.5, rel=0.05)  # the prior is outweighed


def test_the_prior_holds_a_few_samples_back() -> None:
    cb = ContentBytes(prior_n=4.0)
    cb.observe(0, "lossless", 1000.0, 2000.0)  # one sample at twice the profiled bytes
    got = cb.predict(0, "lossless", 1000.0, 1000.0)
    # the mean in logs moves a fifth of the way: (1 * log 2000 + 4 * log 1000) / 5
    assert got == pytest.approx(math.exp((math.log(2000) + 4 * math.log(1000)) / 5))
    # one point says nothing about a slope: any other input gets the same
    assert cb.predict(0, "lossless", 3000.0, 1000.0) == pytest.approx(got)


def test_content_that_does_not_matter_gives_no_slope() -> None:
    rng = np.random.default_rng(1)
    cb = ContentBytes()
    for _ in range(100):  # a deep cut: the bytes do not follow the input
        cb.observe(60, "int8", float(rng.uniform(1000, 9000)), 668.0)
    assert cb.predict(60, "int8", 1000.0, 700.0) == pytest.approx(668.0, rel=0.01)
    assert cb.predict(60, "int8", 9000.0, 700.0) == pytest.approx(668.0, rel=0.01)


def test_old_content_is_forgotten() -> None:
    cb = ContentBytes(window=20, prior_n=0.01)
    for _ in range(100):
        cb.observe(1, "int8", 3000.0, 1000.0)
    for _ in range(100):  # the same inputs now cost twice as much (a codec level changed, say)
        cb.observe(1, "int8", 3000.0, 2000.0)
    assert cb.predict(1, "int8", 3000.0, 1000.0) == pytest.approx(2000.0, rel=0.02)
    assert cb.samples(1, "int8") < 25


def test_bad_samples_are_ignored_and_hops_are_bounded() -> None:
    cb = ContentBytes(max_hops=2)
    for bad in ((0.0, 10.0), (10.0, 0.0), (float("nan"), 10.0), (10.0, float("inf"))):
        cb.observe(1, "int8", *bad)
    assert cb.samples(1, "int8") == 0
    for pos in range(5):
        cb.observe(pos, "int8", 10.0, 10.0)
    assert [cb.samples(p, "int8") for p in range(5)] == [1, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="prior_n"):
        ContentBytes(prior_n=0)


def _two_tier(tiny, exits=None) -> CostModel:
    return CostModel([TierSpec("device", tiny), TierSpec("cloud", tiny)], exits)


def test_a_hops_extra_bytes_add_their_transfer_to_the_paths_that_cross_it(tiny) -> None:
    # one sample in four exits at position 1, on the device, before the hop at 1
    em = ExitModel.from_samples([1], [[0.95], [0.1], [0.2], [0.3]], [[True], [False], [True], [True]], [True] * 4, (0.9,))
    md = _two_tier(tiny, em)
    cond = Conditions((LinkState(BW, 0.02),))
    cb = ContentBytes(prior_n=1e-9)
    for _ in range(10):
        cb.observe(1, "int8", 500.0, 3000.0)  # int8 at 1 profiled 1000 B; this content measures 3000 B
    plan = Plan.parse("device[0:1]|int8 > cloud[1:]  exits@1:0.9")
    expected, paths = hop_deltas(md, plan, cond, 500.0, cb)
    n = md.num_positions
    assert paths[n] == pytest.approx(2000 * 8 / BW, rel=1e-6)  # 2 ms more on the path through the hop
    assert paths[1] == 0.0  # the exit answers before the hop
    assert expected == pytest.approx(0.75 * paths[n], rel=1e-6)
    # the input hop is crossed by every outcome; a hop never measured adds nothing
    _, paths = hop_deltas(md, Plan.parse("input|jpeg > cloud[0:]"), cond, 500.0, cb)
    assert paths == {n: 0.0}


def test_a_relayed_hop_crosses_every_link_on_its_way(tiny) -> None:
    md = CostModel([TierSpec("device", tiny), TierSpec("edge", tiny), TierSpec("cloud", tiny)])
    cond = Conditions((LinkState(BW, 0.02), LinkState(BW / 2, 0.01)))
    cb = ContentBytes(prior_n=1e-9)
    for _ in range(10):
        cb.observe(2, "int8", 100.0, 500.0)  # half the profiled 1000 B
    expected, paths = hop_deltas(md, Plan.parse("device[0:2]|int8 > cloud[2:]"), cond, 100.0, cb)
    assert expected == pytest.approx(-500 * 8 / BW - 500 * 8 / (BW / 2), rel=1e-6)
