"""Scenario benchmarks: edgeflow against its baselines over a bandwidth sweep and over real traces.

    python benchmarks/bench_scenarios.py --quick            # bounded: ~10 min on 2 cores
    python benchmarks/bench_scenarios.py                    # longer windows, more traces and rates
    python benchmarks/bench_scenarios.py --only sweep --rates 0.1,1,10
    python benchmarks/bench_scenarios.py --quick --only traces --device-slowdown 64 --out benchmarks/results/scenarios_board64.json
    python benchmarks/bench_scenarios.py --only regime --out benchmarks/results/regime_switch.json   # both device modes

Everything goes through ``edgeflow.scenario`` exactly as ``edgeflow run`` does: real agent processes, userspace
link emulators, the same request schedule for every run of a scenario, baselines run one after another.
The nodes are the shipped ones with the quickstart's emulated speeds (device 16x slower than the host, edge 2x).
At 16x, with the traces' 20 ms one-way delay, the device's own compute (with exits) beats any offloading, so the
trace part mostly measures device-only; ``--device-slowdown 64`` (a board-class device) makes offloading pay
while the link is up, and the planner must leave it when the link fails.

- **Sweep**: both links at one constant rate R (one-way delays 5 ms and 15 ms), R from 0.1 to 1000 Mbit/s;
  a closed loop with one request outstanding, so each latency is one request's. Per point: edgeflow's median
  latency / the best baseline's (the lowest median among device-only, edge-only, cloud-only, Neurosurgeon and
  the best fixed split). Issue target: <= 1.05.
- **Traces** from ``../shared/traces`` (read from there, never copied into the product): the device-edge link
  replays a window of each trace (Poisson arrivals); edge-cloud is a fixed 100 Mbit/s, 10 ms. Per trace: p95
  vs the best fixed split (issue target: >= 30 % lower) and vs cloud-only (target: >= 2x lower), and accuracy
  vs the unsplit model (target: within 1 point); and p95 vs the *a-priori* static plans a user would pick from
  the trace's mean bandwidth: the ``a-priori`` baseline (edgeflow's planner once, at the mean rates) and
  ``neurosurgeon`` (one device/cloud cut at the mean rates); goal >= 30 % lower.
- **Regime switch** (``scenarios/regime-switch.yaml``: a link flipping between tens of Mbit/s and < 0.1 Mbit/s
  every 3-6 s, a board-class 64x device, 160 requests at 4/s), in both device modes (in process, and the device
  as its own agent process sent its inputs over gRPC): edgeflow's *mean* latency against the hindsight-best fixed
  plan (the lowest mean among the fixed runs that answered everything; goal >= 25 % lower) and against cloud-only
  (goal >= 2x lower), fallbacks (goal <= 5 % of requests), per-request MAPE (goal <= 15 %, against the prediction
  for the path each request took; against the expectation too), accuracy against the floor, requests lost.

Results go to ``benchmarks/results/scenarios.json``, ratios measured within one run of this script. edgeflow's
run uses the device's live planner (``plan: auto``); each row says how many plan switches it made.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeflow.cli.run_cmd import read_scenario  # noqa: E402
from edgeflow.scenario.report import write_report  # noqa: E402
from edgeflow.scenario.runner import run_scenario  # noqa: E402
from edgeflow.scenario.schema import Scenario  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "scenarios.json"
TRACES = REPO.parent / "shared" / "traces"
BASELINES = ["device-only", "edge-only", "cloud-only", "neurosurgeon", "best-fixed"]

# (name, uplink file, format, downlink file or None, offset_s): the device-edge link replays [offset, offset + window)
TRACE_CASES = [
    ("norway-3g-bus", "norway_hsdpa/bus.ljansbakken-oslo-report.2010-09-28_1407CEST.log", "cooked", None, 0.0),
    ("norway-3g-metro", "norway_hsdpa/metro.kalbakken-jernbanetorget-report.2010-09-14_2303CEST.log", "cooked", None, 0.0),
    ("belgium-4g-train-0003", "belgium_4g_lte/report_train_0003.log", "cooked", None, 160.0),  # the near-outage
    ("belgium-4g-car-0002", "belgium_4g_lte/report_car_0002.log", "cooked", None, 0.0),
    ("fcc-866", "fcc_broadband/trace_866_http---www.amazon.com", "cooked", None, 0.0),
    ("mahimahi-att-lte", "mahimahi_cellular/ATT-LTE-driving-2016.up", "mahimahi", "mahimahi_cellular/ATT-LTE-driving-2016.down", 0.0),
]
QUICK_TRACES = ("norway-3g-bus", "belgium-4g-train-0003", "fcc-866", "mahimahi-att-lte")


def _nodes(device_slowdown: float | None = None) -> dict[str, Any]:
    nodes = read_scenario(REPO / "scenarios" / "quickstart.yaml")[1]
    if device_slowdown is not None:
        dev = nodes["device"]
        nodes["device"] = dev.model_copy(update={"compute": dev.compute.model_copy(update={"slowdown_factor": device_slowdown})})
    return nodes


def _run(data: dict[str, Any], nodes: dict[str, Any], work: Path, device_process: bool = False) -> dict[str, Any]:
    sc = Scenario.from_mapping(data, source=data["name"])
    out = work / (sc.name + ("-process" if device_process else ""))
    t0 = time.monotonic()
    result = run_scenario(sc, nodes, scenario_dir=REPO / "scenarios", out_dir=out, device_process=device_process)
    summary = write_report(result, out, plots=False)
    summary["bench_wall_s"] = time.monotonic() - t0
    return summary


def _main_plan(s: dict[str, Any]) -> str:
    """The plan edgeflow used most (its runs are adaptive: several plans)."""
    return next(iter(s["plans"]), s["plan"])


def _p(m: dict[str, Any], q: str) -> float | None:
    return m["latency_ms"][q]


def sweep(rates: list[float], requests: int, nodes: dict[str, Any], work: Path,
          device_process: bool = False) -> list[dict[str, Any]]:
    rows = []
    for rate in rates:
        data = {
            "name": f"sweep-{rate:g}mbit",
            "links": {"device_edge": {"rate_mbit": rate, "delay_ms": 5}, "edge_cloud": {"rate_mbit": rate, "delay_ms": 15}},
            "workload": {"source": "demo-test", "arrival": "closed", "concurrency": 1, "requests": requests, "seed": 0,
                         "timeout_s": 20},
            "baselines": BASELINES,
        }  # fmt: skip
        s = _run(data, nodes, work, device_process)
        base = {n: _p(m, "p50") for n, m in s["baselines"].items() if m["answered"] == m["requests"]}
        best = min(base, key=lambda n: base[n]) if base else None
        own = _p(s, "p50")
        row = {
            "rate_mbit": rate, "edgeflow_plan": _main_plan(s), "edgeflow_p50_ms": own,
            "best_baseline": best, "best_baseline_plan": s["baselines"][best]["plan"] if best else None,
            "best_baseline_p50_ms": base.get(best) if best else None,
            "ratio_edgeflow_to_best": round(own / base[best], 4) if best and own else None,
            "baselines_p50_ms": base, "edgeflow_lost": s["lost"], "edgeflow_plans": s["plans"],
            "adaptation": s["adaptation"]["mode"], "plan_switches": s["plan_switches"], "wall_s": round(s["bench_wall_s"], 1),
        }  # fmt: skip
        rows.append(row)
        print(f"sweep {rate:>7g} Mbit/s: edgeflow {own} ms ({_main_plan(s)}, {s['plan_switches']} switches), best {best} "
              f"{row['best_baseline_p50_ms']} ms, ratio {row['ratio_edgeflow_to_best']}", flush=True)
    return rows


def _vs(name: str, m: dict[str, Any], own95: float | None) -> dict[str, Any]:
    """Fields comparing edgeflow's p95 with baseline ``name``."""
    key = name.replace("-", "_")
    p95 = _p(m, "p95")
    return {f"{key}_plan": m["plan"], f"{key}_p95_ms": p95, f"{key}_lost": m["lost"],
            f"p95_reduction_vs_{key}": round(1 - own95 / p95, 4) if own95 and p95 else None}


