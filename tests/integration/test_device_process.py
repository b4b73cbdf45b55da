"""A device deployed as its own agent process (``edgeflow agent --node device.yaml`` with ``plan: auto``) plans live:
it serves its safe plan while its planner measures the chain, then every input other processes send it goes by the
live plan, which follows the link; Describe and ``edgeflow describe`` show what it plans with. Bad inputs are refused
by name and change neither the plan nor the estimates.

Every wait is on an event (a Describe that says so), bounded as a backstop."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import yaml

from edgeflow.agent import AgentClient
from edgeflow.cli.agent_cmds import read_node_file
from edgeflow.errors import RemoteError
from edgeflow.netem import LinkEmulator, LinkSpec
from edgeflow.transport import Description, PeerClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _describe(address: str) -> Description:
    with PeerClient(address) as peer:
        return peer.describe(timeout_s=10)


def _wait(address: str, ok: Callable[[Description], bool], what: str, polls: int = 1200) -> Description:
    for _ in range(polls):  # a backstop, not a budget: each poll is one Describe
        d = _describe(address)
        if ok(d):
            return d
        time.sleep(0.05)
    raise AssertionError(f"device never {what}: {d.live}")


@pytest.fixture
def device_node(tmp_path: Path, tools: Any) -> tuple[Path, int]:
    """A device node file whose upstream is a port nothing listens on yet (the link comes up during the test)."""
    port = _free_port()
    cfg = read_node_file(tools.NODES / "device.yaml", upstream=f"127.0.0.1:{port}", plan="auto", artifact=tools.ARTIFACT)
    data = cfg.model_dump(mode="json", exclude_none=True)
    data["compute"]["slowdown_factor"] = 30.0  # a slow device: offloading pays on a fast link
    data["deadlines"]["connect_s"] = 120.0  # the planner waits for its upstream this long (a backstop)
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, port


def test_device_process_serves_while_planning_then_plans_live(edge, runtime, images, tools, device_node) -> None:  # type: ignore[no-untyped-def]
    path, port = device_node
    device = tools.AgentProcess(path, port=0)
    try:
        d = _describe(device.address)
        assert d.live is not None and not d.live.ready and d.live.safe_plan == "device[0:]", d.live
        with AgentClient(device.address) as client:
            # no upstream yet, planner measuring: served at once by the safe plan, bit-exact
            r = client.infer(images[0], timeout_s=60)
            assert r.plan == "device[0:]" and r.answered_by == "device" and r.predicted_latency_s is None
            with torch.inference_mode():
                assert torch.equal(r.output, runtime.model(images[0]))
            fast = LinkSpec.constant(50e6, delay_s=0.001)
            with LinkEmulator(edge.address, uplink=fast, downlink=fast, listen=("127.0.0.1", port)) as emu:
                d = _wait(device.address, lambda d: d.live.ready, "became ready")
                assert not d.live.error and d.live.first_plan_s > 0 and d.plan == d.live.plan
                assert [k.name for k in d.live.links] == ["device>edge", "edge>cloud"]
                assert all(k.bandwidth_bps > 0 and k.rtt_s > 0 for k in d.live.links), d.live.links
                live_plan = d.live.plan
                assert live_plan != "device[0:]" and ("edge" in live_plan or "cloud" in live_plan), live_plan
                results = [client.infer(images[i % 4], timeout_s=60) for i in range(6)]
                assert all(r.plan and r.predicted_latency_s for r in results)
                assert any(t.tier != "device" for r in results for t in r.breakdown.tiers if t.compute_s > 0)
                d = _wait(device.address, lambda d: d.live.requests >= 6, "learned from its replies")

                # bad inputs: refused by name, and they teach the planner nothing
                before = d.live
                for bad, name in ((torch.rand(1, 3, 32, 32), "shape"), (torch.rand(1, 3, 64, 64).double(), "datatype")):
                    with pytest.raises(RemoteError) as e:
                        client.infer(bad, timeout_s=30)
                    assert e.value.code == "INVALID_ARGUMENT" and "model input 'x'" in e.value.details and name in e.value.details
                after = _describe(device.address).live
                assert after.requests == before.requests and after.plan == before.plan
                assert [k.bandwidth_bps for k in after.links] == [k.bandwidth_bps for k in before.links]

                # the link nearly dies: the device plans around it, and Describe shows the switch
                dead = LinkSpec.constant(20e3, delay_s=0.001)
                emu.set_specs(uplink=dead, downlink=dead)
                for i in range(60):
                    r = client.infer(images[i % 4], timeout_s=60)
                    if r.plan.startswith("device[0:]"):
                        break
                assert r.plan.startswith("device[0:]") and r.answered_by == "device", r.plan
                d = _wait(device.address, lambda d: bool(d.live.switches), "reported a switch")
                assert d.live.switches[-1].old != d.live.switches[-1].new and d.live.switches[-1].reason

            shown = subprocess.run(tools.edgeflow_cmd("describe", device.address), cwd=tools.REPO, env=tools.env(),
                                   capture_output=True, text=True, timeout=120)  # fmt: skip
            assert shown.returncode == 0, shown.stderr
            assert "live planner: ready after" in shown.stdout and "link device>edge:" in shown.stdout
            assert "switches:" in shown.stdout and "->" in shown.stdout
    finally:
        assert device.stop() == 0, device.log
