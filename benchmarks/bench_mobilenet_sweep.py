"""MobileNetV2 (224x224, seeded random weights) on the phone node over a 0.1-1000 Mbit/s device-edge sweep.

At each rate: the plan edgeflow's live planner used most, classified as device-only / mid-network split /
edge-cloud-only, and edgeflow's p50 against the best baseline's (goal <= 1.05x everywhere). The phone is
``nodes/phone.yaml`` (``compute.device_speed``: a stated ms per model, turned into an emulated slowdown from this
host's measured speed at start-up). Weights are untrained: latency and bytes are real; fidelity is agreement.

    python benchmarks/bench_mobilenet_sweep.py                       # 0.1,1,10,100,1000 Mbit/s, 8 requests each
    python benchmarks/bench_mobilenet_sweep.py --rates 1,100 --requests 4

Writes benchmarks/results/mobilenet_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgeflow.cli.run_cmd import read_scenario  # noqa: E402
from edgeflow.scenario.report import write_report  # noqa: E402
from edgeflow.scenario.runner import run_scenario  # noqa: E402
from edgeflow.scenario.schema import Scenario  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "mobilenet_sweep.json"
SCENARIO = REPO / "scenarios" / "mobilenet-phone-lte.yaml"
BASELINES = ["device-only", "edge-only", "cloud-only", "neurosurgeon"]


def plan_kind(plan: str) -> str:
    """device-only (the whole model on the device), edge-cloud-only (the raw input leaves the device), or a
    mid-network split (the device runs some layers and sends an activation)."""
    if plan.startswith("input") or plan.startswith("edge") or plan.startswith("cloud"):
        return "edge-cloud-only"
    if plan.strip() == "device[0:]" or ">" not in plan:
        return "device-only"
    return "mid-network split"


def point(rate: float, requests: int, nodes: dict[str, Any], work: Path) -> dict[str, Any]:
    data = json.loads(json.dumps(Scenario.from_mapping(__import__("yaml").safe_load(SCENARIO.read_text()),
                                                       source=str(SCENARIO)).model_dump(mode="json")))
    data["name"] = f"mobilenet-sweep-{rate:g}mbit"
    data["links"] = {"device_edge": {"rate_mbit": rate, "delay_ms": 25}, "edge_cloud": {"rate_mbit": 1000, "delay_ms": 10}}
    data["workload"].update({"arrival": "closed", "concurrency": 1, "requests": requests, "timeout_s": 60})
    data["workload"].pop("rate_hz", None)
    data["baselines"] = BASELINES
    data["slo_ms"] = None
    sc = Scenario.from_mapping(data, source=data["name"])
    t0 = time.monotonic()
    result = run_scenario(sc, nodes, scenario_dir=SCENARIO.parent, out_dir=work / sc.name)
    s = write_report(result, work / sc.name, plots=False)
    base = {n: m["latency_ms"]["p50"] for n, m in s["baselines"].items() if m["answered"] == m["requests"]}
    best = min(base, key=lambda n: base[n]) if base else None
    own = s["latency_ms"]["p50"]
    main = next(iter(s["plans"]), s["plan"])
    return {
        "rate_mbit": rate, "edgeflow_plan": main, "edgeflow_plan_kind": plan_kind(main), "edgeflow_plans": s["plans"],
        "edgeflow_p50_ms": own, "edgeflow_answered": s["answered"], "edgeflow_lost": s["lost"],
        "agreement": s.get("agreement"), "best_baseline": best,
        "best_baseline_plan": s["baselines"][best]["plan"] if best else None,
        "best_baseline_p50_ms": base.get(best) if best else None,
        "ratio_edgeflow_to_best": round(own / base[best], 4) if best and own else None,
        "baselines_p50_ms": base, "wall_s": round(time.monotonic() - t0, 1),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="0.1,1,10,100,1000", help="comma-separated Mbit/s")
    ap.add_argument("--requests", type=int, default=8, help="requests per run (closed loop, one at a time)")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    nodes = read_scenario(SCENARIO)[1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ef-mbv2-") as tmp:
        for rate in rates:
            row = point(rate, args.requests, nodes, Path(tmp))
            rows.append(row)
            print(f"{rate:>7g} Mbit/s: edgeflow {row['edgeflow_p50_ms']} ms ({row['edgeflow_plan_kind']}: "
                  f"{row['edgeflow_plan']}), best {row['best_baseline']} {row['best_baseline_p50_ms']} ms, "
                  f"ratio {row['ratio_edgeflow_to_best']}", flush=True)
    ratios = [r["ratio_edgeflow_to_best"] for r in rows if r["ratio_edgeflow_to_best"] is not None]
    out = {
        "benchmark": "mobilenet_sweep", "model": "zoo:mobilenet_v2?image_size=224 (seeded random weights)",
        "fidelity": "agreement with the unsplit model (no labels; untrained weights)",
        "device": "nodes/phone.yaml (compute.device_speed.ms_per_model, emulated)", "requests_per_run": args.requests,
        "host": platform.processor() or platform.machine(), "target": {"ratio_edgeflow_to_best": "<= 1.05"},
        "points": rows, "max_ratio": max(ratios) if ratios else None,
        "plan_kinds": sorted({r["edgeflow_plan_kind"] for r in rows}),
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
