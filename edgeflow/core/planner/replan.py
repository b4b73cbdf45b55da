"""Re-planning with hysteresis: a pure state machine over observations and time.

Each :meth:`Replanner.decide` searches the best plan for the current conditions and compares it with the plan
in use, both predicted under the *same* conditions. It switches only when some other plan beats the current one
by ``margin`` (relative) on every evaluation for at least ``hold_s`` seconds *and* ``min_evaluations``
evaluations in a row, and not sooner than ``min_interval_s`` after the previous switch — unless a link's bandwidth
estimate has moved ``changed_ratio`` times (either way) since the current plan was chosen: the interval guards
against flapping on noise and on the model's own learning (compute corrections), and a link that halved or
doubled is a real change (a 10x drop right after a switch must not wait out the interval). An infeasible current plan (e.g. over the latency SLO) is left
at once. Every decision carries a one-line reason for the log.

Tiers can go down and come back (:meth:`Replanner.set_unavailable`, told by the caller, who sees the failures):
a current plan that uses a down tier is infeasible, so it is left at once; when a tier comes back, decisions take
the best plan at once, without hysteresis, for ``back_window_s`` (the conditions changed for certain, not by
noise, and the returning tier's link is being measured afresh: its first samples may be slow).

The caller applies the returned plan (the agents switch at a request boundary); the replanner takes it as current
when it returns it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from typing import Collection

from edgeflow.core.plan import Plan
from edgeflow.errors import PlanError

from .costmodel import Conditions
from .estimator import ConditionsTracker
from .search import Planner, SearchResult

__all__ = ["Decision", "Replanner"]



@dataclass(frozen=True)
class Decision:
    """The outcome of one evaluation.

    Attributes:
        plan: the plan to switch to, or None to keep the current one.
        reason: why, in one line.
        current: the plan in use after this decision.
        current_value: the current plan's predicted objective before the decision (None without conditions).
        best_value: the best plan's predicted objective (None without conditions).
        result: the search result, when a search ran.
    """

    plan: Plan | None
    reason: str
    current: Plan
    current_value: float | None = None
    best_value: float | None = None
    result: SearchResult | None = None

    @property
    def switched(self) -> bool:
        return self.plan is not None


class Replanner:
    """Hysteresis around :class:`Planner` (see the module doc).

    Args:
        planner: the search over the cost model.
        current: the plan in use.
        objective, latency_slo_s: what to optimise (see :meth:`Planner.search`).
        tracker: the observations; default: a :class:`ConditionsTracker` for the model's chain.
        margin: relative gain a challenger must keep (0.10 = 10%).
        hold_s: how long it must keep it.
        min_evaluations: in how many evaluations in a row.
        min_interval_s: the least time between two switches.
        back_window_s: how long after a tier's return a better plan is taken without hysteresis.
        changed_ratio: ``min_interval_s`` is waived once a link's bandwidth estimate has moved this many times
            since the current plan was chosen (see the module doc); ``None``: never.
    """

    def __init__(
        self,
        planner: Planner,
        current: Plan,
        *,
        objective: str = "latency",
        latency_slo_s: float | None = None,
        tracker: ConditionsTracker | None = None,
        margin: float = 0.10,
        hold_s: float = 0.3,
        min_evaluations: int = 2,
        min_interval_s: float = 1.0,
        back_window_s: float = 2.0,
        changed_ratio: float | None = 2.0,
    ):
        if changed_ratio is not None and not changed_ratio > 1:
            raise PlanError(f"replanner: changed_ratio {changed_ratio} must be > 1")
        self.changed_ratio = changed_ratio
        self._chosen_bw: tuple[float, ...] | None = None  # link bandwidths when the current plan was chosen
        self.planner = planner
        self.model = planner.model
        self.current = self.model.canonical(current)  # raises PlanError when it does not fit
        self.objective, self.latency_slo_s = objective, latency_slo_s
        self.tracker = tracker or ConditionsTracker(self.model.names)
        self.margin, self.hold_s, self.min_evaluations, self.min_interval_s = margin, hold_s, min_evaluations, min_interval_s
        self._pending_since: float | None = None
        self._pending_count = 0
        self._last_switch_s: float | None = None
        self.unavailable: frozenset[str] = frozenset()  # tiers down (see set_unavailable)
        self.back_window_s = back_window_s
        self._back: frozenset[str] = frozenset()  # tiers back recently (see back_window_s) ...
        self._back_since: float | None = None  # ... since the first decision after their return

    def set_unavailable(self, tiers: Collection[str], *, back: bool = True) -> None:
        """The tiers that are down now (all others are up); the next decision plans around them. ``back``: the
        tiers no longer listed came back from an outage (their best plan is taken without hysteresis for
        ``back_window_s``); False: they were only avoided (a stall, a suspicion), and plans with them again must win
        through the hysteresis like any other.

        Raises:
            PlanError: a tier not in the chain, or the source.
        """
        new = frozenset(tiers)
        self.planner.reach_of(new)
        if back:
            self._back |= self.unavailable - new
        self.unavailable = new

    # ------------------------------------------------------------------------------------ observations
    def observe_transfer(self, link: int, nbytes: float, seconds: float, now_s: float, *, includes_rtt: bool = True) -> bool:
        """A transfer on link ``link`` (0: source to the next tier); see :meth:`LinkEstimator.observe_transfer`."""
        return self.tracker.observe_transfer(link, nbytes, seconds, now_s, includes_rtt=includes_rtt)

    def observe_rtt(self, link: int, rtt_s: float, now_s: float) -> None:
        self.tracker.observe_rtt(link, rtt_s, now_s)

    def observe_stage(self, tier: str, measured_s: float, start: int, stop: int, exits: tuple[int, ...] = (),
                      now_s: float = 0.0) -> None:  # fmt: skip
        """A tier's measured compute for ``[start:stop]`` (and the heads at ``exits`` it evaluated): a sample of its
        affine correction, in units of its whole-model prediction (see :class:`ComputeCorrection`)."""
        predicted = self.model.stage_compute_s(tier, start, stop, exits)
        whole = self.model.stage_compute_s(tier, 0, self.model.num_positions)
        self.tracker.observe_stage(tier, measured_s, predicted, whole, now_s)

    def observe_queue(self, tier: str, queue_s: float) -> None:
        self.tracker.observe_queue(tier, queue_s)

    def stale_links(self, now_s: float) -> list[int]:
        """Links to probe actively now (no recent usable transfer)."""
        return self.tracker.stale_links(now_s)

    # ------------------------------------------------------------------------------------ decisions
    def decide(self, now_s: float) -> Decision:
        """Evaluate with the tracker's current conditions."""
        cond = self.tracker.conditions(now_s)
        if cond is None:
            self._reset()
            return Decision(None, "keep: no bandwidth/RTT estimate yet for every link", self.current)
        return self.decide_with(cond, now_s)

    def decide_with(self, cond: Conditions, now_s: float) -> Decision:
        """Evaluate under given conditions (the state machine itself; :meth:`decide` feeds it the tracker's)."""
        md, obj = self.model, self.objective
        down = self.unavailable
        if self._back and self._back_since is None:
            self._back_since = now_s
        if self._back_since is not None and now_s - self._back_since > self.back_window_s:
            self._back, self._back_since = frozenset(), None
        back = self._back
        try:
            result = self.planner.search(cond, obj, latency_slo_s=self.latency_slo_s, top_k=0, unavailable=down)
        except PlanError:
            if not down or self.latency_slo_s is None:
                raise
            # with tiers down, the best plan left beats no plan, SLO or not
            result = self.planner.search(cond, obj, top_k=0, unavailable=down)
        best = result.best
        cur = md.choice_of(self.current)
        cur_b = md.evaluate(cur, cond)
        cur_v = cur_b.objective(obj)
        broken = md.violations(cur)
        if self.latency_slo_s is not None and cur_b.latency_s > self.latency_slo_s:
            broken.append(f"latency {cur_b.latency_s * 1e3:.1f} ms over the SLO {self.latency_slo_s * 1e3:.1f} ms")
        used_down = [t for t in self.current.tiers if t in down or md.names.index(t) >= self.planner.reach_of(down)]
        if used_down:
            broken.append(f"{', '.join(used_down)} unreachable ({', '.join(sorted(down))} down)")
        unit = _unit(obj)
        bw = tuple(link.bandwidth_bps for link in cond.links)
        if self._chosen_bw is None:
            self._chosen_bw = bw
        if best.plan == self.current:
            self._reset()
            why = f"keep: {self.current} is the best ({unit(cur_v)})"
            return Decision(None, why, self.current, cur_v, best.value, result)
        if back:
            self._back, self._back_since = frozenset(), None
            return self._switch(best, now_s, cur_v, result, f"{', '.join(sorted(back))} back", bw)
        if broken:
            return self._switch(best, now_s, cur_v, result, f"current plan infeasible ({'; '.join(broken)})", bw)
        gain = (cur_v - best.value) / cur_v if cur_v > 0 and math.isfinite(cur_v) else 0.0
        if gain < self.margin:
            self._reset()
            why = (f"keep: best {best} predicts {unit(best.value)} vs {unit(cur_v)}: "
                   f"gain {gain:.1%} < margin {self.margin:.0%}")  # fmt: skip
            return Decision(None, why, self.current, cur_v, best.value, result)
        if self._pending_since is None:
            self._pending_since = now_s
        self._pending_count += 1
        held = now_s - self._pending_since
        since_switch = math.inf if self._last_switch_s is None else now_s - self._last_switch_s
        moved = _moved(bw, self._chosen_bw)
        changed = self.changed_ratio is not None and moved >= self.changed_ratio
        if held >= self.hold_s and self._pending_count >= self.min_evaluations and (since_switch >= self.min_interval_s or changed):
            why = (f"{unit(cur_v)} -> {unit(best.value)} (-{gain:.1%}), held {held:.2f} s over "
                   f"{self._pending_count} evaluations")  # fmt: skip
            if since_switch < self.min_interval_s:
                why += f"; {since_switch:.2f} s after the last switch: a link's bandwidth moved {moved:.1f}x since"
            return self._switch(best, now_s, cur_v, result, why, bw)
        return Decision(
            None,
            f"pending: {best} gains {gain:.1%} for {held:.2f} s / {self._pending_count} evaluations "
            f"(needs {self.hold_s:g} s, {self.min_evaluations}, {self.min_interval_s:g} s after a switch)",
            self.current, cur_v, best.value, result,
        )  # fmt: skip

    def _switch(self, best, now_s: float, cur_v: float, result: SearchResult, why: str,
                bw: tuple[float, ...]) -> Decision:
        old = self.current
        self.current = best.plan
        self._reset()
        self._last_switch_s = now_s
        self._chosen_bw = bw
        return Decision(best.plan, f"switch: {old} -> {best}: {why}", best.plan, cur_v, best.value, result)

    def _reset(self) -> None:
        self._pending_since, self._pending_count = None, 0


def _unit(objective: str):
    if objective == "energy":
        return lambda v: f"{v * 1e3:.2f} mJ"
    if objective == "throughput":
        return lambda v: f"{1.0 / v:.1f} req/s" if v > 0 else "inf req/s"
    return lambda v: f"{v * 1e3:.2f} ms"


def _moved(now: tuple[float, ...], then: tuple[float, ...] | None) -> float:
    """The largest factor (either way) by which a link's bandwidth moved from ``then`` to ``now``; 1 without both."""
    if then is None or len(then) != len(now):
        return 1.0
    return max((max(a / b, b / a) for a, b in zip(now, then) if a > 0 and b > 0), default=1.0)
