"""Dynamic batching through Ray Serve's ``@serve.batch``, with the semantics of the agents' batcher.

A replica's :class:`~edgeflow.agent.Agent` runs its compute through this unit (it replaces ``Agent.compute``), so a
request still takes the agent's one path (fingerprint, admission checks, reply cache) and only the wait for the
compute unit differs. ``@serve.batch`` gathers up to ``max_batch_size`` requests, waiting at most
``max_queue_delay`` from the first (Triton's and the agents' rule); the gathered requests are split into groups of
equal :attr:`~edgeflow.agent.compute.BatchJob.key` (same range, exits, shapes but dim 0), in arrival order and of at
most ``max_batch_size`` samples, and each group runs as one batch (``ModelRuntime.run_batch``) on the replica's one
compute thread. Sparse traffic does not wait, as in the agents' batcher: a request arriving more than
``max_queue_delay`` after the one before it skips ``@serve.batch`` and runs as a group of its own at once. A request
whose deadline passed before its group started is not computed (DeadlineExceeded); more than ``capacity`` requests waiting: Overloaded (RESOURCE_EXHAUSTED), as in an agent. Each request reports its own
``queue_s``, its group's ``compute_s`` and ``batch_size``; the emulated slowdown applies once per group.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from edgeflow.agent.compute import BatchJob, JobTiming, slowdown_wait_s
from edgeflow.errors import DeadlineExceeded
from edgeflow.transport import Overloaded, ShuttingDown

__all__ = ["ServeBatchUnit"]

_T = TypeVar("_T")


@dataclass
class _Entry:
    job: BatchJob
    deadline: float
    enqueued: float


class ServeBatchUnit:
    """The compute unit of a Serve replica (see the module doc).

    Args:
        capacity: requests that may wait; one more is refused with Overloaded (unless the caller blocks).
        max_batch_size: samples per batch (and requests per ``@serve.batch`` call).
        max_queue_delay_s: the longest a partial batch waits for more, from its first request.
        slowdown_factor, cpu_clock: the emulated slowdown, as in ``edgeflow.agent.compute``.
    """

    def __init__(self, capacity: int, *, max_batch_size: int, max_queue_delay_s: float, slowdown_factor: float = 1.0,
                 cpu_clock: bool = True) -> None:  # fmt: skip
        from ray import serve

        self.capacity, self.max_batch_size = capacity, max_batch_size
        self.slowdown_factor, self.cpu_clock = slowdown_factor, cpu_clock
        self.loop: asyncio.AbstractEventLoop | None = None  # the replica's; set by its first async call
        self._compute_thread = ThreadPoolExecutor(1, thread_name_prefix="edgeflow-serve-compute")
        self._lock = threading.Lock()
        self._waiting = 0
        self._stopping = False
        self._delay_s = max_queue_delay_s
        self._last_arrival: float | None = None
        self._batched = serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=max_queue_delay_s)(self._run)

    @property
    def queued(self) -> int:
        return self._waiting

    def run_job(self, job: BatchJob[Any, _T], deadline: float, *, block: bool = False) -> tuple[_T, JobTiming]:
        """Wait for a batch slot through ``@serve.batch`` and run ``job`` in its group.

        Raises:
            Overloaded: ``capacity`` requests wait already (and ``block`` is false).
            DeadlineExceeded: the deadline passed before its group started.
            ShuttingDown: the unit stopped.
        """
        with self._lock:
            if self._stopping:
                raise ShuttingDown("replica is shutting down")
            if self._waiting >= self.capacity and not block:
                raise Overloaded(f"compute queue full ({self.capacity} waiting); retry later")
            self._waiting += 1
            now = time.monotonic()
            sparse = self._last_arrival is not None and now - self._last_arrival > self._delay_s
            self._last_arrival = now
        assert self.loop is not None, "the replica sets the loop before any request computes"
        try:
            entry = _Entry(job, deadline, time.monotonic())
            future = asyncio.run_coroutine_threadsafe(self._alone(entry) if sparse else self._batched(entry), self.loop)
            ok, value, timing = future.result(timeout=max(0.0, deadline - time.monotonic()) + 5.0)
        finally:
            with self._lock:
                self._waiting -= 1
        if not ok:
            raise value
        return value, timing

    def run(self, fn: Callable[[], _T], deadline: float, *, block: bool = False) -> tuple[_T, JobTiming]:
        """One unbatchable job (``key`` None)."""
        return self.run_job(BatchJob(None, lambda items: [fn()], None, 1), deadline, block=block)

    async def _alone(self, entry: _Entry) -> tuple[bool, Any, JobTiming | None]:
        return (await self._run([entry]))[0]

    async def _run(self, entries: list[_Entry]) -> list[tuple[bool, Any, JobTiming | None]]:
        loop = asyncio.get_running_loop()
        results: dict[int, tuple[bool, Any, JobTiming | None]] = {}
        for group in self._groups(entries):
            now = time.monotonic()
            live = [e for e in group if e.deadline > now]
            for e in group:
                if e.deadline <= now:
                    waited = now - e.enqueued
                    results[id(e)] = (False, DeadlineExceeded(f"deadline passed after {waited:.3f} s waiting for a batch"), None)
            if live:
                for e, r in zip(live, await loop.run_in_executor(self._compute_thread, self._compute, live)):
                    results[id(e)] = r
        return [results[id(e)] for e in entries]

    def _groups(self, entries: list[_Entry]) -> list[list[_Entry]]:
        """Equal keys together, in arrival order, at most ``max_batch_size`` samples each; ``None`` keys alone."""
        groups: list[list[_Entry]] = []
        open_: dict[Any, tuple[list[_Entry], int]] = {}
        for e in entries:
            key, size = e.job.key, e.job.size
            current = open_.get(key) if key is not None else None
            if current is None or current[1] + size > self.max_batch_size:
                group: list[_Entry] = [e]
                groups.append(group)
                if key is not None:
                    open_[key] = (group, size)
            else:
                current[0].append(e)
                open_[key] = (current[0], current[1] + size)
        return groups

    def _compute(self, group: list[_Entry]) -> list[tuple[bool, Any, JobTiming | None]]:
        start, cpu0 = time.monotonic(), time.thread_time()
        try:
            values = list(group[0].job.run_batch([e.job.item for e in group]))
            if self.slowdown_factor > 1.0:  # once per batch, as in the agents' batcher
                time.sleep(slowdown_wait_s(self.slowdown_factor, time.monotonic() - start, time.thread_time() - cpu0,
                                           self.cpu_clock))  # fmt: skip
        except Exception as e:  # every member gets it
            return [(False, e, None)] * len(group)
        end, size = time.monotonic(), sum(e.job.size for e in group)
        return [(True, v, JobTiming(start - e.enqueued, end - start, size)) for e, v in zip(group, values)]

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
        self._compute_thread.shutdown(wait=False, cancel_futures=True)
