"""One compute unit per agent, taken in arrival order by the requests that need it; and a memory budget.

A tier has one compute unit, so its ranges run one at a time, first come first served: a request waits in
a bounded queue (``queue_s``) for its turn, then computes *on its own thread* — handing the work to a
dedicated thread and back cost two thread switches (~0.1 ms) per request. The pipeline overlaps compute
with the network because encoding, sending and waiting for upstream happen after the request has given
the compute unit up.

Dynamic batching (:class:`BatchingComputeUnit`, node section ``batching``) follows Triton's dynamic batcher:
requests with equal :attr:`BatchJob.key` (same range, exits and input shapes but dim 0) are run as one batch
of at most ``max_batch_size`` samples. A batch goes as soon as it is full; otherwise when the oldest queued
request has waited ``max_queue_delay``. The thread of the oldest request in the batch runs it (no worker
thread here either); the others wait for their share. Each request's ``queue_s`` is its own wait, batching
delay included; ``compute_s`` is the whole batch's.

Slowdown emulation: with ``slowdown_factor`` f > 1, a request (or a batch, once) keeps the compute unit, sleeping,
until it has taken ``f x`` its work, emulating hardware f times slower without using a CPU. The work is the
computing thread's CPU time (``cpu_clock``, right when torch runs on that one thread, ``compute.threads: 1``),
else its wall time. CPU time leaves out what this host's contention adds (waiting for a core or the GIL while
other processes of a test or benchmark run): multiplied by f, that wait would turn a busy host into a box many
times slower than the one emulated. It also leaves out the CPU time of garbage collections that happened to run
on the computing thread (:func:`thread_cpu_s`): the interpreter's collector is the host's, not the emulated
hardware's, and a 40 ms collection inside a job at f = 64 held a board-class device for 2.6 s.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Generic, Hashable, TypeVar

from edgeflow.errors import DeadlineExceeded
from edgeflow.transport import Overloaded, RequestTooLarge, ShuttingDown

__all__ = ["BatchJob", "BatchingComputeUnit", "ComputeUnit", "JobTiming", "MemoryBudget"]

_T = TypeVar("_T")
_I = TypeVar("_I")


_gc = threading.local()  # per thread: CPU seconds spent in garbage collections, and when the running one began


def _on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc.began = time.thread_time()
    elif getattr(_gc, "began", None) is not None:
        _gc.spent = getattr(_gc, "spent", 0.0) + time.thread_time() - _gc.began
        _gc.began = None


gc.callbacks.append(_on_gc)


def thread_cpu_s() -> float:
    """This thread's CPU time, less what its garbage collections took (see the module doc)."""
    return time.thread_time() - getattr(_gc, "spent", 0.0)


def slowdown_wait_s(factor: float, wall_s: float, cpu_s: float, cpu_clock: bool) -> float:
    """Seconds to sleep after a job so that it took ``factor`` x its work (CPU time with ``cpu_clock``, else wall
    time; see the module doc); never negative."""
    return max(0.0, factor * (cpu_s if cpu_clock else wall_s) - wall_s)


@dataclass
class JobTiming:
    """Seconds a job waited for the compute unit and held it (emulated slowdown included), and the samples
    in the batch it ran in (its own when unbatched)."""

    queue_s: float = 0.0
    compute_s: float = 0.0
    batch_size: int = 1


@dataclass(frozen=True)
class BatchJob(Generic[_I, _T]):
    """One request's share of a batch.

    Attributes:
        item: what the request brings (e.g. its input tensors).
        run_batch: runs a list of compatible items as one batch; returns one result per item, in order.
        key: requests are batched together only when their keys are equal; ``None``: never batched.
        size: samples the request carries (its dim 0); a batch holds at most ``max_batch_size`` samples.
    """

    item: _I
    run_batch: Callable[[list[_I]], list[_T]]
    key: Hashable | None = None
    size: int = 1


class ComputeUnit:
    """A FIFO, bounded, exclusive slot for computing.

    Args:
        capacity: requests that may wait while one computes; one more is refused (or blocks, see :meth:`run`).
        slowdown_factor: emulated slowdown (see module doc).
        cpu_clock: measure the work for the slowdown as the thread's CPU time (see module doc).
    """

    def __init__(self, capacity: int, *, slowdown_factor: float = 1.0, cpu_clock: bool = True):
        self.capacity = capacity
        self.slowdown_factor, self.cpu_clock = slowdown_factor, cpu_clock
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._busy = False
        self._stopping = False
        self._stopped = threading.Event()  # cuts an emulated slowdown short on stop

    @property
    def idle(self) -> bool:
        """Nothing runs or waits now."""
        return not self._busy and not self._waiting

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
        start, cpu0 = time.monotonic(), thread_cpu_s()
        try:
            result = fn()
            if self.slowdown_factor > 1.0:
                self._stopped.wait(slowdown_wait_s(self.slowdown_factor, time.monotonic() - start,
                                                   thread_cpu_s() - cpu0, self.cpu_clock))  # fmt: skip
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()
        return result, JobTiming(queue_s=start - enqueued, compute_s=time.monotonic() - start)

    def run_job(self, job: BatchJob[_I, _T], deadline: float, *, block: bool = False) -> tuple[_T, JobTiming]:
        """:meth:`run` for a :class:`BatchJob`: here always a batch of one (first come, first served)."""
        result, timing = self.run(lambda: job.run_batch([job.item])[0], deadline, block=block)
        timing.batch_size = job.size
        return result, timing

    def stop(self) -> None:
        """Fail waiting requests with ShuttingDown and refuse new ones; a running one finishes."""
        with self._cond:
            self._stopping = True
            self._stopped.set()
            self._cond.notify_all()

    @property
    def queued(self) -> int:
        return len(self._waiting)


