"""Early-exit behaviour for every combination of exit thresholds the planner considers.

A *combo* assigns each exit head either a threshold from a small grid or *off*. For each combo the planner
needs, per request:

- ``answer_prob[j]``: the probability the request is answered by exit ``j`` (last column: the model output);
- ``head_prob[j]``: the probability head ``j`` runs at all (enabled, and not answered by an earlier exit);
- ``accuracy``: the accuracy of the answers (a fraction, like the calibration table's).

Two sources (BranchyNet-style exits, Teerapittayanon et al. 2016; the expectation over exit outcomes follows
SPINN, Laskaridis et al., MobiCom 2020):

``from_samples`` (exact): per-sample confidences and correctness on held-out data, so the joint behaviour of
several exits is counted, not assumed.

``from_calibration`` (the artifact's table holds each exit *measured alone*, i.e. marginals only). With one exit
enabled the row is used as is. With several, the joint is unknown and the model stays conservative:

- exit probabilities: confident sets are assumed *nested* — P(answered by e_k) = max over enabled i <= k of
  r_i. That is the fewest early answers consistent with the marginals, so latency, energy and load are never
  under-estimated (a later answer never costs less: it has run more of the model and more hops).
- accuracy: the first enabled exit answers exactly its confident set, so it costs its measured loss
  ``final - overall_i``; a later exit k answers a subset of its confident set and can lose at most the wrong
  answers in it, ``r_k * (1 - exit_accuracy_k)``. The sum is a lower bound on the combo's accuracy.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgeflow.core.exits import CalibrationTable
from edgeflow.core.plan import ExitPoint
from edgeflow.errors import PlanError

__all__ = ["DEFAULT_EXIT_GRID", "ExitModel"]

# A small grid: each exit is off or one of these. Every value is a row of exits.DEFAULT_THRESHOLDS, so a
# calibration table made with the defaults has them all.
DEFAULT_EXIT_GRID: tuple[float, ...] = (0.8, 0.9, 0.95, 0.99)


def _combos(num_exits: int, grid_size: int, max_enabled: int | None) -> np.ndarray:
    """(Q, E) int array: grid index per exit, -1 = off; first row is all off."""
    rows = [
        c
        for c in itertools.product(range(-1, grid_size), repeat=num_exits)
        if max_enabled is None or sum(i >= 0 for i in c) <= max_enabled
    ]
    return np.array(rows, dtype=np.int64).reshape(len(rows), num_exits)


@dataclass(frozen=True, eq=False)
class ExitModel:
    """Exit behaviour per threshold combo. Build with a ``from_*`` constructor.

    Attributes:
        positions: exit head positions, increasing.
        grid: thresholds tried at each exit (besides off).
        combos: (Q, E) grid index per exit, -1 = off; row 0 is all off.
        answer_prob: (Q, E + 1) probability of being answered at exit j; column E is the model output.
        head_prob: (Q, E) probability head j runs (0 when off).
        accuracy: (Q,) accuracy of the answers, a fraction.
        final_accuracy: accuracy of the full model on the same data.
        source: ``"none"``, ``"samples"`` or ``"calibration"``.
    """

    positions: tuple[int, ...]
    grid: tuple[float, ...]
    combos: np.ndarray
    answer_prob: np.ndarray
    head_prob: np.ndarray
    accuracy: np.ndarray
    final_accuracy: float
    source: str
    _samples: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    _calibration: CalibrationTable | None = None
    _criterion: str = "max_prob"

    # ------------------------------------------------------------------------------------ building
    @classmethod
    def none(cls, final_accuracy: float = 1.0) -> "ExitModel":
        """No exits: every request runs the whole model."""
        combos, answer, head = np.zeros((1, 0), np.int64), np.ones((1, 1)), np.zeros((1, 0))
        return cls((), (), combos, answer, head, np.array([final_accuracy]), final_accuracy, "none")

    @classmethod
    def from_samples(
        cls,
        positions: Sequence[int],
        confidence: np.ndarray,
        exit_correct: np.ndarray,
        final_correct: np.ndarray,
        grid: Sequence[float] = DEFAULT_EXIT_GRID,
        max_enabled: int | None = None,
    ) -> "ExitModel":
        """Exact joint behaviour from per-sample data (e.g. the calibration split).

        Args:
            positions: exit positions, increasing.
            confidence: (S, E) confidence of each head on each sample (``edgeflow.core.exits.confidence``).
            exit_correct: (S, E) bool, head j's answer is right.
            final_correct: (S,) bool, the model output is right.
            grid: thresholds tried per exit; a sample exits when confidence >= threshold.
            max_enabled: at most this many exits on at once (None: any number).

        Raises:
            PlanError: shapes disagree, positions not increasing, or no samples.
        """
        positions = tuple(int(p) for p in positions)
        conf = np.asarray(confidence, dtype=np.float64)
        ok_exit = np.asarray(exit_correct, dtype=bool)
        ok_final = np.asarray(final_correct, dtype=bool)
        s, e = len(ok_final), len(positions)
        if s == 0:
            raise PlanError("exit model: no samples")
        if conf.shape != (s, e) or ok_exit.shape != (s, e):
            raise PlanError(f"exit model: confidence {conf.shape} and exit_correct {ok_exit.shape} must be ({s}, {e})")
        _check_positions(positions)
        grid = _check_grid(grid)
        combos = _combos(e, len(grid), max_enabled)
        thr = np.where(combos >= 0, np.asarray(grid + (0.0,))[combos], np.inf)  # (Q, E); off = never exits
        answer, head, acc = _joint_stats(thr, conf, ok_exit, ok_final)
        return cls(positions, grid, combos, answer, head, acc, float(ok_final.mean()), "samples",
                   _samples=(conf, ok_exit, ok_final))

    @classmethod
    def from_calibration(
        cls,
        table: CalibrationTable,
        grid: Sequence[float] = DEFAULT_EXIT_GRID,
        criterion: str = "max_prob",
        max_enabled: int | None = None,
    ) -> "ExitModel":
        """Behaviour from the artifact's calibration table: exact joint statistics (:meth:`from_samples`)
        when the table keeps its per-sample data (``max_prob``), else conservative marginals (see the module doc).

        Raises:
            PlanError: a grid threshold has no row in the table for some exit.
        """
        sm = table.samples
        if sm is not None and criterion == "max_prob" and list(sm.positions) == list(table.positions):
            return cls.from_samples(sm.positions, sm.confidence, sm.exit_correct, sm.final_correct, grid, max_enabled)
        positions = tuple(table.positions)
        grid = _check_grid(grid)
        combos = _combos(len(positions), len(grid), max_enabled)
        rate = np.zeros((len(positions), len(grid)))
        loss = np.zeros_like(rate)  # pts of accuracy lost when this exit is the first enabled one
        wrong = np.zeros_like(rate)  # upper bound on wrong answers it gives when it is not
        for j, pos in enumerate(positions):
            for g, t in enumerate(grid):
                row = _row(table, pos, t, criterion)
                rate[j, g] = row.exit_rate
                loss[j, g] = table.final_accuracy - row.overall_accuracy
                wrong[j, g] = row.exit_rate * (1.0 - (row.exit_accuracy if row.exit_accuracy is not None else 1.0))
        q = len(combos)
        answer = np.zeros((q, len(positions) + 1))
        head = np.zeros((q, len(positions)))
        acc = np.full(q, table.final_accuracy)
        for r, combo in enumerate(combos):
            done = 0.0  # P(answered so far), nested assumption
            first = True
            for j, g in enumerate(combo):
                if g < 0:
                    continue
                head[r, j] = 1.0 - done
                reach = max(done, rate[j, g])
                answer[r, j] = reach - done
                done = reach
                acc[r] -= loss[j, g] if first else wrong[j, g]
                first = False
            answer[r, -1] = 1.0 - done
        return cls(positions, grid, combos, answer, head, acc, table.final_accuracy, "calibration",
                   _calibration=table, _criterion=criterion)

    # ------------------------------------------------------------------------------------ queries
    @property
    def num_combos(self) -> int:
        return len(self.combos)

    def exits_of(self, combo: int) -> tuple[ExitPoint, ...]:
        """The plan's ``exits@`` entries for a combo row."""
        return tuple(
            ExitPoint(p, self.grid[g]) for p, g in zip(self.positions, self.combos[combo]) if g >= 0
        )

    def combo_of(self, exits: Sequence[ExitPoint]) -> int | None:
        """The combo row for these exits, or None when they are not on the grid."""
        want = np.full(len(self.positions), -1)
        for e in exits:
            if e.position not in self.positions:
                return None
            g = next((i for i, t in enumerate(self.grid) if abs(t - e.threshold) < 1e-12), None)
            if g is None:
                return None
            want[self.positions.index(e.position)] = g
        hit = np.flatnonzero((self.combos == want).all(axis=1))
        return int(hit[0]) if len(hit) else None

    def stats(self, exits: Sequence[ExitPoint]) -> tuple[np.ndarray, np.ndarray, float]:
        """``(answer_prob (E+1,), head_prob (E,), accuracy)`` for any exits, also off the grid.

        Raises:
            PlanError: an exit has no head here, or (calibration source) no row at its threshold.
        """
        row = self.combo_of(exits)
        if row is not None:
            return self.answer_prob[row], self.head_prob[row], float(self.accuracy[row])
        for e in exits:
            if e.position not in self.positions:
                raise PlanError(f"exit at {e.position}: no exit head there (heads at {list(self.positions)})")
        thr = np.full((1, len(self.positions)), np.inf)
        for e in exits:
            thr[0, self.positions.index(e.position)] = e.threshold
        if self._samples is not None:
            a, h, acc = _joint_stats(thr, *self._samples)
            return a[0], h[0], float(acc[0])
        assert self._calibration is not None, "a no-exit model has no exits to look up"
        extra = ExitModel.from_calibration(
            self._calibration, tuple(sorted({e.threshold for e in exits})), self._criterion
        )
        r = extra.combo_of(exits)
        assert r is not None
        return extra.answer_prob[r], extra.head_prob[r], float(extra.accuracy[r])


