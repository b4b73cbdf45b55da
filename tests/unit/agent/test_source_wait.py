"""The device's predicted wait for its own compute unit (Source): a Lindley recursion over the predicted work ahead,
never below the predicted compute of the jobs still queued when a job overruns its prediction."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgeflow.agent.source import Source
from edgeflow.config import NodeConfig, PlannerConfig
from edgeflow.core.plan import Plan


class _Planner:
    """Just what a ticket asks of the live planner: a device-only plan whose device compute is 80 ms."""

    def __init__(self) -> None:
        self.settings = PlannerConfig()
        self.model = SimpleNamespace(names=("device", "edge", "cloud"))
        self.cost = SimpleNamespace(latency_s=0.08, source_queue_s=0.0, compute_s={"device": 0.08},
                                    outcome_latency_s={70: 0.08})  # fmt: skip

    def current_breakdown(self):  # type: ignore[no-untyped-def]
        return Plan.parse("device[0:]"), self.cost

    def close(self) -> None:
        pass


def test_the_wait_follows_the_predicted_work_and_a_unit_that_overran_it() -> None:
    state = {"idle": True, "queued": 0}
    cfg = NodeConfig.from_mapping({"role": "device", "plan": "auto"})
    source = Source(cfg, cfg.parsed_plan, idle=lambda: state["idle"], queued=lambda: state["queued"])
    source.attach(_Planner())  # type: ignore[arg-type]
    first = source.ticket(t0=10.0)
    assert first.wait_s == 0.0 and first.predicted_s == pytest.approx(0.08)  # an idle unit: no wait
    state["idle"] = False
    second = source.ticket(t0=10.02)  # the first has 60 ms of its 80 left
    assert second.wait_s == pytest.approx(0.06)
    # 0.5 s on, the unit is still busy (the first overran) and two jobs wait: the recursion says the work ahead is
    # done, the unit says two jobs are still queued ahead of this one
    state["queued"] = 2
    late = source.ticket(t0=10.6)
    assert late.wait_s == pytest.approx(0.16) and late.predicted_s == pytest.approx(0.24)
    source.close()
