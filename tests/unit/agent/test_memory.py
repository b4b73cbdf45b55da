"""The device's result memory: identical inputs answered again without compute or transfer (agent/memory.py)."""

from __future__ import annotations

import time
from typing import Iterator

import pytest
import torch

from edgeflow.agent import Agent, ModelRuntime, Upstream
from edgeflow.agent.memory import ResultMemory
from edgeflow.config import MemoryConfig, NodeConfig
from edgeflow.errors import ConfigError
from edgeflow.transport import LoopbackClient

PLAN = "device[0:20]|int8 > cloud[20:]"


def _x(seed: int) -> torch.Tensor:
    return torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _node(role: str, upstream: bool, **sections: dict) -> NodeConfig:
    data: dict = {"role": role, "plan": PLAN, **sections}
    if upstream:
        data["upstream"] = {"address": "loopback:1"}
    return NodeConfig.from_mapping(data)


@pytest.fixture
def pair(runtime: ModelRuntime) -> Iterator[tuple[Agent, Agent]]:
    """A device with its memory on, over a loopback wire to a cloud."""
    cloud = Agent(_node("cloud", False), runtime, profile_repeats=0)
    up = Upstream(LoopbackClient(cloud, address="cloud-loopback"), fingerprint=runtime.fingerprint, role="device",
                  connect_s=1.0)  # fmt: skip
    device = Agent(_node("device", True, memory={"enabled": True, "max_entries": 4}), runtime, upstream=up,
                   profile_repeats=0)  # fmt: skip
    yield device, cloud
    device.close()
    cloud.close()


def _ask(device: Agent, x: torch.Tensor, rid: str):  # type: ignore[no-untyped-def]
    return device.submit_local([x], request_id=rid, deadline=time.monotonic() + 10)


def test_a_repeat_is_answered_from_memory_with_nothing_computed_or_sent(pair: tuple[Agent, Agent]) -> None:
    device, cloud = pair
    first = _ask(device, _x(1), "a")
    assert first.breakdown.memory == "miss" and first.breakdown.answered_by == "cloud"
    sent = sum(t.bytes_out + t.bytes_back for t in first.breakdown.tiers)
    assert sent > 0
    served = cloud.counters.requests
    again = _ask(device, _x(1).clone(), "b")  # same content, another tensor and request id
    b = again.breakdown
    assert b.memory == "hit" and b.memory_saved_bytes == sent and b.answered_by == "cloud"
    assert [t.tier for t in b.tiers] == ["device"] and b.tiers[0].compute_s == 0 and b.tiers[0].bytes_out == 0
    assert cloud.counters.requests == served  # the cloud saw nothing
    assert torch.equal(again.values[0], first.values[0]) and again.position == first.position
    again.values[0].add_(1.0)  # the caller's copy: the memory keeps its own
    assert torch.equal(_ask(device, _x(1), "c").values[0], first.values[0])
    other = _ask(device, _x(2), "d")
    assert other.breakdown.memory == "miss"
    stats = device.result_memory.stats()  # type: ignore[union-attr]
    assert (stats.hits, stats.misses, stats.entries, stats.bytes_saved) == (2, 2, 2, 2 * sent)


def test_a_forced_plan_is_remembered_apart(pair: tuple[Agent, Agent]) -> None:
    device, _ = pair
    _ask(device, _x(1), "a")
    forced = device.submit_local([_x(1)], request_id="f", deadline=time.monotonic() + 10, plan="device[0:]")
    assert forced.breakdown.memory == "miss" and forced.breakdown.answered_by == "device"


def test_a_fallback_answer_is_not_remembered(pair: tuple[Agent, Agent]) -> None:
    device, cloud = pair
    assert cloud.drain(0.1)  # the cloud refuses: the device finishes the model itself
    r = _ask(device, _x(3), "a")
    assert r.breakdown.fallback and r.breakdown.memory == "miss"
    assert _ask(device, _x(3), "b").breakdown.memory == "miss"
    assert device.result_memory.stats().entries == 0  # type: ignore[union-attr]


def test_forgetting_a_tier_drops_every_answer_it_produced(pair: tuple[Agent, Agent]) -> None:
    device, _ = pair
    _ask(device, _x(1), "a")
    device.submit_local([_x(2)], request_id="l", deadline=time.monotonic() + 10, plan="device[0:]")
    memory = device.result_memory
    assert memory is not None and memory.stats().entries == 2
    assert memory.forget("cloud") == 1  # e.g. the cloud was found answering wrongly
    assert _ask(device, _x(1), "b").breakdown.memory == "miss"  # computed again
    hit = device.submit_local([_x(2)], request_id="m", deadline=time.monotonic() + 10, plan="device[0:]")
    assert hit.breakdown.memory == "hit" and hit.breakdown.answered_by == "device"


def test_the_key_covers_content_dtype_shape_plan_and_model() -> None:
    m = ResultMemory(MemoryConfig(enabled=True), fingerprint="model-a")
    x = _x(1)
    k = m.key([x], PLAN)
    assert m.key([x.clone()], PLAN) == k
    assert m.key([x.double()], PLAN) != k
    assert m.key([x.reshape(1, 3, 8, 32)], PLAN) != k
    y = x.clone()
    y[0, 0, 0, 0] += 1e-6
    assert m.key([y], PLAN) != k
    assert m.key([x], "device[0:]") != k
    assert m.key([x, x], PLAN) != k
    assert ResultMemory(MemoryConfig(enabled=True), fingerprint="model-b").key([x], PLAN) != k  # never across models
    assert m.key([torch.zeros(0, 3)], PLAN) != m.key([torch.zeros(3, 0)], PLAN)


def test_eviction_keeps_entries_and_bytes_bounded() -> None:
    m = ResultMemory(MemoryConfig(enabled=True, max_entries=3, max_mb=1.0), fingerprint="f")
    out = torch.zeros(1, 1000)  # 4 KB
    for i in range(5):
        assert m.put(bytes([i]), [out], position=70, answered_by="cloud", exit_position=-1, exit_confidence=0.0,
                     saved_bytes=100)  # fmt: skip
    s = m.stats()
    assert (s.entries, s.evicted) == (3, 2)
    assert m.get(bytes([0])) is None and m.get(bytes([1])) is None and m.get(bytes([4])) is not None  # LRU order
    m.get(bytes([2]))  # used: kept over 3
    m.put(b"new", [out], position=70, answered_by="cloud", exit_position=-1, exit_confidence=0.0, saved_bytes=0)
    assert m.get(bytes([3])) is None and m.get(bytes([2])) is not None
    big = torch.zeros(1, 300_000)  # 1.2 MB: over the whole budget, not kept
    assert not m.put(b"big", [big], position=70, answered_by="cloud", exit_position=-1, exit_confidence=0.0,
                     saved_bytes=0)  # fmt: skip
    small = ResultMemory(MemoryConfig(enabled=True, max_entries=100, max_mb=0.01), fingerprint="f")  # ~10 KB
    for i in range(10):
        small.put(bytes([i]), [out], position=70, answered_by="cloud", exit_position=-1, exit_confidence=0.0,
                  saved_bytes=0)  # fmt: skip
    assert small.stats().nbytes <= 0.01 * 2**20 and small.stats().entries == 2


def test_the_memory_is_the_devices() -> None:
    with pytest.raises(ConfigError, match="memory"):
        _node("cloud", False, memory={"enabled": True})
    with pytest.raises(ConfigError, match="memory.max_entries"):
        _node("device", True, memory={"enabled": True, "max_entries": 0})