def _joint_stats(
    thr: np.ndarray, conf: np.ndarray, ok_exit: np.ndarray, ok_final: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per combo (rows of thr (Q, E)): answer_prob (Q, E+1), head_prob (Q, E), accuracy (Q,)."""
    q, e = thr.shape
    s = len(ok_final)
    fires = conf[None, :, :] >= thr[:, None, :]  # (Q, S, E)
    any_fire = fires.any(axis=2)  # (Q, S)
    first = np.where(any_fire, fires.argmax(axis=2), e)  # (Q, S): exit index answering, E = model output
    answer = np.stack([(first == j).mean(axis=1) for j in range(e + 1)], axis=1)  # (Q, E+1)
    enabled = np.isfinite(thr)  # (Q, E)
    before = np.cumsum(answer[:, :e], axis=1) - answer[:, :e]  # (Q, E): answered before exit j
    reach = 1.0 - before
    head = np.where(enabled, reach, 0.0)
    correct = np.concatenate([ok_exit, ok_final[:, None]], axis=1)  # (S, E+1)
    acc = correct[np.arange(s)[None, :], first].mean(axis=1)  # (Q,)
    return answer, head, acc


def _row(table: CalibrationTable, position: int, threshold: float, criterion: str):
    rows = table.rows_for(position, criterion)
    row = next((r for r in rows if abs(r.threshold - threshold) < 1e-9), None)
    if row is None:
        have = sorted({r.threshold for r in rows})
        raise PlanError(
            f"exit at {position}: the calibration table has no {criterion} row at threshold {threshold} (rows at {have})"
        )
    return row


def _check_positions(positions: tuple[int, ...]) -> None:
    if any(b <= a for a, b in zip(positions, positions[1:])) or any(p <= 0 for p in positions):
        raise PlanError(f"exit positions must be positive and increasing, got {list(positions)}")


def _check_grid(grid: Sequence[float]) -> tuple[float, ...]:
    g = tuple(float(t) for t in grid)
    if any(not 0.0 < t <= 1.0 for t in g) or len(set(g)) != len(g):
        raise PlanError(f"exit threshold grid must hold distinct values in (0, 1], got {list(grid)}")
    return g
