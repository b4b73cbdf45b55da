"""Driving a workload: the device side of a run, and the request schedule.

How a device sends a request:

- :class:`LocalSender`: the device agent in this process (the same :class:`~edgeflow.agent.Agent` that
  ``edgeflow infer --node`` runs), every request stamped with one fixed plan, or with its live planner's. Several
  devices share the loaded model but each has its own agent, compute unit (its own emulated hardware) and link.
- :class:`RemoteSender`: a device agent *process* (``edgeflow run --device-process``), sent each input over gRPC;
  the device stamps the plan (a fixed one the request names, or its live planner's) exactly as in process.

:func:`drive` sends the requests: open loop at the scheduled offsets (latency counts from the scheduled send
time, so waiting behind earlier requests on the device counts), or closed loop with a fixed number
outstanding. Every loop is bounded by the run's deadline.
"""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any, Callable, Protocol, Sequence

import torch

from edgeflow.agent.agent import Agent
from edgeflow.core.plan import ExitPoint, Plan
from edgeflow.errors import EdgeflowError
from edgeflow.transport import Breakdown
from edgeflow.transport.tracing import Tracer, current_trace_id
from edgeflow.scenario.workload import Inputs, count, take

__all__ = ["Answer", "Outcome", "Sender", "LocalSender", "RemoteSender", "drive"]

_MAX_WORKERS = 32  # requests outstanding at once per run (open loop); beyond, they wait in the pool's queue


@dataclass
class Answer:
    """What came back for one request: the answering logits (B, classes), where time and bytes went, the plan
    it went by (text), and the planner's prediction."""

    logits: torch.Tensor
    position: int
    breakdown: Breakdown
    plan: str = ""
    predicted_s: float | None = None
    predicted_path_s: float | None = None  # the prediction for the path it took (its exit, or the output)


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

    def send(self, request_id: str, x: Inputs, deadline: float, stream: str | None = None,
             frame: int | None = None) -> Answer: ...

    def warm_up(self, request_id: str, x: Inputs, deadline: float) -> None: ...

    def switches(self) -> list[Any]: ...

    def close(self) -> None: ...


def _never_exits(plan: Plan) -> Plan:
    """``plan`` with every exit at threshold 1.0: each tier still runs its exit heads and the sub-ranges between
    them (a range's first run, graph code generation, is a one-time cost the emulated slowdown would multiply
    into the first measured requests), but a request goes on to the end of the plan (only a confidence of
    exactly 1.0 would stop it)."""
    return Plan(plan.stages, tuple(ExitPoint(e.position, 1.0) for e in plan.exits), plan.input_codec)


def _values(x: Inputs) -> list[torch.Tensor]:
    """One request's model inputs as the agent takes them (a list, one tensor per model input)."""
    return list(x) if isinstance(x, tuple) else [x]


class LocalSender:
    """The device agent in this process (the same :class:`~edgeflow.agent.Agent` that ``edgeflow infer --node`` runs).

    With a fixed ``plan`` every request is stamped with it; without, the device's
    :class:`~edgeflow.agent.source.Source` stamps each with its live planner's current plan and learns from the reply
    (what ``DeviceClient.infer`` and a device agent process do). Upstream tiers run what the request's plan gives them.

    Args:
        agent: the device agent (its upstream, if any, is the run's device-edge link).
        plan: the plan every request goes by; None: the live planner's.
    """

    def __init__(self, agent: Agent, plan: Plan | None = None):
        self.agent, self.plan = agent, plan

    def plan_text(self) -> str:
        if self.plan is not None:
            return str(self.plan)
        return str(self.agent.source.current_plan()) if self.agent.source is not None else str(self.agent.plan)

    def send(self, request_id: str, x: Inputs, deadline: float, stream: str | None = None,
             frame: int | None = None) -> Answer:  # fmt: skip
        ans = self.agent.submit_local(_values(x), request_id=request_id, deadline=deadline, block=True, plan=self.plan,
                                      stream=stream, frame=frame)  # fmt: skip
        return Answer(ans.values[0], ans.position, ans.breakdown, ans.plan, ans.predicted_s, ans.predicted_outcome_s)

    def warm_up(self, request_id: str, x: Inputs, deadline: float) -> None:
        """One request through every tier and range of the plan (handshakes, first runs), not measured or learned."""
        plan = self.plan if self.plan is not None else Plan.parse(self.plan_text())
        self.agent.submit_local(_values(x), request_id=request_id, deadline=deadline, block=True, plan=_never_exits(plan),
                                learn=False)  # fmt: skip

    def switches(self) -> list[Any]:
        """The live planner's switches so far (none with a fixed plan)."""
        planner = self.agent.source.planner if self.agent.source is not None and self.plan is None else None
        return planner.switches if planner is not None else []

    def close(self) -> None:
        self.agent.close()


