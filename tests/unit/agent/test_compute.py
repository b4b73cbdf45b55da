"""The compute unit: FIFO, exclusive, bounded queue, deadlines, slowdown emulation, shutdown; the memory budget."""

from __future__ import annotations

import threading
import time

import pytest

from edgeflow.testing.threads import in_thread as _in_thread
from edgeflow.agent.compute import ComputeUnit, MemoryBudget, slowdown_wait_s
from edgeflow.errors import DeadlineExceeded
from edgeflow.transport import Overloaded, RequestTooLarge, ShuttingDown


def _far() -> float:
    return time.monotonic() + 10


def test_runs_one_at_a_time_in_arrival_order() -> None:
    unit = ComputeUnit(8)
    order: list[int] = []
    active = []

    def job(i: int) -> int:
        active.append(i)
        assert len(active) == 1, "two jobs computing at once"
        time.sleep(0.01)
        order.append(i)
        active.remove(i)
        return i

    threads = []
    for i in range(5):
        threads.append(_in_thread(lambda i=i: unit.run(lambda: job(i), _far()))[0])
        time.sleep(0.002)  # arrival order
    for t in threads:
        t.join(5)
    assert order == list(range(5))


def test_full_queue_refuses_or_blocks() -> None:
    unit = ComputeUnit(1)
    gate = threading.Event()
    t1, _ = _in_thread(lambda: unit.run(lambda: gate.wait(5), _far()))
    time.sleep(0.05)
    t2, queued = _in_thread(lambda: unit.run(lambda: "queued", _far()))
    time.sleep(0.05)
    with pytest.raises(Overloaded, match="compute queue full"):
        unit.run(lambda: "refused", _far())
    with pytest.raises(Overloaded):
        unit.run(lambda: "blocked", time.monotonic() + 0.05, block=True)
    t3, blocked = _in_thread(lambda: unit.run(lambda: "blocked then ran", _far(), block=True))
    gate.set()
    for t in (t1, t2, t3):
        t.join(5)
    assert queued[0][0] == "queued" and blocked[0][0] == "blocked then ran"


def test_deadline_while_waiting() -> None:
    unit = ComputeUnit(4)
    gate = threading.Event()
    t1, _ = _in_thread(lambda: unit.run(lambda: gate.wait(5), _far()))
    time.sleep(0.05)
    ran = []
    with pytest.raises(DeadlineExceeded, match="compute queue"):
        unit.run(lambda: ran.append(1), time.monotonic() + 0.05)
    gate.set()
    t1.join(5)
    assert not ran and unit.queued == 0
    assert unit.run(lambda: "next", _far())[0] == "next"


def test_timing_and_slowdown_emulation() -> None:
    result, timing = ComputeUnit(1, slowdown_factor=3.0, cpu_clock=False).run(lambda: time.sleep(0.02) or "x", _far())
    assert result == "x" and timing.compute_s >= 0.06 and timing.queue_s >= 0


def test_slowdown_counts_cpu_work_not_waiting() -> None:
    def spin() -> str:  # ~20 ms of CPU
        t = time.thread_time()
        while time.thread_time() - t < 0.02:
            pass
        return "spun"

    _, busy = ComputeUnit(1, slowdown_factor=3.0).run(spin, _far())
    assert busy.compute_s >= 0.06
    _, idle = ComputeUnit(1, slowdown_factor=3.0).run(lambda: time.sleep(0.02), _far())
    assert idle.compute_s < 0.06  # a job that waited (here: slept) did no work the emulated box must repeat
    assert slowdown_wait_s(3.0, wall_s=0.05, cpu_s=0.02, cpu_clock=True) == pytest.approx(0.01)
    assert slowdown_wait_s(3.0, wall_s=0.05, cpu_s=0.02, cpu_clock=False) == pytest.approx(0.10)
    assert slowdown_wait_s(2.0, wall_s=0.05, cpu_s=0.01, cpu_clock=True) == 0.0


def test_stop_fails_waiters_and_refuses_new_ones() -> None:
    unit = ComputeUnit(4, slowdown_factor=1000.0, cpu_clock=False)
    t1, first = _in_thread(lambda: unit.run(lambda: time.sleep(0.01) or "first", _far()))  # then ~10 s emulated
    time.sleep(0.05)
    t2, waiter = _in_thread(lambda: unit.run(lambda: "never", _far()))
    time.sleep(0.05)
    t0 = time.monotonic()
    unit.stop()
    t1.join(5)
    t2.join(5)
    assert time.monotonic() - t0 < 2  # the emulated slowdown is cut short
    assert first[0][0] == "first" and isinstance(waiter[0], ShuttingDown)
    with pytest.raises(ShuttingDown):
        unit.run(lambda: 1, _far())


def test_errors_reach_the_caller_and_free_the_unit() -> None:
    unit = ComputeUnit(1)
    with pytest.raises(ZeroDivisionError):
        unit.run(lambda: 1 / 0, _far())
    assert unit.run(lambda: "still usable", _far())[0] == "still usable"


def test_memory_budget() -> None:
    b = MemoryBudget(100)
    b.acquire(60)
    with pytest.raises(Overloaded):
        b.acquire(50)
    with pytest.raises(RequestTooLarge):
        b.acquire(101)
    b.release(60)
    b.acquire(100)
    MemoryBudget(None).acquire(10**12)


def test_garbage_collections_are_not_multiplied_by_the_emulated_slowdown():
    import gc

    from edgeflow.agent.compute import thread_cpu_s

    junk = [[object() for _ in range(50)] for _ in range(4000)]  # something for a full collection to walk
    cpu, before = time.thread_time(), thread_cpu_s()
    gc.collect()
    spent = time.thread_time() - cpu
    assert spent > 0 and thread_cpu_s() - before < 0.2 * spent  # the collection's CPU time is not the job's
    del junk
