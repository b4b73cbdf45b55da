"""A stand-alone ``edgeflow agent`` whose node file states ``compute.device_speed``: it times its model at start-up,
applies the slowdown, logs how it got it, and reports it in Describe (and ``edgeflow describe``)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import NODES, REPO, AgentProcess, edgeflow_cmd, env

from edgeflow.transport import PeerClient


def _node_file(tmp_path: Path, speed: dict[str, float]) -> Path:
    data = yaml.safe_load((NODES / "device.yaml").read_text())
    data["compute"].pop("slowdown_factor", None)
    data["compute"]["device_speed"] = speed
    data.pop("upstream", None)
    data["plan"] = "device[0:]"  # stand-alone: the device runs the whole model
    path = tmp_path / "phone.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("speed, stated", [
    ({"ms_per_model": 400.0}, r"400\.0 ms per model"),
    ({"gflops": 0.02}, r"0\.02 GFLOP/s x 0\.\d+ GFLOPs = [\d.]+ ms per model"),  # the demo: ~6.7 MFLOPs -> ~335 ms
])  # fmt: skip
def test_a_stand_alone_agent_emulates_its_stated_speed(tmp_path: Path, speed: dict[str, float], stated: str) -> None:
    agent = AgentProcess(_node_file(tmp_path, speed))
    try:
        assert agent.address is not None
        m = re.search(rf"device: device_speed {stated}, host ([\d.]+) ms: slowdown_factor ([\d.]+)", agent.log)
        assert m, agent.log[-3000:]
        host_ms, logged = float(m.group(1)), float(m.group(2))
        with PeerClient(agent.address) as peer:
            described = peer.describe(timeout_s=10.0).slowdown_factor
        assert described > 1.0 and f"{described:.2f}" == f"{logged:.2f}"  # the factor served is the one logged
        target_ms = 400.0 if "ms_per_model" in speed else float(re.search(r"= ([\d.]+) ms per model", m.group(0)).group(1))
        assert described == pytest.approx(min(1000.0, target_ms / host_ms), rel=0.02)  # host ms logged to 0.01 ms
        cli = subprocess.run(edgeflow_cmd("describe", agent.address, "--json"), cwd=REPO, env=env(), capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["slowdown_factor"] == pytest.approx(described)
    finally:
        assert agent.stop() == 0, agent.log[-3000:]
