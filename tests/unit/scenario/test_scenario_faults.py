"""Scenario faults without processes: the schema, the injector against fake agents, the recovery metrics."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import pytest

from edgeflow.errors import ConfigError, ScenarioError
from edgeflow.scenario.faults import FaultInjector, link_outage_records
from edgeflow.scenario.report import recovery_metrics
from edgeflow.scenario.schema import Scenario


def _scenario(faults: list[dict[str, Any]]) -> Scenario:
    return Scenario.from_mapping({"name": "x", "faults": faults}, source="x.yaml")


# ------------------------------------------------------------------------------------------- schema
def test_faults_parse() -> None:
    sc = _scenario([{"at_s": 4, "kill": "edge", "restart_after_s": 3}, {"at_s": 4, "kill": "cloud", "signal": "TERM"},
                    {"at_s": 9, "stall": "edge", "for_s": 2}])  # fmt: skip
    assert [f.describe() for f in sc.faults] == [
        "kill edge (SIGKILL) at 4 s, restart after 3 s",
        "kill cloud (SIGTERM) at 4 s, restart at the run's end",
        "stall edge at 9 s for 2 s",
    ]
    assert [f.tier for f in sc.faults] == ["edge", "cloud", "edge"] and sc.faults[0].end_s == 7


def test_a_lie_fault_parses_and_survives_a_re_validation() -> None:
    sc = _scenario([{"at_s": 0, "lie": "edge", "fraction": 0.2, "choice": "runner-up", "seed": 3},
                    {"at_s": 2, "kill": "edge", "restart_after_s": 1}])  # fmt: skip
    assert sc.faults[0].tier == "edge" and sc.faults[0].describe() == (
        "edge answers a wrong class (runner-up) for 0.2 of the requests, seed 3")
    again = sc.with_overrides(**{"workload.requests": 5})  # a dump has every field set: still valid
    assert again.faults == sc.faults


@pytest.mark.parametrize(
    "faults, message",
    [
        ([{"at_s": 1, "kill": "device"}], "x.yaml: faults.0.kill: 'device' is not one of edge, cloud"),
        ([{"at_s": 1}], "x.yaml: faults.0: give exactly one of 'kill', 'stall' or 'lie'"),
        ([{"at_s": 0, "lie": "edge"}], "x.yaml: faults.0: 'lie' needs fraction"),
        ([{"at_s": 2, "lie": "edge", "fraction": 0.2}], "x.yaml: faults.0: 'lie' lasts every whole run: at_s 0"),
        ([{"at_s": 0, "lie": "cloud", "fraction": 0.2, "for_s": 3}], "x.yaml: faults.0: 'lie' lasts every whole run"),
        ([{"at_s": 0, "lie": "edge", "fraction": 1.5}], "x.yaml: faults.0.fraction: Input should be less than or equal to 1"),
        ([{"at_s": 0, "lie": "edge", "fraction": 0.2, "choice": "worst"}],
         "x.yaml: faults.0.choice: 'worst' is not one of uniform, runner-up"),
        ([{"at_s": 1, "kill": "edge", "fraction": 0.2}], "x.yaml: faults.0: fraction, choice and seed go with 'lie'"),
        ([{"at_s": 0, "lie": "edge", "fraction": 0.2}, {"at_s": 0, "lie": "edge", "fraction": 0.1}],
         "x.yaml: faults: edge: one 'lie' per tier"),
        ([{"at_s": 1, "stall": "edge"}], "x.yaml: faults.0: 'stall' needs for_s"),
        ([{"at_s": 1, "kill": "edge", "for_s": 2}], "x.yaml: faults.0: 'kill' takes restart_after_s, not for_s"),
        ([{"at_s": 1, "kill": "edge", "signal": "HUP"}], "x.yaml: faults.0.signal: 'HUP' is not one of KILL, TERM"),
        ([{"at_s": -1, "kill": "edge"}], "x.yaml: faults.0.at_s: Input should be greater than or equal to 0"),
        ([{"at_s": 1, "kill": "edge", "restart": 2}], "x.yaml: faults.0.restart: unknown field; known: at_s, kill"),
        ([{"at_s": 1, "kill": "edge", "restart_after_s": 3}, {"at_s": 2, "stall": "edge", "for_s": 1}],
         "x.yaml: faults: edge: stall edge at 2 s for 1 s starts before kill edge (SIGKILL) at 1 s"),
        ([{"at_s": 1, "kill": "cloud"}, {"at_s": 9, "kill": "cloud", "restart_after_s": 1}],
         "x.yaml: faults: cloud: kill cloud (SIGKILL) at 9 s"),
    ],
)
def test_bad_faults_name_the_field(faults: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        _scenario(faults)
    assert message in str(e.value)


# ------------------------------------------------------------------------------------------- injector
class _FakeAgent:
    """Records what was done to it, in order; ``restart`` can be made to fail."""

    def __init__(self, log: list[str], name: str, fail_restart: bool = False):
        self.log, self.name, self.fail_restart = log, name, fail_restart
        self.alive = True
        self.lock = threading.Lock()

    def _note(self, what: str) -> None:
        with self.lock:
            self.log.append(f"{self.name} {what}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self._note(f"kill {signal.Signals(sig).name}")
        self.alive = False

    def pause(self) -> None:
        self._note("pause")

    def resume(self) -> None:
        self._note("resume")

    def restart(self, timeout_s: float) -> str:
        if self.fail_restart:
            raise ScenarioError(f"{self.name}: exited before listening (code 1)")
        self._note("restart")
        self.alive = True
        return "127.0.0.1:1"

    def running(self) -> bool:
        return self.alive


def test_injector_runs_each_tiers_faults_in_order_and_brings_everything_back() -> None:
    sc = _scenario([{"at_s": 0.0, "kill": "edge", "restart_after_s": 0.05}, {"at_s": 0.0, "stall": "cloud", "for_s": 0.05},
                    {"at_s": 0.1, "kill": "cloud", "signal": "TERM"}, {"at_s": 3600, "stall": "edge", "for_s": 1}])  # fmt: skip
    log: list[str] = []
    agents = {"edge": _FakeAgent(log, "edge"), "cloud": _FakeAgent(log, "cloud")}
    inj = FaultInjector(sc.faults, agents, start=time.monotonic())  # type: ignore[arg-type]
    inj.start()
    end = time.monotonic() + 30
    while time.monotonic() < end and "cloud kill SIGTERM" not in log:  # the first three begin soon after the start
        time.sleep(0.01)
    records = inj.finish(timeout_s=30)
    edge, cloud = [x for x in log if x.startswith("edge")], [x for x in log if x.startswith("cloud")]
    assert edge == ["edge kill SIGKILL", "edge restart"]
    assert cloud == ["cloud pause", "cloud resume", "cloud kill SIGTERM", "cloud restart"]  # restarted when the run ended
    by_fault = {r["fault"]: r for r in records}
    assert by_fault["stall edge at 3600 s for 1 s"]["error"] == "not done: the run ended first"
    assert by_fault["stall edge at 3600 s for 1 s"]["down_s"] is None
    done = [r for r in records if r["down_s"] is not None]
    assert len(done) == 3 and all(r["error"] is None and r["up_s"] >= r["down_s"] for r in done)
    assert all(r["startup_s"] >= 0 and r["restart_s"] <= r["up_s"] for r in done if r["kind"] == "kill")


def test_injector_reports_an_agent_that_did_not_come_back() -> None:
    sc = _scenario([{"at_s": 0.0, "kill": "edge"}])
    agents = {"edge": _FakeAgent([], "edge", fail_restart=True)}
    inj = FaultInjector(sc.faults, agents, start=time.monotonic())  # type: ignore[arg-type]
    inj.start()
    end = time.monotonic() + 30
    while time.monotonic() < end and agents["edge"].alive:
        time.sleep(0.01)
    with pytest.raises(ScenarioError, match="did not come back: kill edge .*exited before listening"):
        inj.finish(timeout_s=30)


def test_abort_does_nothing_more() -> None:
    sc = _scenario([{"at_s": 3600, "kill": "edge", "restart_after_s": 1}])
    log: list[str] = []
    inj = FaultInjector(sc.faults, {"edge": _FakeAgent(log, "edge")}, start=time.monotonic())  # type: ignore[arg-type]
    inj.start()
    inj.abort()
    assert log == [] and not any(t.is_alive() for t in inj._threads)


# ------------------------------------------------------------------------------------------- metrics
def _rec(send_s: float, plan: str, latency_ms: float | None, fallback: str = "") -> dict[str, Any]:
    if latency_ms is None:
        return {"send_s": send_s, "plan": plan, "status": "lost", "fallback": ""}
    return {"send_s": send_s, "plan": plan, "status": "answered", "latency_ms": latency_ms, "fallback": fallback}


SPLIT = "device[0:20]|int8 > edge[20:]"
CLOUD_INPUT = "input|jpeg > cloud[0:]  exits@20:0.9"
LOCAL = "device[0:]"


def test_recovery_metrics_from_records() -> None:
    fault = {"fault": "kill edge", "kind": "kill", "target": "edge", "down_s": 3.0, "up_s": 6.0, "error": None}
    records = [
        _rec(2.0, SPLIT, 50),
        _rec(2.9, SPLIT, 300, "device: upstream edge ... unavailable"),  # in flight at the kill, fell back in time
        _rec(3.5, LOCAL, 500),  # slower than the SLO: a miss
        _rec(5.0, LOCAL, None),  # lost: a miss
        _rec(6.2, LOCAL, 100),  # after the return, still local
        _rec(6.6, SPLIT, 50, "device: upstream edge ..."),  # split plan but fell back: not split
        _rec(7.0, SPLIT, 200),  # the first split answer after the return: done at 7.2
        _rec(9.0, SPLIT, 50),  # outside the settle window
    ]
    m = recovery_metrics(records, [fault], slo_ms=400, timeout_s=2)
    assert m["faults"][0]["resume_s"] == pytest.approx(1.2)
    assert m["resume_s"] == pytest.approx(1.2) and m["split_resumed"] is True
    assert m["deadline_misses_per_outage"] == [2]
    # the raw input sent to the cloud (through the edge) counts as split for an edge fault, not local ones
    m = recovery_metrics([_rec(6.5, CLOUD_INPUT, 40)], [fault], slo_ms=None, timeout_s=2)
    assert m["split_resumed"] is True and m["faults"][0]["resume_s"] == pytest.approx(0.54)
    m = recovery_metrics([_rec(6.5, LOCAL, 40)], [fault], slo_ms=None, timeout_s=2)
    assert m["split_resumed"] is False and m["resume_s"] is None and m["deadline_misses_per_outage"] == [0]


def test_a_cloud_fault_needs_the_cloud_back_and_no_faults_means_none() -> None:
    fault = {"fault": "kill cloud", "kind": "kill", "target": "cloud", "down_s": 1.0, "up_s": 2.0, "error": None}
    assert recovery_metrics([_rec(3.0, SPLIT, 50)], [fault], slo_ms=None, timeout_s=2)["split_resumed"] is False
    assert recovery_metrics([_rec(3.0, CLOUD_INPUT, 50)], [fault], slo_ms=None, timeout_s=2)["split_resumed"] is True
    none = recovery_metrics([_rec(3.0, SPLIT, 50)], [], slo_ms=None, timeout_s=2)
    assert none == {"faults": [], "split_resumed": None, "resume_s": None, "deadline_misses_per_outage": []}
    skipped = {**fault, "down_s": None, "up_s": None, "error": "not done: the run ended first"}
    m = recovery_metrics([_rec(3.0, SPLIT, 50)], [skipped], slo_ms=None, timeout_s=2)
    assert m["split_resumed"] is None and m["deadline_misses_per_outage"] == []


def test_link_outages_as_fault_records() -> None:
    from pathlib import Path

    from edgeflow.scenario.links import link_plan
    from edgeflow.scenario.schema import LinkConfig

    config = LinkConfig(rate_mbit=10, outages=[{"start_s": 3, "duration_s": 5}])  # type: ignore[list-item]
    recs = link_outage_records({"device_edge": link_plan("device_edge", config, Path("."), seed=0)})
    assert recs == [{"fault": "link device_edge down (refuse) at 3 s for 5 s", "kind": "outage",
                     "target": "device_edge", "at_s": 3.0, "down_s": 3.0, "up_s": 8.0, "error": None}]  # fmt: skip
