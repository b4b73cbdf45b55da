"""Brute force: enumerate every plan, predict it with :meth:`CostModel.evaluate`, keep the best.

The reference the vectorised search is tested against (tests and ``benchmarks/bench_planner.py``). It shares no
arithmetic with ``search.py``: each plan is walked outcome by outcome. Use it on small models only.
"""

from __future__ import annotations

import math
from typing import Iterator

from .costmodel import Choice, Conditions, CostModel

__all__ = ["all_choices", "brute_force"]


def all_choices(model: CostModel) -> Iterator[Choice]:
    """Every plan of the search space: tier sets x cuts x codecs per hop x exit combos."""
    m, cuts = len(model.tiers), model.cuts
    act, inp = model.activation_codecs, model.input_codecs
    for th in range(model.exit_model.num_combos):
        exits = model.exit_model.exits_of(th)
        yield Choice((0,), (), (), exits)
        for j in range(1, m):
            for ci in inp:
                yield Choice((j,), (), (ci,), exits)
            for c in cuts:
                for k in act:
                    yield Choice((0, j), (c,), (k,), exits)
        if m == 3:
            for c2 in cuts:
                for ci in inp:
                    for k2 in act:
                        yield Choice((1, 2), (c2,), (ci, k2), exits)
            for a, c1 in enumerate(cuts):
                for c2 in cuts[a + 1 :]:
                    for k1 in act:
                        for k2 in act:
                            yield Choice((0, 1, 2), (c1, c2), (k1, k2), exits)


def brute_force(
    model: CostModel, cond: Conditions, objective: str = "latency", *, latency_slo_s: float | None = None
) -> tuple[float, Choice | None]:
    """``(best objective value, its plan)`` over every feasible plan; ``(inf, None)`` when none is feasible."""
    best, best_choice = math.inf, None
    for ch in all_choices(model):
        if model.violations(ch):
            continue
        b = model.evaluate(ch, cond)
        if latency_slo_s is not None and b.latency_s > latency_slo_s:
            continue
        v = b.objective(objective)
        if v < best:
            best, best_choice = v, ch
    return best, best_choice
