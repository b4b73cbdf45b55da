"""Chaos benchmarks: how edgeflow comes through agents killed, stalled and links down, and a bounded soak.

    python benchmarks/bench_chaos.py                      # recovery cases + a 3-minute soak (~5 min on 2 cores)
    python benchmarks/bench_chaos.py --soak-s 30          # a short soak, to check it works
    python benchmarks/bench_chaos.py --skip-soak

Everything goes through ``edgeflow.scenario`` exactly as ``edgeflow run`` does (real agent processes, userspace
link emulators, the device's live planner), edgeflow's run only:

- **Recovery**: the shipped ``chaos-kill-edge``, ``chaos-kill-cloud`` and ``chaos-link-outage`` scenarios. Per
  fault: ``resume_s``, from the peer's return (the restarted agent listens, the outage ends) to the answer of the
  first request sent after it that went by a split plan through that peer (issue target: <= 2 s), and the
  deadline misses it caused (requests in flight during it or sent up to 2 s after its return that were lost or
  slower than the SLO; target: <= 1 per outage). Also answered / lost / duplicated and the fallbacks.
- **Soak**: the ``chaos-kill-cloud`` deployment for ``--soak-s`` seconds at 4 requests/s with a fault cycle
  every 30 s (cloud killed and restarted, edge stalled for 2 s, the device-edge link down for 3 s). The edge is
  never killed, so its memory at the start and end of the run is one process's; the cloud's is the restarted
  process's. The runner (this process: device agent, live planner, link emulators, fault threads) too.

Results go to ``benchmarks/results/chaos.json``. Times are wall-clock on whatever machine runs this: on a shared
2-core machine the agents' restarts (model load, profiling) compete with the device for the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeflow.cli.run_cmd import read_scenario  # noqa: E402
from edgeflow.scenario.report import write_report  # noqa: E402
from edgeflow.scenario.runner import RunnerEvents, ScenarioRunner  # noqa: E402
from edgeflow.scenario.procs import rss_bytes  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "chaos.json"
CASES = ["chaos-kill-edge", "chaos-kill-cloud", "chaos-link-outage"]
RESUME_TARGET_S = 2.0
MISSES_TARGET = 1
SOAK_PERIOD_S = 30.0
SOAK_RATE_HZ = 4.0


def _run(path: Path, out: Path, *, overrides: dict[str, Any] | None = None,
         sample_every_s: float | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One scenario, edgeflow's run only; returns the summary and (when sampling) memory samples over the run."""
    sc, nodes = read_scenario(path, **{"baselines": [], **(overrides or {})})
    samples: list[dict[str, Any]] = []
    running = threading.Event()
    done = threading.Event()
    runner: ScenarioRunner | None = None

    def sample() -> None:
        assert runner is not None and sample_every_s is not None
        running.wait()
        while not done.is_set():  # bounded by the run: on_run_end sets done
            row: dict[str, Any] = {"t_s": round(time.monotonic() - t_run, 2), "runner": rss_bytes(os.getpid())}
            for tier, pid in runner.agent_pids().items():
                row[tier] = rss_bytes(pid)
                row[f"{tier}_pid"] = pid
            samples.append(row)
            done.wait(sample_every_s)

    def on_start(name: str, total: int) -> None:
        nonlocal t_run
        t_run = time.monotonic()
        running.set()

    t_run = time.monotonic()
    events = RunnerEvents(on_phase=lambda text: print(f"  {text}", flush=True), on_run_start=on_start,
                          on_run_end=lambda result: done.set())  # fmt: skip
    runner = ScenarioRunner(sc, nodes, scenario_dir=path.resolve().parent, out_dir=out, events=events)
    sampler = threading.Thread(target=sample, daemon=True) if sample_every_s else None
    if sampler is not None:
        sampler.start()
    try:
        result = runner.run()
    finally:
        done.set()
        running.set()
        if sampler is not None:
            sampler.join(5)
    summary = write_report(result, out, plots=False)
    return summary, samples


