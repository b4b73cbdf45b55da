"""LifoThreadPool: bounded, runs everything it accepted, reuses the most recently idle thread."""

from __future__ import annotations

import threading
import time

import pytest

from edgeflow.transport.pool import LifoThreadPool


def test_results_errors_and_bound() -> None:
    pool = LifoThreadPool(2)
    active, peak = [0], [0]
    lock = threading.Lock()

    def job(i: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return i

    futures = [pool.submit(job, i) for i in range(8)]
    assert [f.result(5) for f in futures] == list(range(8))
    assert peak[0] <= 2
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(5)
    pool.shutdown()
    with pytest.raises(RuntimeError):
        pool.submit(job, 0)


def test_sequential_tasks_stay_on_one_thread() -> None:
    pool = LifoThreadPool(8)
    burst = [pool.submit(time.sleep, 0.02) for _ in range(8)]  # start all eight threads
    for f in burst:
        f.result(5)
    names = {pool.submit(lambda: threading.current_thread().name).result(5) for _ in range(20)}
    assert len(names) == 1
    pool.shutdown()


def test_shutdown_runs_or_cancels_queued_tasks() -> None:
    pool = LifoThreadPool(1)
    gate = threading.Event()
    pool.submit(gate.wait, 5)
    queued = pool.submit(lambda: "ran")
    threading.Timer(0.05, gate.set).start()
    pool.shutdown(wait=True)
    assert queued.result(1) == "ran"
    pool = LifoThreadPool(1)
    gate.clear()
    pool.submit(gate.wait, 5)
    cancelled = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert cancelled.cancelled()
