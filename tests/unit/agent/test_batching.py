"""Dynamic batching: Triton's batcher semantics in BatchingComputeUnit, batched runs equal unbatched ones,
and an agent with ``batching`` on reports each request's batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Hashable

import pytest
import torch
from torch import nn

from edgeflow.agent import ModelRuntime
from edgeflow.testing.threads import in_thread as _in_thread
from edgeflow.agent.compute import BatchingComputeUnit, BatchJob, ComputeUnit
from edgeflow.config import NodeConfig
from edgeflow.core.plan import ExitPoint
from edgeflow.errors import DeadlineExceeded
from edgeflow.transport import Overloaded, ShuttingDown

NODES = Path(__file__).resolve().parents[3] / "nodes"
FOREVER_S = 1000.0  # a queue delay no test waits out: a batch that goes anyway went because it was full


def _far() -> float:
    return time.monotonic() + 30


def _until(cond: Callable[[], bool]) -> None:
    for _ in range(1000):  # bounded: 10 s
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached")


class _Recorder:
    """A batch function that records the batches it ran and returns each item doubled."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def __call__(self, items: list[Any]) -> list[Any]:
        self.batches.append(list(items))
        return [2 * i for i in items]

    def job(self, item: Any, key: Hashable | None = "k", size: int = 1) -> BatchJob:
        return BatchJob(item, self, key, size)


def _blocked(unit: BatchingComputeUnit) -> tuple[threading.Event, threading.Thread]:
    """Hold ``unit`` with an unbatchable job until the returned gate is set."""
    gate = threading.Event()
    t, _ = _in_thread(lambda: unit.run(lambda: gate.wait(10), _far()))
    _until(lambda: unit._busy)
    return gate, t


def _join(*threads: threading.Thread) -> None:
    for t in threads:
        t.join(30)
        assert not t.is_alive()


# ------------------------------------------------------------------------------------------- the batcher
def test_a_full_batch_goes_at_once() -> None:
    unit = BatchingComputeUnit(16, max_batch_size=4, max_queue_delay_s=FOREVER_S)
    rec = _Recorder()
    runs = [_in_thread(lambda i=i: unit.run_job(rec.job(i), _far())) for i in range(4)]
    _join(*(t for t, _ in runs))
    assert [sorted(b) for b in rec.batches] == [[0, 1, 2, 3]]
    for i, (_, out) in enumerate(runs):
        result, timing = out[0]
        assert result == 2 * i and timing.batch_size == 4


def test_a_partial_batch_waits_for_the_delay_then_goes() -> None:
    unit = BatchingComputeUnit(16, max_batch_size=8, max_queue_delay_s=0.05)
    rec = _Recorder()
    result, timing = unit.run_job(rec.job(1), _far())
    assert result == 2 and timing.batch_size == 1 and rec.batches == [[1]]
    assert 0.05 <= timing.queue_s < 10  # waited for company, no longer than the delay (+ scheduling)


