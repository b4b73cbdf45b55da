"""One compute unit per agent, taken in arrival order by the requests that need it; and a memory budget.

A tier has one compute unit, so its ranges run one at a time, first come first served: a request waits in
a bounded queue (``queue_s``) for its turn, then computes *on its own thread* — handing the work to a
dedicated thread and back cost two thread switches (~0.1 ms) per request. The pipeline overlaps compute
with the network because encoding, sending and waiting for upstream happen after the request has given
the compute unit up.

Slowdown emulation: with ``slowdown_factor`` f > 1, a request keeps the compute unit for another
``(f - 1) x`` its measured compute time, sleeping, emulating hardware f times slower without using a CPU.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, TypeVar

from edgeflow.errors import DeadlineExceeded
from edgeflow.transport import Overloaded, RequestTooLarge, ShuttingDown

__all__ = ["ComputeUnit", "JobTiming", "MemoryBudget"]

_T = TypeVar("_T")


@dataclass
class JobTiming:
    """Seconds a job waited for the compute unit and held it (emulated slowdown included)."""

    queue_s: float = 0.0
    compute_s: float = 0.0


class ComputeUnit:
    """A FIFO, bounded, exclusive slot for computing.

    Args:
        capacity: requests that may wait while one computes; one more is refused (or blocks, see :meth:`run`).
        slowdown_factor: emulated slowdown (see module doc).
    """

    def __init__(self, capacity: int, *, slowdown_factor: float = 1.0):
        self.capacity = capacity
        self.slowdown_factor = slowdown_factor
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._busy = False
        self._stopping = False
        self._stopped = threading.Event()  # cuts an emulated slowdown short on stop

    def run(self, fn: Callable[[], _T], deadline: float, *, block: bool = False) -> tuple[_T, JobTiming]:
        """Wait for the compute unit (in arrival order), run ``fn`` on this thread, give the unit back.

        Args:
            fn: the work.
            deadline: ``time.monotonic()`` value; still waiting then -> DeadlineExceeded, ``fn`` not run.
            block: when the queue is full, wait for room until ``deadline`` instead of refusing at once.

        Raises:
            Overloaded: the queue is full.
            DeadlineExceeded: the deadline passed while waiting.
            ShuttingDown: the unit is stopping (raised to waiters too).
        """
        enqueued = time.monotonic()
        ticket = object()
        with self._cond:
            while True:
                if self._stopping:
                    raise ShuttingDown("agent is shutting down")
                if len(self._waiting) < self.capacity or not self._busy:
                    break
                if not block or not self._cond.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise Overloaded(f"compute queue full ({self.capacity} waiting); retry later")
            self._waiting.append(ticket)
            try:
                while True:
                    if self._stopping:
                        raise ShuttingDown("agent shut down before this request was computed")
                    if not self._busy and self._waiting[0] is ticket:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise DeadlineExceeded(
                            f"deadline passed after {time.monotonic() - enqueued:.3f} s in the compute queue"
                        )
                    self._cond.wait(timeout=remaining)
            except BaseException:
                self._waiting.remove(ticket)
                self._cond.notify_all()
                raise
            self._waiting.popleft()
            self._busy = True
        start = time.monotonic()
        try:
            result = fn()
            compute_s = time.monotonic() - start
            if self.slowdown_factor > 1.0:
                self._stopped.wait((self.slowdown_factor - 1.0) * compute_s)
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return result, JobTiming(queue_s=start - enqueued, compute_s=time.monotonic() - start)

    def stop(self) -> None:
        """Fail waiting requests with ShuttingDown and refuse new ones; a running one finishes."""
        with self._cond:
            self._stopping = True
            self._stopped.set()
            self._cond.notify_all()

    @property
    def queued(self) -> int:
        return len(self._waiting)


class MemoryBudget:
    """Bytes of decoded activations an agent holds at once (``compute.memory_cap_mb``); ``None``: no cap."""

    def __init__(self, cap_bytes: int | None):
        self.cap_bytes = cap_bytes
        self._used = 0
        self._lock = threading.Lock()

    def acquire(self, nbytes: int) -> None:
        """Reserve ``nbytes``.

        Raises:
            RequestTooLarge: one request needs more than the whole cap.
            Overloaded: the cap is taken by requests in flight.
        """
        if self.cap_bytes is None:
            return
        if nbytes > self.cap_bytes:
            raise RequestTooLarge(f"request needs {nbytes} bytes of activations, memory cap is {self.cap_bytes}")
        with self._lock:
            if self._used + nbytes > self.cap_bytes:
                raise Overloaded(f"memory cap {self.cap_bytes} bytes in use by requests in flight; retry later")
            self._used += nbytes

    def release(self, nbytes: int) -> None:
        if self.cap_bytes is None:
            return
        with self._lock:
            self._used -= nbytes