def _case(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    faults = summary["faults"]
    return {
        "scenario": name,
        "requests": summary["requests"],
        "answered": summary["answered"],
        "lost": summary["lost"],
        "duplicated": summary["duplicated"],
        "fallbacks": summary["fallbacks"],
        "split_resumed": summary["split_resumed"],
        "resume_s": [f["resume_s"] for f in faults],
        "deadline_misses_per_outage": summary["deadline_misses_per_outage"],
        "latency_ms": summary["latency_ms"],
        "plan_switches": summary["plan_switches"],
        "faults": faults,
        "switches": summary["adaptation"]["switches"],
    }


def _soak_overrides(soak_s: float) -> dict[str, Any]:
    faults: list[dict[str, Any]] = []
    outages: list[dict[str, Any]] = []
    cycles = max(1, int(soak_s // SOAK_PERIOD_S))
    for k in range(cycles):
        t = k * SOAK_PERIOD_S
        faults.append({"at_s": t + 5, "kill": "cloud", "signal": "KILL", "restart_after_s": 3})
        faults.append({"at_s": t + 16, "stall": "edge", "for_s": 2})
        outages.append({"start_s": t + 23, "duration_s": 3, "mode": "refuse"})
    return {
        "workload.requests": int(soak_s * SOAK_RATE_HZ),
        "workload.rate_hz": SOAK_RATE_HZ,
        "workload.timeout_s": 2.0,
        "faults": faults,
        "links.device_edge.outages": outages,
    }


def _soak(soak_s: float, out: Path) -> dict[str, Any]:
    t = time.monotonic()
    summary, samples = _run(REPO / "scenarios" / "chaos-kill-cloud.yaml", out, overrides=_soak_overrides(soak_s),
                            sample_every_s=1.0)  # fmt: skip
    first, last = (samples[0], samples[-1]) if samples else ({}, {})

    def mb(row: dict[str, Any], key: str) -> float | None:
        return None if row.get(key) is None else round(row[key] / 2**20, 1)

    rss = {who: {"start_mb": mb(first, who), "end_mb": mb(last, who)} for who in ("runner", "edge", "cloud")}
    for who in ("edge", "cloud"):
        rss[who]["same_process"] = first.get(f"{who}_pid") == last.get(f"{who}_pid")
    case = _case("soak", summary)
    return {
        "soak_s": soak_s,
        "faults": len(summary["faults"]),
        "fault_errors": [f for f in summary["faults"] if f.get("error")],
        **{k: case[k] for k in ("requests", "answered", "lost", "duplicated", "fallbacks", "split_resumed",
                                "resume_s", "deadline_misses_per_outage", "latency_ms", "plan_switches")},
        "rss": rss,
        "rss_samples": samples[:: max(1, len(samples) // 60)],
        "wall_s": round(time.monotonic() - t, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--soak-s", type=float, default=180.0, help="length of the soak run (default 180)")
    ap.add_argument("--skip-soak", action="store_true")
    ap.add_argument("--only", choices=CASES, action="append", help="run only these recovery cases")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    t0 = time.monotonic()
    cases = []
    with tempfile.TemporaryDirectory(prefix="edgeflow-chaos-") as tmp:
        for name in args.only or CASES:
            print(f"{name}", flush=True)
            summary, _ = _run(REPO / "scenarios" / f"{name}.yaml", Path(tmp) / name)
            cases.append(_case(name, summary))
            c = cases[-1]
            print(f"  answered {c['answered']}/{c['requests']}, fallbacks {c['fallbacks']}, resume_s {c['resume_s']}, "
                  f"misses {c['deadline_misses_per_outage']}, split again {c['split_resumed']}", flush=True)
        soak = None
        if not args.skip_soak:
            print(f"soak {args.soak_s:g} s", flush=True)
            soak = _soak(args.soak_s, Path(tmp) / "soak")
            print(f"  answered {soak['answered']}/{soak['requests']}, rss {soak['rss']}", flush=True)
    resume = {c["scenario"]: max((r for r in c["resume_s"] if r is not None), default=None) for c in cases}
    misses = [m for c in cases for m in c["deadline_misses_per_outage"]]
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "host": {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()},
        "note": "wall-clock times on the machine that ran this; on a shared 2-core machine they are noisy",
        "summary": {
            "resume_s": resume,
            "resume_target_s": RESUME_TARGET_S,
            "resume_met": {k: (v is not None and v <= RESUME_TARGET_S) for k, v in resume.items()},
            "deadline_misses_per_outage_max": max(misses) if misses else None,
            "deadline_misses_target": MISSES_TARGET,
            "all_answered_once": all(c["lost"] == 0 and c["duplicated"] == 0 for c in cases),
            "split_resumed": {c["scenario"]: c["split_resumed"] for c in cases},
        },
        "cases": cases,
        "soak": soak,
        "wall_s": round(time.monotonic() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))
    print(f"wrote {args.out} ({out['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
