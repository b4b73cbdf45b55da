"""agent/nearmemory.py and near matching in the result memory: calibration, near hits apart from exact ones,
never across plans, bounded with the memory's LRU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeflow.agent.memory import ResultMemory
from edgeflow.agent.nearmemory import NearCalibration, calibrate_demo, choose_threshold, embed
from edgeflow.config import MemoryConfig

PLAN = "device[0:20]|int8 > cloud[20:]"


def _image(seed: int) -> torch.Tensor:
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _memory(threshold: float = 0.02, **config: object) -> ResultMemory:
    near = NearCalibration(threshold, 0.995, 1.0, 0.996, 500, 1000)
    return ResultMemory(MemoryConfig(enabled=True, near=True, **config), "fp", near)


def _put(memory: ResultMemory, x: torch.Tensor, answer: int, plan: str = PLAN, tier: str = "cloud") -> bytes:
    key = memory.key([x], plan)
    assert memory.put(key, [torch.tensor([answer])], position=70, answered_by=tier, exit_position=-1,
                      exit_confidence=0.0, saved_bytes=1000, plan=plan, embedding=memory.embed([x]))  # fmt: skip
    return key


def _find(memory: ResultMemory, x: torch.Tensor, plan: str = PLAN):  # type: ignore[no-untyped-def]
    return memory.find(memory.key([x], plan), memory.embed([x]), plan)


def test_the_threshold_is_the_largest_distance_whose_pairs_agree_at_the_target() -> None:
    rng = np.random.default_rng(0)
    close = rng.uniform(0, 0.01, 2000)  # near copies: they agree
    far = rng.uniform(0.02, 0.1, 300)  # other scenes: a third disagree
    dist = np.concatenate([close, far])
    agree = np.concatenate([np.ones(2000, bool), rng.random(300) > 0.33])
    cal = choose_threshold(dist, agree, 0.995)
    assert 0.0099 < cal.threshold < 0.03 and cal.lower_bound >= 0.995 and cal.pairs == 2300
    assert cal.pairs_within >= 2000
    # a few lucky pairs never set a threshold: too few to bound the rate
    assert choose_threshold(close[:20], np.ones(20, bool), 0.995).threshold == 0.0
    # nothing agrees well enough: no near matching
    assert choose_threshold(far, agree[2000:], 0.995).threshold == 0.0


def test_a_near_duplicate_is_answered_apart_from_exact_hits() -> None:
    memory = _memory()
    x = _image(0)
    _put(memory, x, 3)
    found = _find(memory, x)
    assert found is not None and found[1] == "hit"
    noisy = (x + 0.004 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    found = _find(memory, noisy)
    assert found is not None and found[1] == "near" and int(found[0].values[0]) == 3
    assert _find(memory, _image(1)) is None  # another scene
    s = memory.stats()
    assert (s.hits, s.near_hits, s.misses, s.bytes_saved) == (1, 1, 1, 2000)


def test_near_matches_never_cross_plans_and_only_take_one_image() -> None:
    memory = _memory()
    x = _image(0)
    _put(memory, x, 3)
    assert _find(memory, x + 0.001, plan="device[0:]") is None  # another plan: another answer
    assert memory.embed([x, x]) is None and memory.embed([torch.zeros(1, 16, dtype=torch.long)]) is None
    # a memory without a usable calibration matches exactly only
    plain = ResultMemory(MemoryConfig(enabled=True), "fp", NearCalibration(0.0, 0.995, 1.0, 0.0, 0, 10))
    assert plain.near is None and plain.embed([x]) is None


def test_near_candidates_are_evicted_and_forgotten_with_their_entries() -> None:
    memory = _memory(max_entries=2)
    a, b, c = _image(0), _image(1), _image(2)
    _put(memory, a, 1)
    _put(memory, b, 2, tier="edge")
    _put(memory, c, 3)  # a goes: the least recently used
    assert memory.stats().entries == 2 and memory.stats().evicted == 1
    assert _find(memory, a + 0.001) is None
    assert _find(memory, b + 0.001)[1] == "near"
    assert memory.forget("edge") == 1
    assert _find(memory, b + 0.001) is None  # an answer of a distrusted tier is gone for near matches too
    assert _find(memory, c + 0.001)[1] == "near"
    entry_bytes = memory.stats().nbytes
    assert entry_bytes == memory._entries[next(iter(memory._entries))].nbytes  # the embedding is counted


def test_calibration_on_the_training_split_meets_its_target(runtime) -> None:  # type: ignore[no-untyped-def]
    cal = calibrate_demo(runtime, 0.99)
    assert cal.pairs > 1000 and cal.target == 0.99
    assert cal.threshold == 0.0 or (cal.lower_bound >= 0.99 and cal.pairs_within >= 50)
    assert calibrate_demo(runtime, 0.99) is cal  # once per model and target
    assert embed([torch.rand(1, 3, 16, 16)]).shape == (3 * 8 * 8,)