def traces(cases: list[tuple[str, str, str, str | None, float]], window_s: float, rate_hz: float,
           nodes: dict[str, Any], work: Path, root: Path, slo_ms: float | None = None,
           device_process: bool = False) -> list[dict[str, Any]]:
    rows = []
    for name, up, fmt, down, offset in cases:
        link: dict[str, Any] = {"trace": {"file": str(root / up), "format": fmt, "offset_s": offset}, "delay_ms": 20}
        if down:
            link["down_trace"] = {"file": str(root / down), "format": fmt, "offset_s": offset}
        data = {
            "name": f"trace-{name}",
            "links": {"device_edge": link, "edge_cloud": {"rate_mbit": 100, "delay_ms": 10}},
            "workload": {"source": "demo-test", "arrival": "poisson", "rate_hz": rate_hz,
                         "requests": max(10, int(window_s * rate_hz)), "seed": 0, "timeout_s": 10},
            "baselines": [*BASELINES, "a-priori"],
        }  # fmt: skip
        if slo_ms is not None:
            data["slo_ms"] = slo_ms
        s = _run(data, nodes, work, device_process)
        bf, cloud = s["baselines"]["best-fixed"], s["baselines"]["cloud-only"]
        own95 = _p(s, "p95")
        acc_pts = None
        if s["accuracy"] is not None and s["full_model_accuracy"] is not None:
            acc_pts = round((s["accuracy"] - s["full_model_accuracy"]) * 100, 2)
        row = {
            "trace": name, "file": up, "offset_s": offset, "window_s": window_s,
            "mean_mbit": s["planner"]["mean_link_mbit"]["device_edge"], "edgeflow_plan": _main_plan(s),
            "edgeflow_p95_ms": own95, "edgeflow_p50_ms": _p(s, "p50"), "edgeflow_lost": s["lost"],
            "best_fixed_plan": bf["plan"], "best_fixed_p95_ms": _p(bf, "p95"), "best_fixed_lost": bf["lost"],
            "p95_reduction_vs_best_fixed": round(1 - own95 / _p(bf, "p95"), 4) if own95 and _p(bf, "p95") else None,
            "cloud_only_p95_ms": _p(cloud, "p95"), "cloud_only_lost": cloud["lost"],
            "cloud_only_p95_over_edgeflow": round(_p(cloud, "p95") / own95, 4) if own95 and _p(cloud, "p95") else None,
            **_vs("a-priori", s["baselines"]["a-priori"], own95), **_vs("neurosurgeon", s["baselines"]["neurosurgeon"], own95),
            "accuracy": s["accuracy"], "full_model_accuracy": s["full_model_accuracy"], "accuracy_delta_pts": acc_pts,
            "adaptation": s["adaptation"]["mode"], "plan_switches": s["plan_switches"], "edgeflow_plans": s["plans"],
            "requests": s["requests"], "wall_s": round(s["bench_wall_s"], 1),
        }  # fmt: skip
        rows.append(row)
        acc = "n/a" if acc_pts is None else f"{acc_pts:+} pts"
        print(f"trace {name}: edgeflow p95 {own95} ms ({_main_plan(s)}, {s['plan_switches']} switches), best fixed {row['best_fixed_p95_ms']} ms, "
              f"cloud-only {row['cloud_only_p95_ms']} ms, accuracy {acc}", flush=True)
    return rows


