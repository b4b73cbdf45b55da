"""Driving a workload: the device side of a run, and the request schedule.

Two ways a device sends a request:

- :class:`PlanSender`: the device agent in this process (the same :class:`~edgeflow.agent.Agent` that
  ``edgeflow infer --node`` runs), every request stamped with one fixed plan and input codec; upstream tiers
  run what the request's plan gives them. Several devices share the loaded model but each has its own agent,
  compute unit (its own emulated hardware) and link.
- :class:`LiveSender`: the same, with the device's live planner choosing each request's plan.

:func:`drive` sends the requests: open loop at the scheduled offsets (latency counts from the scheduled send
time, so waiting behind earlier requests on the device counts), or closed loop with a fixed number
outstanding. Every loop is bounded by the run's deadline.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import torch

from edgeflow.agent.agent import Agent
from edgeflow.agent.failover import latency_target_s, stall_after_s
from edgeflow.core.plan import ExitPoint, Plan
from edgeflow.errors import EdgeflowError
from edgeflow.transport import Breakdown
from edgeflow.transport.tracing import Tracer, current_trace_id

__all__ = ["Answer", "Outcome", "Sender", "PlanSender", "LiveSender", "drive"]

_MAX_WORKERS = 32  # requests outstanding at once per run (open loop); beyond, they wait in the pool's queue


@dataclass
class Answer:
    """What came back for one request: the answering logits (B, classes), where time and bytes went, the plan
    it went by (text, ``  input|codec`` appended when the raw input was sent), and the planner's prediction.
    ``ready``: the ``time.monotonic()`` at which the answer was in hand, when the sender did more work after it
    (a live planner learning from the reply); None: when ``send`` returned."""

    logits: torch.Tensor
    position: int
    breakdown: Breakdown
    plan: str = ""
    predicted_s: float | None = None
    ready: float | None = None


@dataclass
class Outcome:
    """One request of a run. Times are seconds after the run's start."""

    index: int
    request_id: str
    device: int
    send_s: float
    start_s: float = 0.0
    done_s: float = 0.0
    plan: str = ""  # the plan it went by (or was sent with, if lost)
    answer: Answer | None = None
    error: str | None = None
    answers: int = 0  # how many answers arrived for this id (1 normally; >1 would be a duplicate)
    trace_id: str = ""  # the request's OpenTelemetry trace (its spans on every tier share it), "" untraced

    @property
    def latency_s(self) -> float | None:
        return self.done_s - self.send_s if self.answer is not None else None


class Sender(Protocol):
    def plan_text(self) -> str: ...

    def send(self, request_id: str, x: torch.Tensor, deadline: float) -> Answer: ...

    def warm_up(self, request_id: str, x: torch.Tensor, deadline: float) -> None: ...

    def close(self) -> None: ...


def _text(plan: Plan, input_codec: str | None) -> str:
    return str(plan) + (f"  input|{input_codec}" if input_codec else "")


def _never_exits(plan: Plan) -> Plan:
    """``plan`` with every exit at threshold 1.0: each tier still runs its exit heads and the sub-ranges between
    them (a range's first run, graph code generation, is a one-time cost the emulated slowdown would multiply
    into the first measured requests), but a request goes on to the end of the plan (only a confidence of
    exactly 1.0 would stop it)."""
    return Plan(plan.stages, tuple(ExitPoint(e.position, 1.0) for e in plan.exits))


class PlanSender:
    """The device agent in process, every request stamped with one fixed plan (and input codec).

    Args:
        agent: the device agent (its upstream, if any, is the run's device-edge link).
        plan: the plan every request goes by; upstream tiers follow the plan the request carries.
        input_codec: the raw input's codec when the device runs nothing.
    """

    def __init__(self, agent: Agent, plan: Plan, input_codec: str | None = None):
        self.agent, self.plan, self.input_codec = agent, plan, input_codec

    def plan_text(self) -> str:
        return _text(self.plan, self.input_codec)

    def send(self, request_id: str, x: torch.Tensor, deadline: float) -> Answer:
        ans = self.agent.submit_local([x], request_id=request_id, deadline=deadline, block=True, plan=self.plan,
                                      input_codec=self.input_codec)  # fmt: skip
        return Answer(ans.values[0], ans.position, ans.breakdown, self.plan_text())

    def warm_up(self, request_id: str, x: torch.Tensor, deadline: float) -> None:
        """One request through every tier and range of the plan (handshakes, first runs), not measured."""
        self.agent.submit_local([x], request_id=request_id, deadline=deadline, block=True,
                                plan=_never_exits(self.plan), input_codec=self.input_codec)  # fmt: skip

    def close(self) -> None:
        self.agent.close()