class RemoteSender:
    """A device agent process (``edgeflow agent --node device.yaml``, the deployment path) that this process sends
    inputs to over gRPC, as any client of a deployed device would (:class:`~edgeflow.agent.AgentClient`). With a
    fixed ``plan`` each request names it; without, the device's live planner chooses.

    Args:
        address: the device agent's ``host:port``.
        plan: the plan every request goes by; None: the device's live plan.
    """

    def __init__(self, address: str, plan: Plan | None = None):
        from edgeflow.agent.client import AgentClient

        self.address, self.plan = address, plan
        self.client = AgentClient(address)

    def plan_text(self) -> str:
        if self.plan is not None:
            return str(self.plan)
        d = self.client.peer.describe(timeout_s=10.0)
        return d.live.plan if d.live is not None and d.live.plan else d.plan

    def send(self, request_id: str, x: Inputs, deadline: float, stream: str | None = None,
             frame: int | None = None) -> Answer:  # fmt: skip
        r = self.client.infer(x, timeout_s=max(1e-3, deadline - time.monotonic()), plan=self.plan, request_id=request_id,
                              stream=stream or "", frame=-1 if frame is None else frame)  # fmt: skip
        logits = r.output if isinstance(r.output, torch.Tensor) else r.output[0]
        position = r.exit_position if r.exit_position >= 0 else -1
        return Answer(logits, position, r.breakdown, r.plan, r.predicted_latency_s, r.predicted_path_s)

    def warm_up(self, request_id: str, x: Inputs, deadline: float) -> None:
        """One request through every tier and range of the plan, not measured."""
        plan = self.plan if self.plan is not None else Plan.parse(self.plan_text())
        self.client.infer(x, timeout_s=max(1e-3, deadline - time.monotonic()), plan=_never_exits(plan),
                          request_id=request_id)  # fmt: skip

    def switches(self) -> list[Any]:
        """The device's live-plan switches (the latest Describe reports), ``t_s`` in this process's monotonic clock."""
        if self.plan is not None:
            return []
        d = self.client.peer.describe(timeout_s=10.0)
        if d.live is None:
            return []
        started = time.monotonic() - d.live.uptime_s  # the planner's start, on this clock (to a round trip)
        return [replace(sw, t_s=started + sw.t_s) for sw in d.live.switches]

    def close(self) -> None:
        self.client.close()  # the device process lives on: the runner stops it with the other agents


def drive(
    inputs: Inputs,
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
    streamed: bool = False,
) -> tuple[float, list[Outcome]]:
    """Send every request; returns the run's start (``time.monotonic()``) and one outcome per request.

    Args:
        inputs: (R, C, H, W) one input per request (a tuple of (R, ...) tensors for a model of several inputs).
        send_s: open loop: offsets from the start; None: closed loop with ``concurrency`` outstanding.
        device_of: (R,) which sender sends each request.
        senders: one per device.
        run_name: prefix of request ids (``<run>-<index>``).
        timeout_s: a request still unanswered this long after its send time is lost.
        start: ``time.monotonic()`` of the run's start (default: now), e.g. when its links went live.
        on_done: called (from a worker thread) as each request finishes.
        tracer: each request in a root span (its trace id in :attr:`Outcome.trace_id`); None: untraced.
        streamed: the requests are frames of one stream per device (``<run>-device<d>``), numbered by their index.
    """
    n = count(inputs)
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
                deadline = t0 + o.send_s + timeout_s
                if streamed:  # frame i of this device's stream
                    ans = sender.send(o.request_id, take(inputs, i, i + 1), deadline,
                                      stream=f"{run_name}-device{o.device}", frame=i)  # fmt: skip
                else:
                    ans = sender.send(o.request_id, take(inputs, i, i + 1), deadline)
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
            o.done_s = time.monotonic() - t0
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