def regime(requests: int | None, nodes_file: Path, work: Path, modes: list[str]) -> dict[str, Any]:
    """``scenarios/regime-switch.yaml`` in each device mode (see the module doc)."""
    sc, nodes = read_scenario(nodes_file)
    out: dict[str, Any] = {"scenario": sc.name, "description": sc.description, "modes": {}}
    for mode in modes:
        data = sc.model_dump(mode="json", exclude_none=True)
        if requests is not None:
            data["workload"]["requests"] = requests
        s = _run(data, nodes, work, device_process=mode == "device-process")
        fixed = {n: m for n, m in s["runs"].items() if n != "edgeflow" and m["answered"] == m["requests"]}
        best = min(fixed, key=lambda n: fixed[n]["latency_ms"]["mean"]) if fixed else None
        own = s["latency_ms"]["mean"]
        cloud = s["baselines"].get("cloud-only", {}).get("latency_ms", {}).get("mean")
        pred = s.get("prediction") or {}
        acc = None if s["accuracy"] is None else round((s["accuracy"] - s["full_model_accuracy"]) * 100, 2)
        row = {
            "mean_ms": own, "p50_ms": _p(s, "p50"), "p95_ms": _p(s, "p95"), "answered": s["answered"],
            "requests": s["requests"], "lost": s["lost"], "duplicated": s["duplicated"],
            "hindsight_best_fixed": best, "hindsight_best_fixed_plan": fixed[best]["plan"] if best else None,
            "hindsight_best_fixed_mean_ms": fixed[best]["latency_ms"]["mean"] if best else None,
            "mean_reduction_vs_best_fixed": round(1 - own / fixed[best]["latency_ms"]["mean"], 4) if best else None,
            "cloud_only_mean_ms": cloud, "cloud_only_mean_over_edgeflow": round(cloud / own, 3) if cloud else None,
            "fallbacks": s["fallbacks"], "fallback_rate": round(s["fallbacks"] / s["requests"], 4),
            "mape_path": pred.get("mape_path"), "mape_expected": pred.get("mape_expected"),
            "accuracy_delta_pts": acc, "accuracy_floor_pts": sc.accuracy_floor_pts,
            "plan_switches": len(s["adaptation"]["switches"]), "plans": s["plans"],
            "fixed_runs_mean_ms": {n: m["latency_ms"]["mean"] for n, m in s["runs"].items() if n != "edgeflow"},
            "wall_s": round(s["bench_wall_s"], 1),
        }  # fmt: skip
        out["modes"][mode] = row
        print(f"regime-switch ({mode}): mean {own} ms vs best fixed {row['hindsight_best_fixed']} "
              f"{row['hindsight_best_fixed_mean_ms']} ms ({row['mean_reduction_vs_best_fixed']}), cloud-only x"
              f"{row['cloud_only_mean_over_edgeflow']}, fallbacks {row['fallbacks']}, MAPE path {row['mape_path']}, "
              f"lost {row['lost']}", flush=True)  # fmt: skip
    out["targets"] = {"mean_reduction_vs_best_fixed": ">= 0.25", "cloud_only_mean_over_edgeflow": ">= 2",
                      "fallback_rate": "<= 0.05", "mape_path": "<= 0.15", "accuracy_delta_pts": ">= -1", "lost": "0"}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rates and traces, shorter windows")
    ap.add_argument("--only", choices=("sweep", "traces", "regime"), help="run one part")
    ap.add_argument("--device-process", action="store_true",
                    help="sweep and traces with each device as its own agent process (the regime part runs both modes)")
    ap.add_argument("--modes", default="in-process,device-process", help="device modes of the regime part")
    ap.add_argument("--rates", help="comma-separated Mbit/s for the sweep")
    ap.add_argument("--traces-dir", type=Path, default=TRACES, help="the shared traces folder")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--keep", type=Path, help="keep the per-scenario report folders here")
    ap.add_argument("--traces", help="comma-separated trace names to run (default: all, or the quick set)")
    ap.add_argument("--slo-ms", type=float, help="give the trace scenarios this latency SLO (default: none)")
    ap.add_argument("--device-slowdown", type=float,
                    help="the device's emulated slowdown (default: the quickstart's 16x; e.g. 64 for a board-class "
                         "device, where offloading pays while the link is up)")
    args = ap.parse_args()
    quick = args.quick
    rates = [float(r) for r in args.rates.split(",")] if args.rates else (
        [0.1, 1, 10, 100, 1000] if quick else [0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000])
    cases = [c for c in TRACE_CASES if (c[0] in args.traces.split(",") if args.traces else not quick or c[0] in QUICK_TRACES)]
    window_s, rate_hz = (12.0, 5.0) if quick else (45.0, 4.0)
    nodes = _nodes(args.device_slowdown)
    t0 = time.monotonic()
    result: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "command": " ".join(["python", "benchmarks/bench_scenarios.py", *sys.argv[1:]]),
        "nodes": {t: {"slowdown_factor": c.compute.slowdown_factor, "threads": c.compute.threads} for t, c in nodes.items()},
    }
    with tempfile.TemporaryDirectory(prefix="edgeflow-bench-") as tmp:
        work = args.keep or Path(tmp)
        if args.only in (None, "sweep"):
            result["sweep"] = {"requests_per_run": 12 if quick else 30, "targets": {"ratio_edgeflow_to_best": "<= 1.05"}}
            result["sweep"]["points"] = sweep(rates, result["sweep"]["requests_per_run"], nodes, work, args.device_process)
        if args.only in (None, "traces"):
            if not args.traces_dir.is_dir():
                print(f"no traces at {args.traces_dir}; skipping the trace part", file=sys.stderr)
            else:
                result["traces"] = {
                    "window_s": window_s, "rate_hz": rate_hz,
                    "targets": {"p95_reduction_vs_best_fixed": ">= 0.30", "cloud_only_p95_over_edgeflow": ">= 2",
                                "accuracy_delta_pts": ">= -1"},
                    "slo_ms": args.slo_ms,
                    "cases": traces(cases, window_s, rate_hz, nodes, work, args.traces_dir, args.slo_ms,
                                    args.device_process),
                }  # fmt: skip
        if args.only in (None, "regime"):
            result["regime"] = regime(80 if quick else None, REPO / "scenarios" / "regime-switch.yaml", work,
                                      args.modes.split(","))
    result["adaptation"] = ("adaptive: edgeflow's run uses the device's live planner (plan: auto), started on links at the "
                            "mean rates; the best fixed split is chosen with hindsight among the baselines and the "
                            "planner's choices at scaled mean rates")
    result["wall_s"] = round(time.monotonic() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
