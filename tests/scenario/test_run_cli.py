"""``edgeflow run`` end to end: real agent processes, emulated links, baselines, the report, clean exits."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, check_invariants, env, load_report, processes_mentioning, run_cli

ALL = ["device-only", "edge-only", "cloud-only", "neurosurgeon", "best-fixed"]
PLOTS = {"latency_over_time.png", "latency_cdf.png", "bytes_per_request.png"}


@pytest.mark.parametrize("mode", ["in-process", "device-process"])
def test_quickstart_end_to_end(tmp_path: Path, mode: str) -> None:
    """The device in the runner's process, or as its own agent process sent the inputs over gRPC (the deployment
    path): the same report, the same invariants."""
    out = tmp_path / "quick"
    t0 = time.monotonic()
    extra = ["--device-process"] if mode == "device-process" else []
    proc = run_cli("quickstart", "--out", str(out), "--requests", "12", "--no-progress", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    assert summary["planner"]["device"].startswith("agent process" if extra else "in process")
    check_invariants(summary, records, 12, ALL)
    assert summary["lost"] == 0
    assert PLOTS <= {p.name for p in out.glob("*.png")} and set(summary["plots"]) == PLOTS
    for p in PLOTS:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert "| edgeflow |" in report and "best-fixed" in report and summary["adaptation"]["mode"] in report
    # plan: auto -> the device's live planner chose every request's plan; the log and the records agree
    assert summary["adaptation"]["mode"] == "adaptive" and summary["plan"] == "auto"
    own = [r for r in records if r["run"] == "edgeflow"]
    used = {r["plan"] for r in own}
    logged = summary["adaptation"]["switches"]
    assert "auto" not in used and all(p.count("[") >= 1 for p in used)
    if not logged:
        assert len(used) == 1
    else:
        assert used <= {sw["old"] for sw in logged} | {sw["new"] for sw in logged}
    assert all(r["predicted_ms"] is not None for r in own if r["status"] == "answered")
    assert summary["baselines"]["best-fixed"]["chosen_run"] in summary["runs"]
    assert summary["full_model_accuracy"] is not None and summary["accuracy"] is not None
    # the summary table went to stdout; agents and their node files/logs are in the report folder
    assert "edgeflow vs baselines" in proc.stdout
    assert list((out / "nodes").rglob("*.yaml")) and list((out / "logs").glob("*.log"))
    assert not processes_mentioning(str(out)), "agent processes left behind"
    # each request's spans: its record names its trace, spans.jsonl holds the device's span and every tier's it crossed
    spans = [json.loads(line) for line in (out / "spans.jsonl").read_text().splitlines()]
    services: dict[str, set[str]] = {}
    for sp in spans:
        services.setdefault(sp["trace_id"], set()).add(sp["service"])
    answered = [r for r in own if r["status"] == "answered"]
    assert all(r["trace_id"] for r in answered)
    for r in answered:
        tiers = {t["tier"] for t in r["stages"] if t["tier"] != "device"}
        assert {f"edgeflow-{t}" for t in tiers} | {"edgeflow-device"} <= services[r["trace_id"]], r
    if extra:  # the device process was started for the run, logged, and stopped with the other agents
        assert (out / "logs" / "device0.log").read_text().count("live planner ready after") == 1
    print(f"quickstart ({mode}, 12 requests per run) took {time.monotonic() - t0:.1f} s")


def test_trace_scenario_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "commute"
    proc = run_cli("scenarios/commute-3g.yaml", "--out", str(out), "--requests", "10",
                   "--baselines", "cloud-only,best-fixed", "--json", "--no-plots")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    _, records = load_report(out)
    check_invariants(summary, records, 10, ["cloud-only", "best-fixed"])
    # the bandwidth each request saw comes from the 3G trace, not a constant
    rates = {r["bandwidth_mbit"]["device_edge"] for r in records if r["run"] == "edgeflow"}
    assert len(rates) > 1 and all(r is not None for r in rates)
    assert summary["links"]["device_edge"].startswith("trace")
    assert not processes_mentioning(str(out))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "kill-9"])
def test_interrupt_stops_every_agent(tmp_path: Path, sig: signal.Signals) -> None:
    """Ctrl-C and SIGTERM: the runner stops everything and exits 130. SIGKILL: the kernel stops the agents
    (PR_SET_PDEATHSIG), since the runner cannot."""
    out = tmp_path / "interrupted"
    cmd = [sys.executable, "-m", "edgeflow.cli.run_cmd", "run", "quickstart", "--out", str(out), "--requests", "400",
           "--baselines", "cloud-only", "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 90
        while time.monotonic() < end and not processes_mentioning(str(out / "nodes")):
            time.sleep(0.2)
        assert processes_mentioning(str(out / "nodes")), "no agent started"
        time.sleep(1.0)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig == signal.SIGKILL:
        end = time.monotonic() + 60  # the agents drain for their shutdown grace, then exit (a bound, not a budget)
        while time.monotonic() < end and processes_mentioning(str(out)):
            time.sleep(0.2)
    else:
        assert proc.returncode == 130, err[-2000:]
        assert "interrupted" in err
    assert not processes_mentioning(str(out)), f"agent processes left behind after {sig.name}"


def test_bad_scenario_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlinks:\n  device_edge:\n    trace: {file: x.log, format: foo}\n")
    proc = run_cli(str(bad), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "links.device_edge.trace.format: 'foo' is not one of auto, cooked, mahimahi" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_check_validates_without_running() -> None:
    # every shipped scenario is validated in process by tests/unit/scenario/test_scenario_schema.py
    proc = run_cli("commute-3g", "--check", timeout_s=60)
    assert proc.returncode == 0, proc.stderr
    assert "is valid" in proc.stdout and "mean 1.43 Mbit/s" in proc.stdout


def test_an_agent_that_cannot_start_fails_the_run_cleanly(tmp_path: Path) -> None:
    scenario = tmp_path / "broken.yaml"
    scenario.write_text(
        "name: broken\n"
        f"nodes:\n  device: {{file: {REPO}/nodes/device.yaml}}\n  edge: {{file: {REPO}/nodes/edge.yaml}}\n"
        f"  cloud: {{file: {REPO}/nodes/cloud.yaml, overrides: {{compute.device: cuda}}}}\n"
        "workload: {requests: 4}\nbaselines: [cloud-only]\n"
    )
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make the cloud agent fail")
    out = tmp_path / "o"
    proc = run_cli(str(scenario), "--out", str(out), "--no-progress")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "cloud" in proc.stderr and "cuda requested" in proc.stderr  # the agent's own error, quoted from its log
    assert not processes_mentioning(str(out))


def test_repeated_inputs_are_answered_from_the_device_memory_over_grpc(tmp_path: Path) -> None:
    """The device as its own agent process with its result memory on: repeats of the 12 distinct inputs come back
    as hits over gRPC, with nothing sent upstream, and each run's summary counts them."""
    out = tmp_path / "repeat"
    proc = run_cli("repeated-inputs", "--out", str(out), "--requests", "24", "--device-process", "--no-plots",
                   "--baselines", "cloud-only")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    check_invariants(summary, records, 24, ["cloud-only"])
    for name, m in [("edgeflow", summary), *summary["baselines"].items()]:
        recs = [r for r in records if r["run"] == name and r["status"] == "answered"]
        assert m["lost"] == 0 and len(recs) == 24
        hits = [r for r in recs if r["memory"] == "hit"]
        assert {r["memory"] for r in recs} <= {"hit", "miss"}
        assert m["memory"]["hits"] == len(hits) and m["memory"]["hits"] + m["memory"]["misses"] == 24
        assert len(hits) >= 24 - 12 - 6  # 12 distinct inputs (a plan switch may make a repeat miss once more)
        # a hit is an input the device process saw before: in this run, an earlier run by the same plan, or a warm-up
        assert len({r["sample"] for r in recs}) <= 12
        assert all(r["bytes"]["device_edge"] == {"up": 0, "down": 0} and r["agree"] for r in hits)
    cloud = summary["baselines"]["cloud-only"]["memory"]
    assert cloud["bytes_saved"] > 0 and cloud["bytes_without_memory"] == cloud["bytes_moved"] + cloud["bytes_saved"]
