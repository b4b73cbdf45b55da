"""Chaos: the well-formed wrong answers an edge or cloud tells with a ``chaos`` section (agent/chaos.py)."""

from __future__ import annotations

import pytest
import torch

from edgeflow.agent.chaos import flip_classes, lies_about
from edgeflow.config import NodeConfig
from edgeflow.errors import ConfigError


def test_which_requests_are_lied_about_is_a_function_of_the_id_and_seed() -> None:
    ids = [f"r{i}" for i in range(2000)]
    chosen = [i for i in ids if lies_about(i, 0.2, seed=1)]
    assert chosen == [i for i in ids if lies_about(i, 0.2, seed=1)]  # reproducible, whatever the order or timing
    assert 0.17 < len(chosen) / len(ids) < 0.23
    assert chosen != [i for i in ids if lies_about(i, 0.2, seed=2)]
    assert not any(lies_about(i, 0.0, seed=1) for i in ids) and all(lies_about(i, 1.0, seed=1) for i in ids)


def test_a_flip_is_well_formed_and_keeps_its_confidence() -> None:
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0], [5.0, 0.0, 4.5, 1.0]])
    for choice in ("uniform", "runner-up"):
        told = flip_classes(logits, "r1", seed=0, choice=choice)
        assert told.shape == logits.shape and (told.argmax(1) != logits.argmax(1)).all()
        assert torch.allclose(told.softmax(-1).max(1).values, logits.softmax(-1).max(1).values)  # a permutation
        assert torch.equal(told.sort(1).values, logits.sort(1).values)
    assert flip_classes(logits, "r1", seed=0, choice="runner-up").argmax(1).tolist() == [2, 2]
    careless = flip_classes(logits, "r1", seed=0, choice="runner-up", careless=True)
    assert careless.argmax(1).tolist() == [2, 2] and careless[0, 2] == 4.0  # its confidence no longer matches
    assert torch.equal(logits, torch.tensor([[0.1, 3.0, 2.0, -1.0], [5.0, 0.0, 4.5, 1.0]]))  # the input untouched
    with pytest.raises(ValueError, match="must be"):
        flip_classes(torch.zeros(3), "r", seed=0)


def test_chaos_is_for_an_upstream_tier_only() -> None:
    cfg = NodeConfig.from_mapping({"role": "edge", "plan": "edge[0:]", "chaos": {"wrong_class": 0.2}})
    assert cfg.chaos.wrong_class == 0.2 and cfg.chaos.choice == "uniform"
    with pytest.raises(ConfigError, match="^d.yaml: chaos: wrong_class makes an edge or a cloud lie"):
        NodeConfig.from_mapping({"role": "device", "plan": "device[0:]", "chaos": {"wrong_class": 0.2}}, source="d.yaml")
    with pytest.raises(ConfigError, match=r"^e.yaml: chaos.wrong_class: Input should be less than or equal to 1"):
        NodeConfig.from_mapping({"role": "edge", "plan": "edge[0:]", "chaos": {"wrong_class": 2}}, source="e.yaml")