class _Clock:
    """``time`` for the batcher, with a jump forward on demand (a gap between arrivals, without waiting it out)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_request_after_a_gap_longer_than_the_delay_goes_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr("edgeflow.agent.compute.time", clock)
    unit = BatchingComputeUnit(16, max_batch_size=2, max_queue_delay_s=FOREVER_S)
    rec = _Recorder()

    def send(i: int) -> tuple[threading.Thread, list]:
        return _in_thread(lambda: unit.run_job(rec.job(i), clock.monotonic() + 30))

    _join(*(t for t, _ in (send(0), send(1))))  # dense: a full batch
    clock.offset += 2 * FOREVER_S  # the next request comes after a gap longer than the delay
    t, out = send(2)
    _join(t)  # alone, at once: waiting for company would have taken FOREVER_S
    assert out[0][0] == 4 and out[0][1].batch_size == 1
    t3, _ = send(3)  # right after it: dense again, so it waits for company ...
    _until(lambda: unit.queued == 1)
    t4, _ = send(4)  # ... and goes with it
    _join(t3, t4)
    assert [sorted(b) for b in rec.batches] == [[0, 1], [2], [3, 4]]


def test_requests_queued_while_busy_go_together_when_the_unit_frees() -> None:
    unit = BatchingComputeUnit(16, max_batch_size=8, max_queue_delay_s=0.0)
    rec = _Recorder()
    gate, blocker = _blocked(unit)
    runs = []
    for i in range(3):
        runs.append(_in_thread(lambda i=i: unit.run_job(rec.job(i), _far())))
        _until(lambda i=i: unit.queued == i + 1)
    gate.set()
    _join(blocker, *(t for t, _ in runs))
    assert rec.batches == [[0, 1, 2]]  # in arrival order; the oldest has waited past the delay
    assert [out[0][1].batch_size for _, out in runs] == [3, 3, 3]
    assert all(out[0][1].queue_s >= runs[-1][1][0][1].queue_s for _, out in runs)  # older waited longer


def test_incompatible_requests_are_not_mixed() -> None:
    unit = BatchingComputeUnit(16, max_batch_size=8, max_queue_delay_s=0.0)
    rec = _Recorder()
    gate, blocker = _blocked(unit)
    runs = []
    for i, key in enumerate(["x", "y", "x", "y", None, "x"]):
        runs.append(_in_thread(lambda i=i, key=key: unit.run_job(rec.job(i, key), _far())))
        _until(lambda i=i: unit.queued == i + 1)
    gate.set()
    _join(blocker, *(t for t, _ in runs))
    # batches start in the order of their oldest request; each holds one key; None runs alone
    assert rec.batches == [[0, 2, 5], [1, 3], [4]]
    assert [out[0][0] for _, out in runs] == [2 * i for i in range(6)]


def test_summed_size_stays_within_max_batch_size() -> None:
    unit = BatchingComputeUnit(16, max_batch_size=4, max_queue_delay_s=0.0)
    rec = _Recorder()
    gate, blocker = _blocked(unit)
    runs = []
    for i, size in enumerate([2, 1, 3, 1, 5]):
        runs.append(_in_thread(lambda i=i, size=size: unit.run_job(rec.job(i, size=size), _far())))
        _until(lambda i=i: unit.queued == i + 1)
    gate.set()
    _join(blocker, *(t for t, _ in runs))
    # [2, 1] stops before the 3 that does not fit (compatible requests keep their order); 5 > max runs alone
    assert rec.batches == [[0, 1], [2, 3], [4]]
    assert [out[0][1].batch_size for _, out in runs] == [3, 3, 4, 4, 5]


def test_full_queue_refuses_or_blocks() -> None:
    unit = BatchingComputeUnit(2, max_batch_size=8, max_queue_delay_s=0.0)
    rec = _Recorder()
    gate, blocker = _blocked(unit)
    runs = [_in_thread(lambda i=i: unit.run_job(rec.job(i), _far())) for i in range(2)]
    _until(lambda: unit.queued == 2)
    with pytest.raises(Overloaded, match="compute queue full"):
        unit.run_job(rec.job(9), _far())
    with pytest.raises(Overloaded):
        unit.run_job(rec.job(9), time.monotonic() + 0.05, block=True)
    waiting = _in_thread(lambda: unit.run_job(rec.job(7), _far(), block=True))
    gate.set()
    _join(blocker, waiting[0], *(t for t, _ in runs))
    assert waiting[1][0][0] == 14 and 9 not in [i for b in rec.batches for i in b]


def test_deadline_while_waiting_is_not_computed() -> None:
    unit = BatchingComputeUnit(8, max_batch_size=8, max_queue_delay_s=FOREVER_S)
    rec = _Recorder()
    with pytest.raises(DeadlineExceeded, match="compute queue"):  # alone, waiting for company past its deadline
        unit.run_job(rec.job(1), time.monotonic() + 0.05)
    gate, blocker = _blocked(unit)
    with pytest.raises(DeadlineExceeded):  # behind a busy unit
        unit.run_job(rec.job(2, key=None), time.monotonic() + 0.05)
    gate.set()
    _join(blocker)
    assert rec.batches == [] and unit.queued == 0
    assert unit.run_job(rec.job(3, key=None), _far())[0] == 6


def test_stop_fails_waiters_and_refuses_new_ones() -> None:
    unit = BatchingComputeUnit(8, max_batch_size=8, max_queue_delay_s=FOREVER_S, slowdown_factor=1000.0, cpu_clock=False)
    first = _in_thread(lambda: unit.run(lambda: time.sleep(0.01) or "first", _far()))  # then ~10 s emulated
    _until(lambda: unit._busy)
    rec = _Recorder()
    waiters = [_in_thread(lambda i=i: unit.run_job(rec.job(i), _far())) for i in range(3)]
    _until(lambda: unit.queued == 3)
    unit.stop()
    _join(first[0], *(t for t, _ in waiters))  # the emulated slowdown is cut short
    assert first[1][0][0] == "first"
    assert all(isinstance(out[0], ShuttingDown) for _, out in waiters) and rec.batches == []
    with pytest.raises(ShuttingDown):
        unit.run_job(rec.job(1), _far())


def test_errors_reach_every_member_and_free_the_unit() -> None:
    unit = BatchingComputeUnit(8, max_batch_size=2, max_queue_delay_s=FOREVER_S)

    def boom(items: list[int]) -> list[int]:
        raise ZeroDivisionError(f"batch {items}")

    runs = [_in_thread(lambda i=i: unit.run_job(BatchJob(i, boom, "k"), _far())) for i in range(2)]
    _join(*(t for t, _ in runs))
    assert all(isinstance(out[0], ZeroDivisionError) for _, out in runs)
    assert unit.run(lambda: "still usable", _far())[0] == "still usable"


class _Sleeps:
    """Stands in for the unit's stop event: records the emulated-slowdown waits."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        return False

    def set(self) -> None:
        pass


