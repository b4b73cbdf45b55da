"""The device's result memory on repeated inputs: the same scenario with the memory off and on, in one run.

    python benchmarks/bench_memory.py [--requests 60] [--distinct 12] [--device-process]
                                      [--out benchmarks/results/memory.json]

Setup: ``scenarios/repeated-inputs.yaml`` (demo model, requests drawn from ``--distinct`` test images, device 16x,
edge 2x, device-edge 2 Mbit/s + 20 ms, edge-cloud 50 Mbit/s + 15 ms), run twice by ``edgeflow run`` with real agent
processes and emulated links: once with ``memory.enabled: false`` on the device, once with ``true``. For edgeflow's
live plan and the cloud-only baseline: bytes per request on the links, latency p50/p95, agreement with the unsplit
model, the memory's hits, and the ratios off/on (bytes, p50, p95).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
RUNS = ("edgeflow", "cloud-only")


def _scenario(tmp: Path, enabled: bool, distinct: int) -> Path:
    data = yaml.safe_load((REPO / "scenarios" / "repeated-inputs.yaml").read_text())
    for tier, ref in data["nodes"].items():
        ref["file"] = str(REPO / "nodes" / f"{tier}.yaml")
    data["nodes"]["device"]["overrides"]["memory.enabled"] = enabled
    data["workload"]["distinct"] = distinct
    data["name"] = f"repeated-inputs-memory-{'on' if enabled else 'off'}"
    path = tmp / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(scenario: Path, out: Path, requests: int, device_process: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "edgeflow", "run", str(scenario), "--out", str(out), "--requests", str(requests),
           "--baselines", "cloud-only", "--json", "--no-plots", "--no-progress"]  # fmt: skip
    if device_process:
        cmd.append("--device-process")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def _metrics(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "bytes_per_request": m["bytes_per_request"],
        "p50_ms": m["latency_ms"]["p50"],
        "p95_ms": m["latency_ms"]["p95"],
        "agreement": m["agreement"],
        "lost": m["lost"],
        "memory": m.get("memory"),
        "plans": m.get("plans"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--distinct", type=int, default=12)
    ap.add_argument("--device-process", action="store_true", help="the device as its own agent process")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "memory.json")
    args = ap.parse_args()
    t0 = time.monotonic()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for enabled in (False, True):
            summary = _run(_scenario(tmp, enabled, args.distinct), tmp / f"out-{enabled}", args.requests,
                           args.device_process)  # fmt: skip
            runs = {"edgeflow": summary, **summary["baselines"]}
            results["on" if enabled else "off"] = {name: _metrics(runs[name]) for name in RUNS}
    ratios = {}
    for name in RUNS:
        off, on = results["off"][name], results["on"][name]
        ratios[name] = {
            "bytes_off_over_on": off["bytes_per_request"] / on["bytes_per_request"] if on["bytes_per_request"] else None,
            "p50_off_over_on": off["p50_ms"] / on["p50_ms"],
            "p95_off_over_on": off["p95_ms"] / on["p95_ms"],
            "agreement_delta_pts": 100.0 * (on["agreement"] - off["agreement"]),
        }
    out = {
        "benchmark": "bench_memory",
        "command": "python benchmarks/bench_memory.py " + " ".join(sys.argv[1:]),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "setup": {"scenario": "scenarios/repeated-inputs.yaml", "requests": args.requests, "distinct": args.distinct,
                  "device": "agent process" if args.device_process else "in process"},  # fmt: skip
        "results": results,
        "ratios": ratios,
        "seconds": round(time.monotonic() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for name, r in ratios.items():
        hits = results["on"][name]["memory"]
        print(f"{name}: bytes {r['bytes_off_over_on'] or float('inf'):.2f}x fewer, p50 {r['p50_off_over_on']:.2f}x lower, "
              f"p95 {r['p95_off_over_on']:.2f}x lower, hit rate {hits['hit_rate']:.2f}")
    print(f"wrote {args.out} in {out['seconds']} s")


if __name__ == "__main__":
    main()
