"""Exit statistics: exact from samples; conservative (never optimistic) from the marginal calibration table."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeflow.core.exits import CalibrationRow, CalibrationTable
from edgeflow.core.plan import ExitPoint
from edgeflow.core.planner import ExitModel
from edgeflow.errors import PlanError


def test_from_samples_counts_the_first_confident_exit():
    conf = [[0.95, 0.99], [0.5, 0.97], [0.2, 0.3], [0.1, 0.2]]
    ok_exit = [[True, True], [False, False], [True, True], [True, True]]
    em = ExitModel.from_samples([3, 7], conf, ok_exit, [True, True, False, True], grid=(0.9,))
    assert em.num_combos == 4 and em.exits_of(0) == ()
    a, h, acc = em.stats([ExitPoint(3, 0.9), ExitPoint(7, 0.9)])
    assert list(a) == [0.25, 0.25, 0.5]  # sample 0 at 3, sample 1 at 7, the rest at the output
    assert list(h) == [1.0, 0.75]
    assert acc == pytest.approx(0.5)  # sample 1's exit answer is wrong, sample 2's output is wrong
    a, h, acc = em.stats([ExitPoint(7, 0.96)])  # off the grid: computed from the samples
    assert list(a) == [0.0, 0.5, 0.5] and list(h) == [0.0, 1.0]


def _table(conf, ok_exit, ok_final, positions, grid):
    rows = []
    for j, pos in enumerate(positions):
        for t in grid:
            fire = conf[:, j] >= t
            rows.append(CalibrationRow(pos, "max_prob", t, float(fire.mean()),
                                       float(ok_exit[fire, j].mean()) if fire.any() else None,
                                       float(np.where(fire, ok_exit[:, j], ok_final).mean())))  # fmt: skip
    return CalibrationTable(rows, float(ok_final.mean()))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), num_exits=st.integers(1, 3))
def test_calibration_model_is_conservative(seed, num_exits):
    rng = np.random.default_rng(seed)
    s = 80
    conf = rng.random((s, num_exits)) ** rng.uniform(0.3, 2.0)
    ok_exit = rng.random((s, num_exits)) < 0.8
    ok_final = rng.random(s) < 0.9
    positions, grid = list(range(2, 2 + 3 * num_exits, 3)), (0.5, 0.9)
    exact = ExitModel.from_samples(positions, conf, ok_exit, ok_final, grid)
    cons = ExitModel.from_calibration(_table(conf, ok_exit, ok_final, positions, grid), grid)
    assert (exact.combos == cons.combos).all()
    # answered by exit k at the latest: never more than the truth (requests run at least as far)
    assert (np.cumsum(cons.answer_prob, 1) <= np.cumsum(exact.answer_prob, 1) + 1e-12).all()
    assert (cons.head_prob >= exact.head_prob - 1e-12).all()
    assert (cons.accuracy <= exact.accuracy + 1e-12).all()
    single = (exact.combos >= 0).sum(1) <= 1  # with one exit on, the table is exact
    assert np.allclose(cons.answer_prob[single], exact.answer_prob[single])
    assert np.allclose(cons.accuracy[single], exact.accuracy[single])


def test_calibration_with_samples_is_exact_and_round_trips():
    from edgeflow.core.exits import CalibrationSamples

    rng = np.random.default_rng(3)
    s, positions, grid = 120, [4, 9], (0.8, 0.9)
    conf = np.floor(rng.random((s, 2)) * 1e4) / 1e4  # stored at 1e-4 steps
    ok_exit, ok_final = rng.random((s, 2)) < 0.8, rng.random(s) < 0.9
    table = _table(conf, ok_exit, ok_final, positions, grid)
    table.samples = CalibrationSamples(tuple(positions), conf, ok_exit, ok_final)
    table = CalibrationTable.from_json(table.to_json())
    got = ExitModel.from_calibration(table, grid)
    exact = ExitModel.from_samples(positions, conf, ok_exit, ok_final, grid)
    assert got.source == "samples"
    assert np.allclose(got.answer_prob, exact.answer_prob) and np.allclose(got.accuracy, exact.accuracy)
    with pytest.raises(ValueError, match="must be"):
        CalibrationSamples((4, 9), conf[:, :1], ok_exit, ok_final)


def test_errors():
    with pytest.raises(PlanError, match="grid"):
        ExitModel.from_samples([1], [[0.5]], [[True]], [True], grid=(1.5,))
    with pytest.raises(PlanError, match="must be"):
        ExitModel.from_samples([1], [[0.5, 0.1]], [[True]], [True])
    table = CalibrationTable([CalibrationRow(4, "max_prob", 0.9, 0.5, 1.0, 0.9)], 0.9)
    with pytest.raises(PlanError, match="no max_prob row at threshold 0.8"):
        ExitModel.from_calibration(table, grid=(0.8,))
    em = ExitModel.from_calibration(table, grid=(0.9,))
    with pytest.raises(PlanError, match="no exit head"):
        em.stats([ExitPoint(5, 0.9)])
    assert ExitModel.none(0.7).stats([]) == (pytest.approx([1.0]), pytest.approx([]), 0.7)
