"""A lying upstream that answers a well-formed wrong class, caught by the device's own exit head (issue 17, item 3).

A :class:`LyingUpstream` with :class:`WrongClass` relays to a real edge agent process (which forwards to the real
cloud) and flips the answer of a fraction of the requests, reproducibly by request id. The device — in process, and
as its own agent process — checks each answer with its head on its slice (``validate``): under ``flag`` it answers
the upstream's class and marks the suspicious ones; under ``recompute-locally`` it finishes the model itself for
them. Inputs are demo test images in a fixed order and the liar is seeded: every count below is deterministic.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from edgeflow.agent.client import AgentClient, DeviceClient
from edgeflow.testing.lying import LyingUpstream, WrongClass

PLAN = "device[0:20]|lossless > edge[20:52]|lossless > cloud[52:]"
N = 40  # requests per run


@pytest.fixture(scope="module")
def test_images() -> list[torch.Tensor]:
    from edgeflow.core.data import load_demo_dataset

    x, _ = load_demo_dataset("test")
    return [x[i : i + 1] for i in range(N)]


@pytest.fixture(scope="module")
def unsplit(runtime: Any, test_images: list[torch.Tensor]) -> list[int]:
    with torch.inference_mode():
        return [int(runtime.model(x).argmax()) for x in test_images]


def _device(make_device_config: Any, address: str, mode: str) -> DeviceClient:
    cfg = make_device_config(address, plan=PLAN).with_overrides(**{"validate.mode": mode, "memory.enabled": False})
    return DeviceClient.from_config(cfg)


@pytest.mark.parametrize("mode", ["flag", "recompute-locally"])
def test_the_device_flags_flipped_answers(mode: str, edge: Any, test_images: list[torch.Tensor], unsplit: list[int],
                                          make_device_config: Any) -> None:  # fmt: skip
    liar_cls = WrongClass(0.3, seed=3)
    with LyingUpstream(edge.address, wrong_class=liar_cls) as liar, _device(make_device_config, liar.address, mode) as d:
        results = [d.infer(x) for x in test_images]
        stats = d.agent.validator.stats()
    flipped = [i for i, r in enumerate(results) if r.breakdown.upstream_classes != (unsplit[i],)]
    assert len(flipped) == len(liar_cls.flipped) >= 5  # every lie told is seen as the upstream's class
    marks = [r.breakdown.validation for r in results]
    caught = [i for i in flipped if marks[i] in ("flagged", "recomputed")]
    assert len(caught) >= 0.9 * len(flipped), (marks, flipped)
    if mode == "flag":
        assert all(int(r.output.argmax()) == r.breakdown.upstream_classes[0] for r in results)  # answered as told
        assert "recomputed" not in marks
    else:  # every caught lie answered by the device itself, equal to the unsplit model
        for i in caught:
            assert marks[i] == "recomputed" and results[i].breakdown.answered_by == "device"
            assert int(results[i].output.argmax()) == unsplit[i]
        assert stats.recomputed == len([m for m in marks if m == "recomputed"])
    assert stats.checked == N and stats.flagged == len([m for m in marks if m in ("flagged", "recomputed")])


def test_honest_traffic_is_not_flagged_beyond_the_bound(edge: Any, test_images: list[torch.Tensor],
                                                        unsplit: list[int], make_device_config: Any) -> None:  # fmt: skip
    with LyingUpstream(edge.address) as honest, _device(make_device_config, honest.address, "flag") as d:
        results = [d.infer(x) for x in test_images]
        stats = d.agent.validator.stats()
    assert [r.breakdown.upstream_classes for r in results] == [(c,) for c in unsplit]
    flagged = [r for r in results if r.breakdown.validation == "flagged"]
    assert len(flagged) <= 0.02 * N, [r.breakdown.validation_reason for r in flagged]
    assert stats.suspect == [] and stats.checked == N


def test_a_device_agent_process_recomputes_flipped_answers(edge: Any, test_images: list[torch.Tensor],
                                                           unsplit: list[int], tools: Any, tmp_path: Any) -> None:  # fmt: skip
    """The deployment path: the device as its own agent process; its check travels in the reply's breakdown."""
    node = tmp_path / "device.yaml"
    node.write_text((tools.NODES / "device.yaml").read_text() + "validate: recompute-locally\n")
    liar_cls = WrongClass(1.0, seed=5, choice="runner-up")  # every answer flipped to the most plausible other class
    with LyingUpstream(edge.address, wrong_class=liar_cls) as liar:
        device = tools.AgentProcess(node, upstream=liar.address, plan=PLAN)
        try:
            with AgentClient(device.address) as client:
                results = [client.infer(x) for x in test_images[:12]]
        finally:
            assert device.stop() == 0, device.log
    marks = [r.breakdown.validation for r in results]
    assert all(r.breakdown.upstream_classes != (unsplit[i],) for i, r in enumerate(results))  # all lies
    recomputed = [i for i, m in enumerate(marks) if m == "recomputed"]
    assert len(recomputed) >= 10, marks
    assert all(int(results[i].output.argmax()) == unsplit[i] for i in recomputed)
    assert "is suspect" in device.log and "Traceback" not in device.log
