"""Chaos scenarios through ``edgeflow run``: agents killed and restarted, a link down for 5 s.

Each run must answer every request exactly once (a tier whose upstream fails finishes the model itself, the
reply says so in ``breakdown.fallback``), and after the last fault the device's live planner must go back to
split plans. CI-sized: edgeflow's run only (``--baselines none``), about 25 s each on 2 cores.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, check_invariants, env, load_report, processes_mentioning, run_cli

CASES = {
    # scenario: (fallbacks expected, fault kinds in the log)
    "chaos-kill-edge": (True, {"kill"}),
    "chaos-kill-cloud": (True, {"kill"}),
    "chaos-link-outage": (False, {"outage"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [*((n, ()) for n in CASES), ("chaos-kill-edge", ("--device-process",))],
                         ids=[*CASES, "chaos-kill-edge-device-process"])
def test_chaos_scenario_recovers(tmp_path: Path, name: str, extra: tuple[str, ...]) -> None:
    """In process, and (the edge kill) with the device as its own agent process sent the inputs over gRPC."""
    expect_fallbacks, kinds = CASES[name]
    out = tmp_path / name
    proc = run_cli(name, "--out", str(out), "--baselines", "none", "--no-progress", *extra, timeout_s=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary, records = load_report(out)
    n = summary["requests"]
    check_invariants(summary, records, n, [])
    faults = summary["faults"]
    context = f"faults {faults}; switches {summary['adaptation']['switches']}; plans {summary['plans']}"
    assert summary["answered"] == n and summary["lost"] == 0 and summary["duplicated"] == 0, context
    assert {f["kind"] for f in faults} == kinds and all(f["error"] is None for f in faults), context
    assert all(f["down_s"] is not None and f["up_s"] is not None and f["up_s"] > f["down_s"] for f in faults)
    if expect_fallbacks:
        assert summary["fallbacks"] > 0, context
    assert summary["fallbacks"] == sum(1 for r in records if r["fallback"])
    assert summary["split_resumed"] is True, context
    assert summary["resume_s"] is not None and summary["resume_s"] >= 0
    assert len(summary["deadline_misses_per_outage"]) == len(faults)
    # the restarted agent came back on its port: its log holds both starts
    for f in faults:
        if f["kind"] == "kill":
            log = (out / "logs" / f"{f['target']}.log").read_text()
            assert log.count("agent: plan") >= 2, log[-2000:]
    assert "## Faults" in (out / "report.md").read_text()
    assert (out / "latency_over_time.png").read_bytes()[:4] == b"\x89PNG"
    assert not processes_mentioning(str(out)), "agent processes left behind"


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


@pytest.mark.parametrize("fault", ["kill: edge", "stall: cloud, for_s: 60"], ids=["edge-down", "cloud-paused"])
def test_ctrl_c_during_a_fault_leaves_no_agent(tmp_path: Path, fault: str) -> None:
    """Ctrl-C while the edge is killed (and not yet restarted) or the cloud is paused: the runner restarts
    nothing, stops every agent (a paused one too) and exits 130."""
    scenario = tmp_path / "faulty.yaml"
    scenario.write_text(
        "name: faulty\n"
        f"nodes:\n  device: {{file: {REPO}/nodes/device.yaml}}\n  edge: {{file: {REPO}/nodes/edge.yaml}}\n"
        f"  cloud: {{file: {REPO}/nodes/cloud.yaml}}\n"
        "workload: {arrival: fixed, rate_hz: 4, requests: 400, timeout_s: 2}\nbaselines: []\n"
        f"faults: [{{at_s: 0.5, {fault}}}]\n"
    )
    out = tmp_path / "o"
    target = "edge" if "edge" in fault else "cloud"
    cmd = [sys.executable, "-m", "edgeflow.cli.run_cmd", "run", str(scenario), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node = str(out / "nodes" / f"{target}.yaml")
    log = out / "logs" / f"{target}.log"

    def started() -> bool:
        # the agent's log keeps its start line after a kill: a poll of the live processes can miss a short-lived
        # edge on a loaded machine (killed 0.5 s into the workload, between two polls)
        try:
            return "agent: plan" in log.read_text(errors="replace")
        except OSError:
            return False

    try:
        end = time.monotonic() + 120
        while time.monotonic() < end and not started() and proc.poll() is None:  # the agents start
            time.sleep(0.2)
        assert started(), f"no {target} agent started (runner exit {proc.poll()})"

        def faulted() -> bool:
            found = processes_mentioning(node)
            if target == "edge":
                return not found
            return bool(found) and _state(found[0].split(":", 1)[0]) == "T"

        end = time.monotonic() + 120
        while time.monotonic() < end and not faulted() and proc.poll() is None:
            time.sleep(0.1)
        assert faulted(), "the fault did not happen"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-2000:]
    assert not processes_mentioning(str(out)), "agent processes left behind"
