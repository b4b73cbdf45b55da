"""``compute.device_speed`` (ms per model or GFLOP/s) resolved into the emulated slowdown, one path for every agent."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from edgeflow.agent.runtime import ModelRuntime
from edgeflow.agent.speed import model_flops, resolve_device_speed, resolve_device_speeds
from edgeflow.agent.wiring import build_agent
from edgeflow.config import NodeConfig
from edgeflow.errors import ConfigError


def _runtime() -> ModelRuntime:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    return ModelRuntime(model, torch.rand(1, 64))


def _node(**compute: object) -> NodeConfig:
    return NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]", "compute": compute}, source="n.yaml")


def test_model_flops_are_the_planners_count() -> None:
    assert model_flops(_runtime()) == 2 * (64 * 32 + 32 * 10)  # 1 MAC = 2 FLOPs, matmuls only


def test_ms_per_model_and_gflops_give_the_slowdown() -> None:
    rt = _runtime()
    cfg, res = resolve_device_speed(_node(device_speed={"ms_per_model": 5.0}), rt, host_ms=0.5)
    assert res is not None and res.slowdown_factor == pytest.approx(10.0)
    assert cfg.compute.slowdown_factor == pytest.approx(10.0) and cfg.compute.device_speed is None
    assert res.describe() == "device_speed 5.0 ms per model, host 0.50 ms: slowdown_factor 10.00"
    flops = 2 * (64 * 32 + 32 * 10)
    cfg, res = resolve_device_speed(_node(device_speed={"gflops": flops / 1e9 / 4e-3}), rt, host_ms=0.5)  # 4 ms
    assert res is not None and res.target_ms == pytest.approx(4.0) and cfg.compute.slowdown_factor == pytest.approx(8.0)
    assert "GFLOP/s x 0.000 GFLOPs = 4.0 ms per model" in res.describe()
    cfg, res = resolve_device_speed(_node(device_speed={"ms_per_model": 0.1}), rt, host_ms=0.5)  # faster than the host
    assert cfg.compute.slowdown_factor == 1.0 and res is not None and "not emulated" in res.describe()
    cfg, res = resolve_device_speed(_node(device_speed={"ms_per_model": 1e6}), rt, host_ms=0.5)
    assert cfg.compute.slowdown_factor == 1000.0  # ComputeConfig's bound
    plain = _node(slowdown_factor=3.0)
    assert resolve_device_speed(plain, rt) == (plain, None)


def test_several_tiers_share_one_host_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeflow.agent import speed

    timed: list[int] = []
    monkeypatch.setattr(speed, "host_ms_per_model", lambda rt: timed.append(1) or 2.0)
    nodes = {"device": _node(device_speed={"ms_per_model": 20.0}).model_copy(update={"role": "device"}),
             "edge": _node(device_speed={"ms_per_model": 4.0}), "cloud": _node()}  # fmt: skip
    out = resolve_device_speeds(nodes, _runtime())
    assert len(timed) == 1
    assert [out[t].compute.slowdown_factor for t in ("device", "edge", "cloud")] == [10.0, 2.0, 1.0]


def test_build_agent_applies_and_logs_the_stated_speed(caplog: pytest.LogCaptureFixture) -> None:
    """What ``edgeflow agent`` does: the agent's compute unit and its Describe carry the resolved slowdown."""
    with caplog.at_level(logging.INFO, logger="edgeflow.agent.wiring"):
        agent = build_agent(_node(device_speed={"ms_per_model": 1e5}), runtime=_runtime())
    try:
        assert agent.config.compute.slowdown_factor == 1000.0 and agent.compute.slowdown_factor == 1000.0
        assert agent.describe().slowdown_factor == 1000.0
        assert "cloud: device_speed 100000.0 ms per model, host" in caplog.text
        assert "slowdown_factor 1000.00" in caplog.text
    finally:
        agent.close()


def test_device_speed_takes_exactly_one_figure() -> None:
    with pytest.raises(ConfigError, match=r"compute\.device_speed: give exactly one of ms_per_model or gflops"):
        _node(device_speed={"ms_per_model": 5.0, "gflops": 2.0})
    with pytest.raises(ConfigError, match=r"compute\.device_speed: give exactly one of ms_per_model or gflops"):
        _node(device_speed={})
    with pytest.raises(ConfigError, match=r"compute\.device_speed\.gflops: Input should be greater than 0"):
        _node(device_speed={"gflops": 0})
