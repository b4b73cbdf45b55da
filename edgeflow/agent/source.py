"""Where a request enters the chain: the device decides which plan it goes by, and learns from its reply.

Every input the device takes — from its in-process caller (:class:`~edgeflow.agent.client.DeviceClient`,
``edgeflow infer``, the scenario runner) or over gRPC from another process (``edgeflow agent --node device.yaml``
serving ``Infer``) — passes one :class:`Source`, so a device deployed as its own agent process plans live exactly
like the in-process one:

1. :meth:`Source.ticket` stamps the request with its plan: the live planner's current plan, or a plan the caller
   forced (the planner then predicts it but does not re-plan on its reply), or, while the live planner is still
   measuring the chain or when there is none, the *safe plan* (the node file's plan, else device-only). With the
   plan come its predicted latency, the latency target (``fallback.slo_ms``, else the planner's SLO; a forced plan
   only gets an explicit ``fallback.slo_ms``: the caller chose it, and the planner's SLO is the planner's) and the
   stall budget (``fallback.stall_factor`` x the prediction, live plans only) the upstream call is given up at.
2. :meth:`Source.learn` hands the reply's breakdown to the live planner on a learner thread, in arrival order:
   the caller has its answer before the planner searches (a search costs milliseconds), and a burst of replies
   never blocks requests; a new ticket waits at most 10 ms for replies still being learned from (in a closed loop,
   the previous request's, whose switch the next request should see). The queue is bounded; a reply that finds it full is not learned from (counted). A reply
   that fell back (a tier down or stalled) is urgent: the next ticket waits until it has been learned from, so the
   next request is planned around the failed tier instead of waiting on it too.

Adapt before the deadline: each ticket's prediction adds the wait for the device's own compute unit (the virtual
work of the inputs ahead of it, each at its plan's predicted device compute: a Lindley recursion, reset whenever
the unit is idle, and never below the predicted compute of the jobs still queued at the unit: a job that overruns
its prediction leaves the recursion behind), and the Source keeps the upstream calls in flight. When a new request
finds one overdue (out longer than ``planner.suspect_factor`` x its prediction, at least ``planner.suspect_min_ms``),
the tier it went to is *suspect*: the planner plans without it at once, so requests stop queueing behind a link
that has just died instead of each waiting for the stall rule; a call given up (stalled, or for the latency target)
or failed makes its tier suspect at once, before its fallback has computed. The suspicion ends when that call's
reply has been learned from (its slow transfer teaches the link's new rate; a fallback marks the tier down).

Serve while planning: :meth:`Source.start_live` measures the chain and picks the first plan in the background
(:meth:`LivePlanner.start`); requests go by the safe plan until :attr:`Source.ready` is set. Bad requests never
reach a ticket (they fail admission first), so they change neither the plan nor the estimates.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import torch

from edgeflow.agent.failover import latency_target_s, stall_after_s
from edgeflow.agent.residual import Residual
from edgeflow.config import NodeConfig
from edgeflow.core.plan import ExitPoint, Plan
from edgeflow.core.planner.content import content_proxy
from edgeflow.errors import EdgeflowError
from edgeflow.transport import Breakdown, LiveState

if TYPE_CHECKING:
    from edgeflow.agent.live import LivePlanner
    from edgeflow.core.planner import Breakdown as CostBreakdown

__all__ = ["Ticket", "Source"]

_log = logging.getLogger(__name__)
_LEARN_QUEUE = 256  # replies waiting to be learned from; beyond, dropped (and counted)
_URGENT_WAIT_S = 1.0  # the longest a ticket waits for a fallback to be learned from (a search takes milliseconds)
_SETTLE_WAIT_S = 0.01  # ... and for the replies being learned from (a closed loop's previous one: its switch counts)
_COLD_STALL_S = 1.0  # the least stall budget of a plan's first request: its path is cold (first calls, range builds)
_WARM_PLANS = 4096  # plans remembered as warm


@dataclass(frozen=True)
class Ticket:
    """What one request goes by.

    Attributes:
        plan: its plan.
        predicted_s: the live planner's predicted latency for it (None without one, or before it is ready).
        target: ``time.monotonic()`` value to answer by where possible (the latency target), or None.
        stall_s: seconds after which its upstream call counts as stalled, or None.
        forced: the caller chose the plan (the planner learns from the reply but does not re-plan on it).
        live: the live planner issued it (its reply is learned from).
        id: the Source's number for it (0: not from a Source).
        t0: ``time.monotonic()`` value it started at.
        cost: its plan's predicted cost breakdown (None without a prediction).
        wait_s: its predicted wait for the device's compute unit (in ``predicted_s``).
        proxy: its input's content proxy (None: not taken, e.g. a device-only plan sends nothing).
        content_s: what its content adds to each exit outcome's path (answering position -> seconds; the
            expected value is in ``predicted_s``), from its hops' expected bytes.
        residual_s: the mean time its plan's requests spent beyond every modelled term (in ``predicted_s``; see
            :mod:`edgeflow.agent.residual`).
    """

    plan: Plan
    predicted_s: float | None = None
    target: float | None = None
    stall_s: float | None = None
    forced: bool = False
    live: bool = False
    id: int = 0
    t0: float = 0.0
    cost: CostBreakdown | None = None
    wait_s: float = 0.0
    proxy: float | None = None
    content_s: Mapping[int, float] | None = None
    residual_s: float = 0.0

    def predicted_outcome_s(self, exit_position: int) -> float | None:
        """The prediction for the path the request took: answered by the exit at ``exit_position`` (-1: the model
        output). The expectation (``predicted_s``) cannot know which requests exit; this isolates the cost model."""
        if self.cost is None or not self.cost.outcome_latency_s:
            return None
        paths = self.cost.outcome_latency_s
        x = exit_position if exit_position >= 0 else max(paths)
        path = paths.get(x)
        extra = self.content_s.get(x, 0.0) if self.content_s else 0.0
        return None if path is None else path - self.cost.source_queue_s + self.wait_s + extra + self.residual_s


class Source:
    """The device's request entry (see the module doc).

    Args:
        config: the device's node config.
        safe_plan: the plan requests go by while no live plan is ready (the agent's resolved configured plan).
        clock: monotonic seconds.
    """

    def __init__(self, config: NodeConfig, safe_plan: Plan, *, clock: Callable[[], float] = time.monotonic,
                 idle: Callable[[], bool] = lambda: False, queued: Callable[[], int] = lambda: 0):  # fmt: skip
        self.config = config
        self.idle = idle  # whether the device's compute unit has nothing running or waiting
        self.queued = queued  # how many jobs wait for the device's compute unit (not counting the one running)
        self.safe_plan = safe_plan
        self.clock = clock
        self.planner: LivePlanner | None = None
        self.ready = threading.Event()  # the live planner serves plans (set at once without one)
        self.error = ""  # why the live planner did not start
        self.first_plan_s = 0.0  # seconds from start_live to the first live plan
        self.dropped = 0  # replies not learned from (the learner's queue was full)
        self._queue: queue.Queue[tuple[Ticket, Breakdown] | None] = queue.Queue(_LEARN_QUEUE)
        self._learner: threading.Thread | None = None
        self._builder: threading.Thread | None = None
        self._lock = threading.Lock()
        self._urgent = 0  # fallbacks queued and not yet learned from
        self._learned = threading.Condition(self._lock)
        self._ids = itertools.count(1)
        self._calls: dict[int, tuple[Ticket, str, float]] = {}  # upstream calls out: id -> (ticket, tier, since)
        self._suspected: dict[int, str] = {}  # ticket id -> the tier its overdue call made suspect
        self._busy_until = 0.0  # when the device's compute unit finishes the work ahead (predicted)
        self.residual = Residual()  # per tier set: the time beyond every modelled term (agent/residual.py)
        self._warm: dict[str, tuple[str, ...]] = {}  # plans answered without a fallback since their tiers last failed
        # (their paths are warm) -> their tiers
        self._closed = False
        if not config.auto:
            self.ready.set()

    # ------------------------------------------------------------------------------------ per request
    def ticket(self, forced: Plan | None = None, t0: float | None = None,
               values: Sequence[torch.Tensor] | None = None) -> Ticket:  # fmt: skip
        """The plan, prediction, target and stall budget of a request starting at ``t0`` (default: now) whose input
        is ``values`` (its content refines the prediction of its hops' bytes; None: priced at the profiled bytes)."""
        t0 = self.clock() if t0 is None else t0
        if self._urgent:
            with self._learned:
                self._learned.wait_for(lambda: not self._urgent, timeout=_URGENT_WAIT_S)
        elif self._queue.unfinished_tasks and self.planner is not None:
            self.settle(_SETTLE_WAIT_S)  # a reply being learned from (a search takes milliseconds) may switch the plan
        planner, fallback, n = self.planner, self.config.fallback, next(self._ids)
        if planner is not None:
            self._find_overdue(planner, t0)
        if forced is not None:
            cost = planner.predict(forced) if planner is not None else None
            predicted, wait = self._predict(cost, t0)
            proxy, extra, paths = _content(planner, forced, values, cost)
            left = self.residual.seconds(forced.tiers) if predicted is not None else 0.0
            predicted = predicted + extra + left if predicted is not None else None
            return Ticket(forced, predicted, _at(t0, latency_target_s(fallback, None)), None, forced=True,
                          live=planner is not None, id=n, t0=t0, cost=cost, wait_s=wait, proxy=proxy,
                          content_s=paths, residual_s=left)  # fmt: skip
        if planner is None:
            return Ticket(self.safe_plan, None, _at(t0, latency_target_s(fallback, self.config.planner.slo_ms)),
                          id=n, t0=t0)  # fmt: skip
        plan, cost = planner.current_breakdown()
        predicted, wait = self._predict(cost, t0)
        proxy, extra, paths = _content(planner, plan, values, cost)
        left = self.residual.seconds(plan.tiers) if predicted is not None else 0.0
        predicted = predicted + extra + left if predicted is not None else None
        target = _at(t0, latency_target_s(fallback, planner.settings.slo_ms))
        stall = stall_after_s(fallback, predicted - wait if predicted is not None else None)
        if stall is not None and str(plan) not in self._warm:
            stall = max(stall, _COLD_STALL_S)  # a plan's first request: its path is cold (channels, range builds)
        return Ticket(plan, predicted, target, stall, live=True, id=n, t0=t0, cost=cost, wait_s=wait, proxy=proxy,
                      content_s=paths, residual_s=left)  # fmt: skip

    def key_frame(self, ticket: Ticket) -> Ticket:
        """``ticket`` for a stream frame that goes as a key frame on the device's hop: predicted, and given its stall
        budget, at the hop's full bytes (the plan is priced at the stream's average, see agent/streamcost.py), so a
        key frame's longer call does not make its upstream suspect."""
        planner = self.planner
        if planner is None or ticket.cost is None or ticket.predicted_s is None:
            return ticket
        cost = planner.predict_key_frame(ticket.plan)
        if cost is None or cost.latency_s <= ticket.cost.latency_s:
            return ticket
        predicted = ticket.predicted_s + cost.latency_s - ticket.cost.latency_s
        stall = ticket.stall_s
        if stall is not None:
            stall = max(stall, stall_after_s(self.config.fallback, predicted - ticket.wait_s) or 0.0)
        return replace(ticket, predicted_s=predicted, stall_s=stall, cost=cost)

    def _predict(self, cost: CostBreakdown | None, t0: float) -> tuple[float | None, float]:
        """``(predicted latency, its wait for the device's compute unit)`` of a request starting at ``t0`` whose
        plan costs ``cost``; its device compute joins the work ahead of later requests."""
        if cost is None:
            return None, 0.0
        base = cost.latency_s - cost.source_queue_s  # the planner's average queue, replaced by this request's own
        service = cost.compute_s.get(self.config.role, 0.0)
        with self._lock:
            if self.idle():
                self._busy_until = t0
            wait = max(0.0, self._busy_until - t0) if service > 0 else 0.0
            if service > 0:
                # the unit overran the work predicted ahead (a job far over its prediction: a pause there counts
                # 64x on a board-class device) and jobs still wait: each of them takes its turn first
                wait = max(wait, self.queued() * service)
                self._busy_until = t0 + wait + service
        return base + wait, wait

    def local_work(self, start: int, stop: int, exits: Sequence[ExitPoint] = ()) -> None:
        """The device's compute unit takes on ``[start:stop]`` now with the plan's ``exits`` (a fallback): later
        requests wait for it too."""
        planner = self.planner
        if planner is None:
            return
        service = planner.expected_compute_s(start, stop, exits)
        now = self.clock()
        with self._lock:
            self._busy_until = max(self._busy_until, now) + service

    def _find_overdue(self, planner: LivePlanner, now: float) -> None:
        """Make suspect the tier of any upstream call out longer than its budget (see the module doc)."""
        s = planner.settings
        with self._lock:
            calls = list(self._calls.items())
        for n, (ticket, tier, since) in calls:
            predicted = ticket.predicted_s
            if predicted is None or n in self._suspected:
                continue
            budget = max(s.suspect_factor * predicted, s.suspect_min_ms / 1e3)
            if now - ticket.t0 > budget:
                with self._lock:
                    self._suspected[n] = tier
                planner.suspect(tier, f"a call to it has been out {now - since:.2f} s, predicted {predicted:.3f} s "
                                      f"for the whole request")  # fmt: skip

    @contextmanager
    def upstream_call(self, ticket: Ticket | None, tier: str) -> Iterator[None]:
        """Bracket a request's call to the next tier (``tier``), so a later ticket can find it overdue."""
        if ticket is None or not ticket.id or self.planner is None or self.planner.settings.suspect_factor <= 0:
            yield
            return
        with self._lock:
            self._calls[ticket.id] = (ticket, tier, self.clock())
        try:
            yield
        except EdgeflowError as e:  # given up (stalled, target) or failed: plan around it now, not after the fallback
            self._cool(tier)
            with self._lock:
                first = ticket.id not in self._suspected
                self._suspected.setdefault(ticket.id, tier)
            if first:
                self.planner.suspect(tier, f"a call to it failed: {type(e).__name__}")
            raise
        finally:
            with self._lock:
                self._calls.pop(ticket.id, None)

    def answered(self, ticket: Ticket, breakdown: Breakdown) -> None:
        """A request went through by its plan (no fallback): that plan's path is warm. One that fell back: the plans
        through its upstream tiers are cold again."""
        if breakdown.fallback:  # a tier behind the next one failed (the next tier fell back): that path is cold too
            for tier in ticket.plan.tiers[1:]:
                self._cool(tier)
        elif len(self._warm) < _WARM_PLANS:
            with self._lock:
                self._warm[str(ticket.plan)] = ticket.plan.tiers

    def _cool(self, tier: str) -> None:
        """A call to ``tier`` failed: plans through it are cold again. A tier that comes back (restarted, or
        reloaded after a stall) opens new channels and builds its ranges again, so the first request after its return
        gets the cold stall budget instead of being given up at a budget sized for a warm path."""
        with self._lock:
            for key in [k for k, tiers in self._warm.items() if tier in tiers]:
                del self._warm[key]

    def release(self, ticket: Ticket) -> None:
        """The request will not be learned from (a warm-up, or it failed): end any suspicion its call raised."""
        with self._lock:
            tier = self._suspected.pop(ticket.id, None)
        if tier is not None and self.planner is not None:
            self.planner.clear_suspect(tier)

    def learn(self, ticket: Ticket, breakdown: Breakdown) -> None:
        """Queue a reply for the live planner (no-op without one)."""
        self.answered(ticket, breakdown)
        if ticket.live:
            self.residual.observe(ticket.plan.tiers, breakdown)
        if not ticket.live or self.planner is None or self._closed:
            self.release(ticket)
            return
        if self._learner is None:
            self._start_learner()
        urgent = bool(breakdown.fallback)
        with self._lock:
            self._urgent += urgent
        try:
            self._queue.put_nowait((ticket, breakdown))
        except queue.Full:
            self.dropped += 1
            self._learned_one(urgent)
            self.release(ticket)

    def settle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every reply queued so far has been learned from (tests, benchmarks); False on timeout."""
        end = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < end:
            time.sleep(0.0005)
        return not self._queue.unfinished_tasks

    def _start_learner(self) -> None:
        with self._lock:
            if self._learner is None:
                self._learner = threading.Thread(target=self._learn_loop, name="edgeflow-learn", daemon=True)
                self._learner.start()

    def _learn_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                ticket, breakdown = item
                planner = self.planner
                if planner is not None:
                    planner.observe(breakdown, ticket.plan, decide=not ticket.forced, proxy=ticket.proxy)
                self.release(ticket)  # its overdue call, if it was one, taught what it could
            except Exception:  # noqa: BLE001 - a planner bug must not stop learning from the next reply
                _log.exception("live planner: learning from a reply failed")
            finally:
                self._queue.task_done()
                if item is not None:
                    self._learned_one(bool(item[1].fallback))

    def _learned_one(self, urgent: bool) -> None:
        if urgent:
            with self._learned:
                self._urgent -= 1
                self._learned.notify_all()

    # ------------------------------------------------------------------------------------ the live planner
    def attach(self, planner: LivePlanner, first_plan_s: float = 0.0) -> None:
        """Serve ``planner``'s plans from now on."""
        self.planner = planner
        self.first_plan_s = first_plan_s
        self.ready.set()

    def start_live(self, build: Callable[[], LivePlanner], *, wait: bool, after: Callable[[], None] | None = None) -> None:
        """Build the live planner with ``build`` (measure the chain, choose the first plan) in the background, then
        :meth:`attach` it and run ``after`` (e.g. building ranges). ``wait``: block until it is attached or failed.

        Raises:
            EdgeflowError: with ``wait``, the planner could not start (without, it is logged and the safe plan kept).
        """
        t0 = time.monotonic()

        def run() -> None:
            try:
                planner = build()
            except Exception as e:  # noqa: BLE001 - reported in Describe; serving goes on under the safe plan
                if self._closed:  # the agent closed its upstream under the measurement: nothing to report
                    return
                if not isinstance(e, EdgeflowError):
                    _log.exception("live planner: start-up failed")
                self.error = f"{type(e).__name__}: {e}"
                _log.warning("live planner did not start (%s); serving the safe plan %s", self.error, self.safe_plan)
                self.ready.set()
                return
            if self._closed:
                planner.close()
                return
            self.attach(planner, time.monotonic() - t0)
            _log.info("live planner ready after %.2f s: %s", self.first_plan_s, planner.plan)
            if after is not None:
                after()

        if wait:
            run()
            if self.error:
                raise EdgeflowError(self.error)
            return
        self._builder = threading.Thread(target=run, name="edgeflow-plan-start", daemon=True)
        self._builder.start()

    def state(self) -> LiveState | None:
        """What ``Describe`` reports about live planning (None for a device without ``plan: auto``)."""
        if not self.config.auto:
            return None
        planner = self.planner
        base = LiveState(ready=planner is not None, safe_plan=str(self.safe_plan), first_plan_s=self.first_plan_s,
                         error=self.error)  # fmt: skip
        return planner.state(base) if planner is not None else base

    def current_plan(self) -> Plan:
        """The plan the next request goes by unless the caller forces one."""
        return self.planner.current()[0] if self.planner is not None else self.safe_plan

    def close(self) -> None:
        self._closed = True
        if self._learner is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass
            self._learner.join(timeout=5.0)
        # a builder still measuring is not waited for: it ends once the agent closes its upstream under it
        if self.planner is not None:
            self.planner.close()


def _content(planner: LivePlanner | None, plan: Plan, values: Sequence[torch.Tensor] | None,
             cost: CostBreakdown | None) -> tuple[float | None, float, dict[int, float] | None]:  # fmt: skip
    """``(proxy, expected extra seconds, extra seconds per exit outcome)`` of an input's content on ``plan``: only
    for a plan that sends something from the device (a device-only plan's latency does not depend on bytes)."""
    if planner is None or values is None or cost is None:
        return None, 0.0, None
    if len(plan.stages) < 2 and plan.stages[0].tier == planner.model.names[0]:
        return None, 0.0, None
    proxy = content_proxy(values)
    extra, paths = planner.content_s(plan, proxy)
    return proxy, extra, paths


def _at(t0: float, after_s: float | None) -> float | None:
    return t0 + after_s if after_s is not None else None