class LiveSender:
    """The device agent with its live planner (:class:`edgeflow.agent.live.LivePlanner`): each request goes by
    the planner's current plan, and every reply is fed back to it (what ``DeviceClient.infer`` does, with the
    runner's request ids). With the scenario's SLO each request is given up upstream in time to finish on the
    device within it, and an upstream stalled past a multiple of the prediction is given up too (``FallbackConfig``);
    the fixed-plan baselines keep only the deadline's fallback."""

    def __init__(self, agent: Agent, live: Any):
        self.agent, self.live = agent, live
        self._target_s = latency_target_s(agent.config.fallback, live.settings.slo_ms)

    def plan_text(self) -> str:
        plan, codec, _ = self.live.current()
        return _text(plan, codec)

    def send(self, request_id: str, x: torch.Tensor, deadline: float) -> Answer:
        plan, codec, predicted = self.live.current()
        target = time.monotonic() + self._target_s if self._target_s is not None else None
        ans = self.agent.submit_local([x], request_id=request_id, deadline=deadline, block=True, plan=plan,
                                      input_codec=codec, target=target,
                                      stall_s=stall_after_s(self.agent.config.fallback, predicted))  # fmt: skip
        ready = time.monotonic()  # the answer is the caller's now; learning from it comes after
        self.live.observe(ans.breakdown, ans.plan)
        return Answer(ans.values[0], ans.position, ans.breakdown, _text(plan, codec), predicted, ready)

    def warm_up(self, request_id: str, x: torch.Tensor, deadline: float) -> None:
        """One request through every tier and range of the current plan (not fed to the planner)."""
        plan, codec, _ = self.live.current()
        self.agent.submit_local([x], request_id=request_id, deadline=deadline, block=True, plan=_never_exits(plan),
                                input_codec=codec)  # fmt: skip

    def close(self) -> None:
        self.live.close()
        self.agent.close()


def drive(
    inputs: torch.Tensor,
    send_s: Sequence[float] | None,
    device_of: Sequence[int],
    senders: Sequence[Sender],
    *,
    run_name: str,
    timeout_s: float,
    concurrency: int = 1,
    start: float | None = None,
    on_done: Callable[[Outcome], None] | None = None,
    tracer: Tracer | None = None,
) -> tuple[float, list[Outcome]]:
    """Send every request; returns the run's start (``time.monotonic()``) and one outcome per request.

    Args:
        inputs: (R, C, H, W) one input per request.
        send_s: open loop: offsets from the start; None: closed loop with ``concurrency`` outstanding.
        device_of: (R,) which sender sends each request.
        senders: one per device.
        run_name: prefix of request ids (``<run>-<index>``).
        timeout_s: a request still unanswered this long after its send time is lost.
        start: ``time.monotonic()`` of the run's start (default: now), e.g. when its links went live.
        on_done: called (from a worker thread) as each request finishes.
        tracer: each request in a root span (its trace id in :attr:`Outcome.trace_id`); None: untraced.
    """
    n = len(inputs)
    outcomes = [Outcome(i, f"{run_name}-{i}", int(device_of[i]), 0.0) for i in range(n)]
    lock = threading.Lock()
    t0 = time.monotonic() if start is None else start

    def one(i: int) -> None:
        o = outcomes[i]
        o.start_s = time.monotonic() - t0
        if o.send_s == 0.0 and send_s is None:
            o.send_s = o.start_s
        sender = senders[o.device]
        try:
            o.plan = sender.plan_text()
            with tracer.span("edgeflow request", {"edgeflow.request_id": o.request_id}) if tracer else nullcontext():
                o.trace_id = current_trace_id()
                ans = sender.send(o.request_id, inputs[i : i + 1], t0 + o.send_s + timeout_s)
        except EdgeflowError as e:
            o.error = f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - a bug in a sender must not hang the run; it is recorded
            o.error = f"internal {type(e).__name__}: {e}"
        else:
            with lock:
                o.answers += 1
                if o.answer is None:
                    o.answer = ans
                    o.plan = ans.plan or o.plan
            o.done_s = (ans.ready if ans.ready is not None else time.monotonic()) - t0
        if on_done is not None:
            on_done(o)

    workers = min(_MAX_WORKERS, n) if send_s is not None else min(concurrency, n)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=f"edgeflow-run-{run_name}")
    futures: list[Future[None]] = []
    try:
        if send_s is not None:
            for i in range(n):
                outcomes[i].send_s = float(send_s[i])
                delay = t0 + outcomes[i].send_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(one, i))
        else:
            _closed_loop(pool, one, n, concurrency, futures)
        # Every request carries its own deadline; this bound is a backstop (a closed loop's chains run back to back).
        rounds = 1 if send_s is not None else -(-n // max(1, concurrency))
        end = time.monotonic() + rounds * timeout_s + 5.0
        pending = set(futures)
        while pending and time.monotonic() < end:
            _, pending = wait(pending, timeout=min(1.0, max(0.0, end - time.monotonic())), return_when=FIRST_COMPLETED)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for o in outcomes:
        if o.answer is None and o.error is None:
            o.error = "no answer before the run's end"
    return t0, outcomes


def _closed_loop(pool: ThreadPoolExecutor, one: Callable[[int], None], n: int, concurrency: int,
                 futures: list[Future[None]]) -> None:
    """``concurrency`` chains of requests: each sends its next request when the previous one finished."""
    counter = iter(range(n))
    lock = threading.Lock()

    def chain() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            one(i)

    futures.extend(pool.submit(chain) for _ in range(min(concurrency, n)))