def test_slowdown_applies_once_per_batch() -> None:
    unit = BatchingComputeUnit(8, max_batch_size=4, max_queue_delay_s=FOREVER_S, slowdown_factor=3.0, cpu_clock=False)
    sleeps = unit._stopped = _Sleeps()  # type: ignore[assignment]

    def compute(items: list[int]) -> list[int]:
        time.sleep(0.01)
        return items

    runs = [_in_thread(lambda i=i: unit.run_job(BatchJob(i, compute, "k"), _far())) for i in range(4)]
    _join(*(t for t, _ in runs))
    assert len(sleeps.waits) == 1 and sleeps.waits[0] >= 2 * 0.01  # (f - 1) x the batch's compute, once
    timings = [out[0][1] for _, out in runs]
    assert len({t.compute_s for t in timings}) == 1 and timings[0].batch_size == 4


def test_fcfs_unit_runs_a_job_as_a_batch_of_one() -> None:
    rec = _Recorder()
    result, timing = ComputeUnit(1).run_job(rec.job(5, size=3), _far())
    assert result == 10 and rec.batches == [[5]] and timing.batch_size == 3


# ------------------------------------------------------------------------------------------- batched runs
class _Toy(nn.Module):
    """(B, 4) -> relu(x) -> relu(linear) -> (B, 3); the first stage is the identity on non-negative inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)
        with torch.no_grad():
            self.a.weight.copy_(torch.eye(4))
            self.a.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(x))  # (B, 4)
        x = torch.relu(self.b(x))
        return self.c(x)  # (B, 3)


class _FirstFeatureHead(nn.Module):
    """Confident (~1) where feature 0 is 1, undecided (0.5) where it is 0."""

    def forward(self, v: torch.Tensor) -> torch.Tensor:  # (B, 4) -> (B, 2)
        return torch.stack([100.0 * v[:, 0], torch.zeros_like(v[:, 0])], dim=1)


@pytest.fixture(scope="module")
def toy() -> tuple[ModelRuntime, int]:
    torch.manual_seed(0)
    rt = ModelRuntime(_Toy(), torch.rand(1, 4), max_batch=8)
    pos = next(p for p in rt.cuts if rt.cut_info(p).tensors[0].name == "relu")
    rt.exits[pos] = _FirstFeatureHead()
    return rt, pos


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.allclose(x, y, rtol=1e-5, atol=1e-6) for x, y in zip(a, b))


def test_batched_run_equals_unbatched_runs(runtime: ModelRuntime) -> None:
    n = runtime.num_positions
    xs = [torch.rand(b, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i, b in enumerate([1, 2, 1, 3])]
    for start, stop in ((0, 20), (0, n), (20, n)):
        inputs = [[x] if start == 0 else runtime.run(0, start, [x]).values for x in xs]
        key = runtime.batch_key(start, stop, inputs[0])
        assert key is not None and all(runtime.batch_key(start, stop, v) == key for v in inputs)
        batched = runtime.run_batch(start, stop, inputs)
        for alone, together in zip((runtime.run(start, stop, v) for v in inputs), batched):
            assert together.position == alone.position == stop and _same(together.values, alone.values)


def test_early_exits_stay_per_request_in_a_mixed_batch(toy: tuple[ModelRuntime, int]) -> None:
    rt, pos = toy
    yes, no = [1.0, 0.3, 0.2, 0.1], [-1.0, 0.3, 0.2, 0.1]
    requests = [[torch.tensor([yes])], [torch.tensor([no, no])], [torch.tensor([yes, no])], [torch.tensor([yes, yes])]]
    exits = [ExitPoint(pos, 0.9)]
    batched = rt.run_batch(0, rt.num_positions, requests, exits)
    for values, together in zip(requests, batched):
        alone = rt.run(0, rt.num_positions, values, exits)
        assert (together.exit_position, together.position) == (alone.exit_position, alone.position)
        assert together.exit_confidence == pytest.approx(alone.exit_confidence) and _same(together.values, alone.values)
    # a request exits only if all its samples are confident: [yes, no] continues
    assert [o.exit_position for o in batched] == [pos, -1, -1, pos]
    assert [o.values[0].shape[0] for o in batched] == [1, 2, 2, 2]


def test_batch_keys_separate_ranges_exits_and_shapes(toy: tuple[ModelRuntime, int]) -> None:
    rt, pos = toy
    n = rt.num_positions
    one, two = [torch.rand(1, 4)], [torch.rand(2, 4)]
    assert rt.batch_key(0, n, one) == rt.batch_key(0, n, two)  # dim 0 may differ
    assert rt.batch_key(0, n, one) != rt.batch_key(0, pos, one)
    assert rt.batch_key(0, n, one) != rt.batch_key(0, n, one, [ExitPoint(pos, 0.9)])
    assert rt.batch_key(0, n, one, [ExitPoint(pos, 0.9)]) != rt.batch_key(0, n, one, [ExitPoint(pos, 0.8)])
    assert rt.batch_key(0, n, one) != rt.batch_key(0, n, [torch.rand(1, 4, dtype=torch.float64)])


# ------------------------------------------------------------------------------------------- in the agent
def test_agent_batches_concurrent_requests_and_reports_it(chain: Callable[..., list], runtime: ModelRuntime) -> None:
    batching = {"enabled": True, "max_batch_size": 4, "max_queue_delay_microseconds": 10_000_000}  # full batches only
    device, cloud = chain("device[0:20]|lossless > cloud[20:]", batching=batching, queues={"compute": 8})
    assert isinstance(device.compute, BatchingComputeUnit) and isinstance(cloud.compute, BatchingComputeUnit)
    xs = [torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    runs = [_in_thread(lambda i=i: device.submit_local([xs[i]], request_id=f"r{i}", deadline=_far())) for i in range(4)]
    _join(*(t for t, _ in runs))
    for x, (_, out) in zip(xs, runs):
        answer = out[0]
        assert _same(answer.values, runtime.run(0, runtime.num_positions, [x]).values)
        dev, up = answer.breakdown.tiers
        assert dev.batch_size == 4 and up.batch_size == 4  # the cloud's came through the wire (LoopbackClient)
        assert up.queue_s >= 0 and up.compute_s > 0


def test_batching_config() -> None:
    from edgeflow.cli.agent_cmds import read_node_file

    assert not NodeConfig.from_mapping({"role": "device", "plan": "device[0:]"}).batching.enabled
    for name in ("edge", "cloud"):
        b = read_node_file(NODES / f"{name}.yaml").batching
        assert b.enabled and b.max_batch_size >= 1 and b.max_queue_delay_microseconds >= 0
    assert not read_node_file(NODES / "device.yaml").batching.enabled
