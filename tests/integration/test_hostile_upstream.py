"""A tier that does not trust its upstream: every lie of edgeflow.testing.lying refused (issue 14, item 1/5).

A :class:`LyingUpstream` relays to the real cloud agent process and rewrites its replies. The device (in process,
and as its own agent process) and a real edge relaying must refuse each lie as a bad reply: the device finishes
the model itself (a fallback that names the bad reply) and answers what the unsplit model answers; nothing a lie
declares is allocated.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from edgeflow.agent.client import AgentClient, DeviceClient
from edgeflow.errors import EdgeflowError
from edgeflow.testing.fuzz import read_memory_kib
from edgeflow.testing.lying import DESCRIBE_LIES, LIES, LyingUpstream

TO_CLOUD = "device[0:20]|lossless > cloud[20:]"


def _ref(runtime: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return runtime.model(x)


def _same(out: torch.Tensor, ref: torch.Tensor) -> bool:
    return torch.allclose(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lie", sorted(LIES))
def test_the_device_in_process_refuses_every_lie(lie: str, cloud: Any, runtime: Any, images: Any,
                                                make_device_config: Any) -> None:  # fmt: skip
    x = images[0]
    with LyingUpstream(cloud.address, lie) as liar:
        with DeviceClient.from_config(make_device_config(liar.address, plan=TO_CLOUD)) as device:
            r = device.infer(x)
        assert liar.lies_told >= 1
    assert r.breakdown.answered_by == "device", r.breakdown
    assert "sent a bad reply" in r.breakdown.fallback, r.breakdown.fallback
    assert _same(r.output, _ref(runtime, x))
    assert device.agent.bad_replies == 1


def test_an_honest_relay_is_answered_by_the_cloud(cloud: Any, runtime: Any, images: Any, make_device_config: Any) -> None:
    with LyingUpstream(cloud.address) as honest:  # the relay itself is not a lie
        with DeviceClient.from_config(make_device_config(honest.address, plan=TO_CLOUD)) as device:
            r = device.infer(images[1])
    assert r.breakdown.answered_by == "cloud" and not r.breakdown.fallback
    assert _same(r.output, _ref(runtime, images[1])) and device.agent.bad_replies == 0


@pytest.mark.parametrize("lie", ["wrong-shape", "zstd-bomb-1gib", "1m-tier-timings"])
def test_an_edge_does_not_relay_a_lie(lie: str, cloud: Any, runtime: Any, images: Any, tools: Any,
                                      make_device_config: Any) -> None:  # fmt: skip
    with LyingUpstream(cloud.address, lie) as liar:
        edge = tools.AgentProcess("edge", upstream=liar.address, plan=tools.LOSSLESS_PLAN)
        try:
            with DeviceClient.from_config(make_device_config(edge.address)) as device:
                r = device.infer(images[2])
        finally:
            assert edge.stop() == 0, edge.log
    assert r.breakdown.answered_by == "edge" and r.breakdown.fallback.startswith("edge: upstream cloud")
    assert "sent a bad reply" in r.breakdown.fallback and device.agent.bad_replies == 0
    assert _same(r.output, _ref(runtime, images[2]))
    assert "bad reply from upstream" in edge.log


def _hwm_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), MB."""
    return read_memory_kib(pid)["VmHWM"] / 1024


@pytest.mark.parametrize("lie", ["other-request-id", "zstd-bomb-1gib", "two-zstd-bombs", "1m-tier-timings"])
def test_a_device_agent_process_refuses_a_lie_in_bounded_memory(lie: str, cloud: Any, runtime: Any, images: Any,
                                                                tools: Any) -> None:  # fmt: skip
    with LyingUpstream(cloud.address, lie) as liar:
        device = tools.AgentProcess("device", upstream=liar.address, plan=TO_CLOUD)
        try:
            with AgentClient(device.address) as client:
                client.infer(images[0], plan="device[0:]")  # warm: the device's own full run, no upstream
                before = _hwm_mb(device.pid)
                r = client.infer(images[3])
                grew = _hwm_mb(device.pid) - before
                counters = client.peer.describe(timeout_s=10.0).counters
        finally:
            assert device.stop() == 0, device.log
    assert r.breakdown.answered_by == "device" and "sent a bad reply" in r.breakdown.fallback
    assert _same(r.output, _ref(runtime, images[3])) and counters.fallbacks == 1
    assert grew < 64, f"{lie}: the device's peak RSS grew {grew:.0f} MB"
    print(f"\n{lie}: device peak RSS +{grew:.1f} MB")


@pytest.mark.parametrize("lie", sorted(DESCRIBE_LIES))
def test_a_lying_description_is_never_a_crash(lie: str, cloud: Any, runtime: Any, images: Any, tools: Any,
                                              make_device_config: Any) -> None:  # fmt: skip
    with LyingUpstream(cloud.address, describe_lie=lie) as liar:
        with DeviceClient.from_config(make_device_config(liar.address, plan=TO_CLOUD)) as device:
            r = device.infer(images[0])  # the handshake is refused: the device finishes the model itself
        assert r.breakdown.answered_by == "device" and "sent a bad reply" in r.breakdown.fallback
        assert _same(r.output, _ref(runtime, images[0]))
        with pytest.raises(EdgeflowError, match="bad reply"):  # in process, plan: auto waits for its planner
            DeviceClient.from_config(make_device_config(liar.address, plan="auto"))
        device_proc = tools.AgentProcess("device", upstream=liar.address, plan="auto")  # the deployment path
        try:
            with AgentClient(device_proc.address) as client:
                r = client.infer(images[1])
        finally:
            assert device_proc.stop() == 0, device_proc.log
    assert r.breakdown.answered_by == "device" and _same(r.output, _ref(runtime, images[1]))
    assert "bad reply" in device_proc.log and "Traceback" not in device_proc.log


def test_stream_replies_for_ids_never_sent_are_dropped(cloud: Any, runtime: Any, images: Any) -> None:
    with LyingUpstream(cloud.address, stream_extra=3) as liar, AgentClient(liar.address) as client:
        xs = images[:3]
        got = list(client.infer_stream(xs, timeout_s=60.0))  # ends when every request has its answer
        assert len(got) == 3 and client.peer.unexpected_replies == 9
    refs = [_ref(runtime, x) for x in xs]
    assert all(any(_same(r.output, ref) for ref in refs) for r in got)
