"""Agents that die (kill -9), stall (SIGSTOP) or come back on the same port: every request still gets one answer.

One edge and one cloud process serve the whole module; a test that kills or stops one of them brings it back on
the same port (``Chain.heal``), so the tests do not depend on their order. Times are measured
and printed (``-s``), never asserted.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
import yaml

from edgeflow.agent import DeviceClient
from edgeflow.core.codecs import get_codec
from edgeflow.testing.threads import in_thread
from edgeflow.transport import InferCall, PeerClient, WireTensor
from edgeflow.transport.messages import encode_reply

_START_S = 90.0


class Chain:
    """An edge and a cloud agent (the test helpers' AgentProcess); :meth:`heal` restarts whichever is dead on the
    port it had, and resumes a stopped one."""

    def __init__(self, tools: Any, edge_node: Path) -> None:
        plan = tools.LOSSLESS_PLAN
        self.cloud = tools.AgentProcess("cloud", plan=plan)
        self.edge = tools.AgentProcess(edge_node, upstream=self.cloud.address, plan=plan)

    def heal(self) -> None:
        for a in (self.cloud, self.edge):
            a.resume()  # a no-op unless stopped
            if not a.running():
                a.restart(_START_S)

    def close(self) -> None:
        for a in (self.edge, self.cloud):
            a.stop()


@pytest.fixture(scope="module")
def chain(tools, tmp_path_factory) -> Iterator[Chain]:  # type: ignore[no-untyped-def]
    # a slow edge (x20), so that a live plan for a slow device clearly runs on the cloud while it is up
    node = yaml.safe_load((tools.NODES / "edge.yaml").read_text())
    node["compute"]["slowdown_factor"] = 20.0
    edge_node = tmp_path_factory.mktemp("failover") / "edge.yaml"
    edge_node.write_text(yaml.safe_dump(node))
    c = Chain(tools, edge_node)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def healthy(chain: Chain) -> Chain:
    chain.heal()
    return chain


def _same(out: torch.Tensor, ref: torch.Tensor) -> bool:
    """Lossless hops: the unsplit model's output, up to the last ulps that dynamic batching may change."""
    return torch.allclose(out, ref, rtol=1e-5, atol=1e-5)


def _ref(runtime: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return runtime.model(x)


def _stream_and_kill(device: DeviceClient, xs: list[torch.Tensor], victim: Any, kill_after: int) -> list[Any]:
    """Pipeline ``xs`` (``max_inflight`` in flight) and kill ``victim`` after ``kill_after`` answers."""
    results = []
    for r in device.infer_many(xs):
        results.append(r)
        if len(results) == kill_after:
            victim.kill()  # SIGKILL: no drain, no goodbye, as a crash
    return results


# ------------------------------------------------------------------------------------------- kill -9
def test_cloud_killed_mid_stream_edge_answers_then_reconnects(healthy: Chain, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    xs = images[:4] * 5
    with DeviceClient.from_config(make_device_config(healthy.edge.address)) as device:
        results = _stream_and_kill(device, xs, healthy.cloud, kill_after=4)
        assert len(results) == len(xs)  # every request answered, none twice (infer_many yields one per input)
        assert all(_same(r.output, _ref(runtime, x)) for r, x in zip(results, xs))
        after = results[4 + device.max_inflight :]  # sent after the kill
        assert after and all(r.answered_by == "edge" and r.breakdown.fallback.startswith("edge: upstream cloud")
                             for r in after)  # fmt: skip
        assert all(r.breakdown.tiers[-1].stop == runtime.num_positions for r in after)
        healthy.cloud.restart(_START_S)  # on the same port: the edge's channel reconnects by itself (gRPC backoff)
        t0 = time.monotonic()
        for _ in range(200):
            r = device.infer(xs[0])
            if r.answered_by == "cloud":
                break
            time.sleep(0.02)
        print(f"\ncloud restarted: answering again {time.monotonic() - t0:.2f} s after it listened")
        assert r.answered_by == "cloud" and not r.breakdown.fallback


def test_edge_killed_mid_stream_device_finishes(healthy: Chain, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    xs = images[:4] * 4
    with DeviceClient.from_config(make_device_config(healthy.edge.address)) as device:
        results = _stream_and_kill(device, xs, healthy.edge, kill_after=4)
        assert len(results) == len(xs)
        assert all(_same(r.output, _ref(runtime, x)) for r, x in zip(results, xs))
        after = results[4 + device.max_inflight :]
        assert after and all(r.answered_by == "device" for r in after)
        assert all(r.breakdown.fallback.startswith("device: upstream edge at ") for r in after)
        assert device.agent.fallbacks >= len(after) and device.agent.last_fallback.startswith("device: ")


# ------------------------------------------------------------------------------------------- stall
def test_stalled_cloud_is_answered_within_the_deadline(healthy: Chain, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    timeout_s = 3.0
    with DeviceClient.from_config(make_device_config(healthy.edge.address)) as device:
        assert device.infer(images[0]).answered_by == "cloud"  # connected and warm
        healthy.cloud.pause()  # SIGSTOP: the connection stays up, nothing answers
        try:
            r = device.infer(images[1], timeout_s=timeout_s)  # raises DeadlineExceeded if the stall ate it all
        finally:
            healthy.cloud.resume()
        print(f"\nstalled cloud: answered in {r.latency_s:.2f} s of {timeout_s:g} by {r.answered_by}: {r.breakdown.fallback}")
        assert _same(r.output, _ref(runtime, images[1]))
        assert r.breakdown.fallback and r.answered_by in ("edge", "device")
        for _ in range(100):  # resumed: the cloud answers again
            if device.infer(images[2]).answered_by == "cloud":
                break
        assert device.infer(images[2]).answered_by == "cloud"


def test_stalled_edge_is_given_up_in_time_for_the_latency_target(healthy: Chain, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    cfg = make_device_config(healthy.edge.address).with_overrides(**{"fallback.slo_ms": 300.0})
    with DeviceClient.from_config(cfg) as device:
        # the chain's first requests (channels, a cloud just restarted by an earlier test) may miss the target
        # on a busy machine and be finished here; once warm, they go through: wait for one that does
        answered = []
        for _ in range(200):
            answered.append(device.infer(images[0]).answered_by)
            if answered[-1] == "cloud":
                break
        assert answered[-1] == "cloud", answered
        healthy.edge.pause()
        try:  # a 20 s deadline: without the target the device would wait ~20 s for the stalled edge
            r = device.infer(images[1], timeout_s=20.0)
        finally:
            healthy.edge.resume()
        print(f"\nstalled edge, 300 ms target: answered in {r.latency_s:.2f} s by {r.answered_by}: {r.breakdown.fallback}")
        assert r.answered_by == "device" and "in time for the latency target" in r.breakdown.fallback
        assert _same(r.output, _ref(runtime, images[1]))


# ------------------------------------------------------------------------------------------- live planner
def test_live_planner_leaves_a_dead_cloud_and_returns_when_it_restarts(healthy: Chain, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    cfg = make_device_config(healthy.edge.address, plan="auto").with_overrides(**{"compute.slowdown_factor": 30.0})
    with DeviceClient.from_config(cfg) as device:  # a slow device: the live plan offloads to the cloud
        live = device.live
        assert live is not None and "cloud" in live.plan.tiers, live.plan
        answered = [device.infer(images[i % 4]) for i in range(3)]
        healthy.cloud.kill()
        for i in range(100):
            answered.append(device.infer(images[i % 4]))
            if live.down_tiers() == {"cloud"} and "cloud" not in live.plan.tiers:
                break
        assert live.down_tiers() == {"cloud"} and "cloud" not in live.plan.tiers
        down = [s for s in live.switches if s.reason.startswith("cloud down: edge: upstream cloud")]
        assert down, [s.reason for s in live.switches]
        r = device.infer(images[0])
        assert r.answered_by != "cloud" and not r.breakdown.fallback  # planned around the dead cloud, no waiting
        healthy.cloud.restart(_START_S)
        t_listening = time.monotonic()
        for _ in range(1000):  # the watcher probes the cloud; requests keep flowing meanwhile
            if "cloud" in live.plan.tiers:
                break
            answered.append(device.infer(images[0]))
            time.sleep(0.01)
        t_split = time.monotonic() - t_listening
        # back through the cloud: by the "cloud back" switch, or (when the edge was found down meanwhile, its calls to
        # the dead cloud having stalled) by the hysteresis or "edge back" once the probes measured the chain again
        reasons = [s.reason for s in live.switches]
        assert "cloud" in live.plan.tiers and "cloud[" in live.switches[-1].new, reasons
        for _ in range(50):  # the edge's own channel to the cloud reconnects by itself meanwhile
            r = device.infer(images[1])
            if not r.breakdown.fallback:
                break
        t_cloud = time.monotonic() - t_listening
        print(f"\ncloud back: split plan {t_split:.2f} s, first request through without a fallback {t_cloud:.2f} s after it "
              f"listened; switches: {[(s.old, s.new, s.reason[:40]) for s in live.switches]}")
        assert not r.breakdown.fallback and "cloud" in live.plan.tiers
        assert all(a.output is not None for a in answered)


def test_live_planner_gives_a_stalled_edge_up_without_an_slo_and_returns_to_it(healthy: Chain, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    cfg = make_device_config(healthy.edge.address, plan="auto").with_overrides(**{"compute.slowdown_factor": 30.0})
    assert cfg.fallback.slo_ms is None and cfg.planner.slo_ms is None  # no latency target: only the stall rule
    with DeviceClient.from_config(cfg) as device:
        live = device.live
        assert live is not None and live.plan.tiers != ("device",), live.plan  # a slow device offloads
        for i in range(3):
            device.infer(images[i])
        healthy.edge.pause()
        try:  # a 20 s deadline: without the stall rule the device would wait it out
            r = device.infer(images[1], timeout_s=20.0)
            assert device.agent.source is not None and device.agent.source.settle()  # the reply is learned from
            assert live.down_tiers() == {"edge"} and live.plan.tiers == ("device",), live.plan
            after = device.infer(images[2], timeout_s=20.0)  # planned around the stalled edge: no waiting
        finally:
            healthy.edge.resume()
        print(f"\nstalled edge, no SLO: answered in {r.latency_s:.2f} s by {r.answered_by} "
              f"(predicted {r.predicted_latency_s * 1e3:.1f} ms): {r.breakdown.fallback}")
        assert r.answered_by == "device" and "stalled: past 4x the predicted latency" in r.breakdown.fallback
        assert r.output.shape == _ref(runtime, images[1]).shape  # the plan's exits apply: not always the full model
        assert after.answered_by == "device" and not after.breakdown.fallback
        for _ in range(500):  # the watcher's probes find the edge again
            if live.plan.tiers != ("device",):
                break
            device.infer(images[0])
            time.sleep(0.01)
        # a stalled (not refused) edge that answers probes again is planned with again through the hysteresis, on
        # what the probe measured (not at once: a stall may have been a slow link, see Replanner.set_unavailable)
        reasons = [s.reason for s in live.switches]
        assert live.plan.tiers != ("device",) and live.switches[-1].new == str(live.plan), reasons
        # it left the edge's path for the failure: "edge down", or first the suspicion the stalled call raised (the
        # call went to the plan's next stage through the edge, so the suspect may be named after that stage)
        assert any(r.startswith("edge down") or "suspect: a call to it failed" in r for r in reasons), reasons


# ------------------------------------------------------------------------------------------- duplicates
def _call(runtime: Any, x: torch.Tensor, request_id: str) -> InferCall:
    codec = get_codec("lossless")
    return InferCall(request_id, runtime.fingerprint, 0, [WireTensor("x", "FP32", tuple(x.shape), "lossless",
                                                                     codec.encode(x))])  # fmt: skip


def test_duplicate_request_ids_are_computed_once(healthy: Chain, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    with PeerClient(healthy.cloud.address) as peer:
        first = peer.infer(_call(runtime, images[0], "dup-seq"), timeout_s=30)
        again = peer.infer(_call(runtime, images[0], "dup-seq"), timeout_s=30)
        # the same bytes, timings included: a second computation would have measured its own
        assert encode_reply(first) == encode_reply(again)
        other = peer.infer(_call(runtime, images[0], "dup-other"), timeout_s=30)
        assert other.breakdown.tiers[0].compute_s != first.breakdown.tiers[0].compute_s

        sends = [in_thread(lambda: encode_reply(peer.infer(_call(runtime, images[-1], "dup-concurrent"), timeout_s=30)))
                 for _ in range(4)]  # fmt: skip
        for t, _ in sends:
            t.join(timeout=60)
        replies = [out[0] for _, out in sends if out]
    assert len(replies) == 4 and len(set(replies)) == 1
