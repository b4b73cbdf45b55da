"""The content proxy is the device's own CPU work: under an emulated slowdown (``compute.slowdown_factor``) the
ticket that computes it takes ``factor`` x its CPU time, as the compute unit's work does (issue 13: at host speed
it was free and warmed the input for the sending plans' compute only)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from edgeflow.agent.source import Source
from edgeflow.config import NodeConfig, PlannerConfig
from edgeflow.core.plan import Plan


class _Planner:
    """What a ticket asks of the live planner; ``content_s`` counts the proxies it was given."""

    def __init__(self) -> None:
        self.settings = PlannerConfig()
        self.model = SimpleNamespace(names=("device", "edge", "cloud"))
        self.cost = SimpleNamespace(latency_s=0.05, source_queue_s=0.0, compute_s={"device": 0.02},
                                    outcome_latency_s={70: 0.05})  # fmt: skip
        self.proxies: list[float] = []

    def predict(self, plan: Plan):  # type: ignore[no-untyped-def]
        return self.cost

    def content_s(self, plan: Plan, proxy: float) -> tuple[float, dict[int, float]]:
        self.proxies.append(proxy)
        return 0.0, {}

    def close(self) -> None:
        pass


def _source(slowdown: float) -> tuple[Source, _Planner, list[float]]:
    cfg = NodeConfig.from_mapping({"role": "device", "plan": "auto", "compute": {"slowdown_factor": slowdown}})
    source = Source(cfg, cfg.parsed_plan)
    planner = _Planner()
    source.attach(planner)  # type: ignore[arg-type]
    sleeps: list[float] = []
    source.sleep = sleeps.append
    return source, planner, sleeps


def test_the_proxy_is_slowed_like_the_device_compute_and_only_where_it_is_computed() -> None:
    image = [torch.rand(1, 3, 64, 64)]
    split, local = Plan.parse("device[0:20]|int8 > edge[20:]"), Plan.parse("device[0:]")
    source, planner, sleeps = _source(30.0)
    source.ticket(split, t0=1.0, values=image)
    assert len(planner.proxies) == 1 and len(sleeps) == 1 and sleeps[0] >= 0.0  # 30 x its CPU time less its wall time
    source.ticket(local, t0=2.0, values=image)  # a device-only plan computes no proxy: nothing to slow
    assert len(planner.proxies) == 1 and len(sleeps) == 1
    source.close()
    source, planner, sleeps = _source(1.0)  # no emulation: no sleep
    source.ticket(split, t0=1.0, values=image)
    assert len(planner.proxies) == 1 and sleeps == []
    source.close()
