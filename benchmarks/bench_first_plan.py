"""Time to first live plan: a device agent process with ``plan: auto``, from serving to its first live plan.

    python benchmarks/bench_first_plan.py [--repeats 3] [--out benchmarks/results/first_plan.json]

Setup, in one run on this host: cloud and edge are ``edgeflow agent`` processes (``plan: auto``, the node files'
slowdowns) on loopback; the device is an ``edgeflow agent`` process too (the deployment path), with ``plan: auto``.
It serves from the moment it prints its address, under its safe plan, while its live planner measures the chain in
the background (describe the chain, profile the device's own tier, measure the per-message and per-stage overheads,
probe both links, choose the first plan). Measured per start, on the device's clock: ``first_plan_s`` (Describe's
``live.first_plan_s``: from the planner's start, right after the server started, to its first live plan), and the
wall seconds from the process's "listening" line to the first Describe that says ``ready`` (polled every 20 ms);
the planner's own log line gives each step's seconds.

Models: the demo artifact (64x64) and MobileNetV2 at 224 (``zoo:mobilenet_v2``, seeded weights: start-up time does
not depend on the weights). Targets (issue 13): <= 2 s for the demo and <= 5 s for MobileNetV2 on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeflow.scenario.procs import AgentProcess, child_env  # noqa: E402
from edgeflow.transport import PeerClient  # noqa: E402

START_TIMEOUT_S = 180.0
MODELS = {"demo": "builtin:demo", "mobilenet_v2_224": "zoo:mobilenet_v2?image_size=224"}
TARGETS_S = {"demo": 2.0, "mobilenet_v2_224": 5.0}
_STEPS = re.compile(r"start-up (?P<steps>.*)$", re.M)
_STEP = re.compile(r"(?P<name>[a-z][a-z ]*?) (?P<s>[0-9.]+) s")


def _agent(node: str, artifact: str, upstream: str | None = None, log: Path | None = None) -> AgentProcess:
    p = AgentProcess(node, REPO / "nodes" / f"{node}.yaml", port=0, upstream=upstream, plan="auto", artifact=artifact,
                     profile_repeats=3, env=child_env(OMP_NUM_THREADS="1"), cwd=REPO, log_path=log)  # fmt: skip
    p.wait_ready(START_TIMEOUT_S)
    return p


def _one_start(artifact: str, edge: str, log: Path) -> dict[str, Any]:
    device = _agent("device", artifact, upstream=edge, log=log)
    t_listening = time.monotonic()
    try:
        assert device.address is not None
        with PeerClient(device.address) as peer:
            while True:
                d = peer.describe(timeout_s=10.0)
                if d.live is not None and (d.live.ready or d.live.error):
                    wall = time.monotonic() - t_listening
                    break
                if time.monotonic() - t_listening > START_TIMEOUT_S:
                    raise RuntimeError(f"no live plan within {START_TIMEOUT_S} s:\n{device.log}")
                time.sleep(0.02)
        if d.live.error:
            raise RuntimeError(f"live planner did not start: {d.live.error}")
        steps: dict[str, float] = {}
        m = _STEPS.search(device.log)
        if m:
            steps = {k["name"]: float(k["s"]) for k in _STEP.finditer(m["steps"])}
        return {"first_plan_s": round(d.live.first_plan_s, 3), "listening_to_ready_s": round(wall, 3),
                "plan": d.live.plan, "steps_s": steps}  # fmt: skip
    finally:
        device.stop(grace_s=10.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--repeats", type=int, default=3, help="device starts per model (the median is reported)")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "first_plan.json")
    args = ap.parse_args()
    logs = REPO / "benchmarks" / "results" / "logs-first-plan"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name in args.models.split(","):
        artifact = MODELS[name]
        cloud = _agent("cloud", artifact, log=logs / f"{name}-cloud.log")
        edge = _agent("edge", artifact, upstream=cloud.address, log=logs / f"{name}-edge.log")
        try:
            starts = [_one_start(artifact, str(edge.address), logs / f"{name}-device-{i}.log") for i in range(args.repeats)]
        finally:
            edge.stop(grace_s=10.0)
            cloud.stop(grace_s=10.0)
        first = [s["first_plan_s"] for s in starts]
        results[name] = {
            "artifact": artifact,
            "first_plan_s_median": statistics.median(first),
            "first_plan_s": first,
            "listening_to_ready_s_median": statistics.median(s["listening_to_ready_s"] for s in starts),
            "target_s": TARGETS_S[name],
            "met": statistics.median(first) <= TARGETS_S[name],
            "starts": starts,
        }
        print(f"{name}: first live plan after {results[name]['first_plan_s_median']:.2f} s (median of {first}); "
              f"target {TARGETS_S[name]} s", flush=True)  # fmt: skip
    out = {
        "benchmark": "bench_first_plan",
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "note": "device, edge and cloud are agent processes on loopback; each device start measured from its server "
                "start (first_plan_s) and from its listening line (listening_to_ready_s)",
        "results": results,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