class _Waiter:
    """A request in the batching queue; ``done`` once its batch has run (result or error set).

    Each waiter sleeps on its own condition (sharing the unit's lock) and is woken only when something it
    waits for changes: with one shared condition every arrival would wake every waiting thread, and on a busy
    agent those threads take the GIL from the one that computes.
    """

    __slots__ = ("job", "enqueued", "deadline", "wake", "taken", "done", "result", "error", "timing", "sparse")

    def __init__(self, job: BatchJob, deadline: float, lock: threading.Lock):
        self.job = job
        self.enqueued = time.monotonic()
        self.deadline = deadline
        self.wake = threading.Condition(lock)
        self.taken = False  # in a batch that is computing: no longer cancellable
        self.done = False
        self.result: object = None
        self.error: BaseException | None = None
        self.timing = JobTiming()
        self.sparse = False  # arrived after a gap longer than the queue delay: leads without waiting for company

    def outcome(self) -> tuple[object, JobTiming]:
        if self.error is not None:
            raise self.error
        return self.result, self.timing


class BatchingComputeUnit:
    """A compute unit that runs compatible requests as one batch (Triton's dynamic batcher, see module doc).

    Scheduling: the oldest waiting request leads. When the unit is free it gathers, in arrival order, the
    waiting requests with its key, while the summed ``size`` stays within ``max_batch_size``; the batch
    goes at once if it is full (or the next compatible request would not fit, or the queue is full), else
    when the leader has waited ``max_queue_delay_s``. Requests with other keys wait for a later batch, so
    batches start in the order of their oldest requests.

    Sparse traffic does not wait: a request that arrives more than ``max_queue_delay_s`` after the one before
    it leads its batch at once, with whatever waits already (nothing, on an idle unit). Traffic that sparse
    rarely brings company within the delay, so the wait only added latency: a device sending one request per
    round trip to a cloud with the node files' 1 ms delay paid it on every request (1.1 ms of a 100 KB hop's
    3.7 ms overhead, ``benchmarks/bench_transport.py``). Dense traffic (arrivals closer than the delay, e.g.
    many devices) waits as Triton's batcher does; the first request, with no gap known, waits too. A request whose deadline passes before its batch
    starts fails with DeadlineExceeded and is not computed; once its batch starts it gets its result.

    Args:
        capacity: requests that may wait (not yet in a computing batch); one more is refused (or blocks).
        max_batch_size: samples in one batch (a request larger than this runs alone).
        max_queue_delay_s: longest a partial batch waits for company, from its oldest request's arrival.
        slowdown_factor: emulated slowdown, applied once to the batch's compute time (see module doc).
        cpu_clock: measure the work for the slowdown as the thread's CPU time (see module doc).
    """

    def __init__(self, capacity: int, *, max_batch_size: int, max_queue_delay_s: float, slowdown_factor: float = 1.0,
                 cpu_clock: bool = True):
        if max_batch_size < 1 or max_queue_delay_s < 0:
            raise ValueError(f"max_batch_size must be >= 1 and max_queue_delay_s >= 0, got {max_batch_size}, "
                             f"{max_queue_delay_s}")  # fmt: skip
        self.capacity = capacity
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.slowdown_factor, self.cpu_clock = slowdown_factor, cpu_clock
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # submitters blocked on a full queue
        self._queue: list[_Waiter] = []  # waiting, in arrival order
        self._busy = False
        self._stopping = False
        self._stopped = threading.Event()  # cuts an emulated slowdown short on stop
        self._last_arrival: float | None = None  # when the latest request arrived (sparse traffic: see above)

    @property
    def idle(self) -> bool:
        """Nothing runs or waits now."""
        return not self._busy and not self._queue

    def run(self, fn: Callable[[], _T], deadline: float, *, block: bool = False) -> tuple[_T, JobTiming]:
        """Run ``fn`` alone (never batched), in its turn; the contract of :meth:`ComputeUnit.run`."""
        return self.run_job(BatchJob(None, lambda items: [fn()]), deadline, block=block)

    def run_job(self, job: BatchJob[_I, _T], deadline: float, *, block: bool = False) -> tuple[_T, JobTiming]:
        """Queue ``job``, wait for its batch to run (on this thread if it leads the batch), return its result.

        Args:
            job: the request's item, key, size and batch function.
            deadline: ``time.monotonic()`` value; its batch not started by then -> DeadlineExceeded.
            block: when the queue is full, wait for room until ``deadline`` instead of refusing at once.

        Raises:
            Overloaded: the queue is full.
            DeadlineExceeded: the deadline passed before the request's batch started.
            ShuttingDown: the unit is stopping (raised to waiters too).
            Whatever ``job.run_batch`` raised, to every request of that batch.
        """
        me = _Waiter(job, deadline, self._lock)
        with self._lock:
            while True:
                if self._stopping:
                    raise ShuttingDown("agent is shutting down")
                if len(self._queue) < self.capacity:
                    break
                if not block or not self._room.wait(timeout=max(0.0, deadline - time.monotonic())):
                    raise Overloaded(f"compute queue full ({self.capacity} waiting); retry later")
            self._queue.append(me)
            me.sparse = self._last_arrival is not None and me.enqueued - self._last_arrival > self.max_queue_delay_s
            self._last_arrival = me.enqueued
            self._wake_leader()  # it re-counts its batch
            try:
                batch = self._wait_for_batch(me)
            except BaseException:
                if me in self._queue:
                    self._queue.remove(me)
                    self._wake_leader()
                    self._room.notify()
                raise
        if batch is None:  # another request's thread ran the batch holding this one
            return me.outcome()  # type: ignore[return-value]
        self._compute(batch)
        return me.outcome()  # type: ignore[return-value]

    def _wake_leader(self) -> None:
        """Under the lock: the oldest waiting request may now lead a batch (or gather a bigger one)."""
        if self._queue and not self._busy:
            self._queue[0].wake.notify()

    def _wait_for_batch(self, me: _Waiter) -> list[_Waiter] | None:
        """Under the lock: the batch ``me`` leads, once it may go; ``None`` once another thread ran ``me``."""
        while True:
            if me.done:
                return None
            if me.taken:  # computing in another thread's batch: wait for it (bounded by the compute time)
                me.wake.wait()
                continue
            if self._stopping:
                raise ShuttingDown("agent shut down before this request was computed")
            now = time.monotonic()
            if now >= me.deadline:
                raise DeadlineExceeded(f"deadline passed after {now - me.enqueued:.3f} s in the compute queue")
            wake = me.deadline
            if not self._busy and self._queue[0] is me:
                batch, full = self._gather(me)
                go_at = me.enqueued + (0.0 if me.sparse else self.max_queue_delay_s)
                if full or now >= go_at or len(self._queue) >= self.capacity:
                    for w in batch:
                        self._queue.remove(w)
                        w.taken = True
                    self._busy = True
                    self._room.notify(len(batch))
                    return batch
                wake = min(wake, go_at)
            me.wake.wait(timeout=wake - now)

    def _gather(self, leader: _Waiter) -> tuple[list[_Waiter], bool]:
        """The waiting requests that may join ``leader``'s batch (in arrival order) and whether it is full."""
        key, total = leader.job.key, leader.job.size
        batch = [leader]
        if key is None or total >= self.max_batch_size:
            return batch, True
        for w in self._queue:
            if w is leader or w.job.key != key:
                continue
            if total + w.job.size > self.max_batch_size:
                return batch, True  # the next compatible request does not fit: as full as it gets in order
            batch.append(w)
            total += w.job.size
            if total == self.max_batch_size:
                return batch, True
        return batch, False

    def _compute(self, batch: list[_Waiter]) -> None:
        """Run ``batch`` on this thread (the unit is held), hand every member its result, free the unit."""
        start, cpu0 = time.monotonic(), thread_cpu_s()
        results: list[object] = []
        error: BaseException | None = None
        try:
            results = list(batch[0].job.run_batch([w.job.item for w in batch]))
            assert len(results) == len(batch), f"run_batch gave {len(results)} results for {len(batch)} items"
            if self.slowdown_factor > 1.0:  # once per batch: a slower box runs the whole batch slower
                self._stopped.wait(slowdown_wait_s(self.slowdown_factor, time.monotonic() - start,
                                                   thread_cpu_s() - cpu0, self.cpu_clock))  # fmt: skip
        except BaseException as e:  # every member gets it; the unit must be freed either way
            error = e
        end = time.monotonic()
        size = sum(w.job.size for w in batch)
        with self._lock:
            for i, w in enumerate(batch):
                w.timing = JobTiming(queue_s=start - w.enqueued, compute_s=end - start, batch_size=size)
                if error is None:
                    w.result = results[i]
                else:
                    w.error = error
                w.done = True
                if w is not batch[0]:
                    w.wake.notify()
            self._busy = False
            self._wake_leader()

    def stop(self) -> None:
        """Fail waiting requests with ShuttingDown and refuse new ones; a running batch finishes."""
        with self._lock:
            self._stopping = True
            self._stopped.set()
            self._room.notify_all()
            for w in self._queue:
                w.wake.notify()

    @property
    def queued(self) -> int:
        return len(self._queue)


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
