"""MobileNetV2 (224x224, seeded random weights) on the phone node over a 0.1-1000 Mbit/s device-edge sweep.

At each rate: the plan edgeflow's live planner used most, classified as device-only / mid-network split /
edge-cloud-only, and edgeflow's p50 against the best baseline's (goal <= 1.05x everywhere). The phone is
``nodes/phone.yaml`` (``compute.device_speed``: a stated ms per model, turned into an emulated slowdown from this
host's measured speed at start-up). Weights are untrained: latency and bytes are real; fidelity is agreement.

    python benchmarks/bench_mobilenet_sweep.py                       # 0.1,1,3,10,100,1000 Mbit/s, 16 requests each
    python benchmarks/bench_mobilenet_sweep.py --rates 1,100 --requests 4   # a partial sweep
    python benchmarks/bench_mobilenet_sweep.py --predict-only      # the planner's predictions only (~2 min, no runs)

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
from edgeflow.core.plan import Plan  # noqa: E402
from edgeflow.scenario.report import write_report  # noqa: E402
from edgeflow.scenario.runner import run_scenario  # noqa: E402
from edgeflow.scenario.schema import Scenario  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "mobilenet_sweep.json"
SCENARIO = REPO / "scenarios" / "mobilenet-phone-lte.yaml"
BASELINES = ["device-only", "edge-only", "cloud-only", "neurosurgeon"]


def plan_kind(plan: str, cum_flops: list[int]) -> str:
    """device-only (the whole model on the device), edge-cloud-only (the raw input leaves the device, or an input
    only normalised there: a cut before the first layer with FLOPs, e.g. ``device[0:2]|int4``, is an input codec),
    or a mid-network split (the device runs at least one conv/matmul layer and sends an activation).

    ``cum_flops[k]``: FLOPs the device has run when it sends position ``k`` (``device[0:k]``)."""
    parsed = Plan.parse(plan)
    stage = parsed.stage("device")
    if stage is None or stage.start == stage.stop:
        return "edge-cloud-only"
    if len(parsed.stages) == 1 or stage.stop is None or stage.stop >= len(cum_flops) - 1:
        return "device-only"
    return "mid-network split" if cum_flops[stage.stop] > 0 else "edge-cloud-only"


def device_flops(nodes: dict[str, Any]) -> list[int]:
    """FLOPs the device has run when it sends position k (``device[0:k]``: compute nodes 0..k-1), k = 0..N, counted
    as the planner's profile counts them (:func:`profile_compute`)."""
    import torch

    from edgeflow.agent.loader import load_runtime
    from edgeflow.agent.speed import _batch1
    from edgeflow.core.profile import profile_compute

    runtime = load_runtime(nodes["device"])
    _, node_flops, _ = profile_compute(runtime.partition, _batch1(runtime), repeats=0, warmup=0, count_flops=True)
    return [0, *(int(f) for f in torch.tensor(node_flops, dtype=torch.float64).cumsum(0).tolist())]


DEVICE_EDGE_DELAY_MS, EDGE_CLOUD = 25, {"rate_mbit": 1000, "delay_ms": 10}  # every point's links but the swept rate
OPT_IN_CODECS = ("int2", "dct")  # offered to the what-if planner only (default drops 7 and 4 points: over the floor)


def predictions(nodes: dict[str, Any], rates: list[float], cum_flops: list[int]) -> list[dict[str, Any]]:
    """Why the planner does or does not split mid-network, from the scenario runner's own cost model (the same
    profile, node speeds and compute correction, on the scenario's first synthetic input; nothing is run).

    At each rate: the planner's best plan; the best *true* mid-network split (device runs >= 1 layer with FLOPs,
    to the edge or the cloud) with the codecs the runner offers, within the accuracy floor; the same with the
    opt-in ``int2``/``dct`` codecs counted as lossless in accuracy (a what-if: their drop cannot be measured with
    untrained weights, whose predictions barely depend on the input); and the what-if planner's own best plan."""
    import torch

    from edgeflow.agent.loader import load_runtime
    from edgeflow.agent.speed import resolve_device_speeds
    from edgeflow.core.plan import TIERS
    from edgeflow.core.planner.costmodel import DEFAULT_CODEC_DROP_PTS, Conditions, CostModel, LinkState
    from edgeflow.core.planner.search import Planner
    from edgeflow.scenario.planning import ACTIVATION_CODECS, build_planning_model
    from edgeflow.scenario.workload import build_workload, expected_inputs, take

    sc, _ = read_scenario(SCENARIO)
    runtime = load_runtime(nodes["device"])
    threads = torch.get_num_threads()
    torch.set_num_threads(nodes["device"].compute.threads)  # as the runner plans
    try:
        resolved = resolve_device_speeds(nodes, runtime)
        workload = build_workload(sc.workload, expected_inputs(runtime), base_dir=SCENARIO.parent, artifact=sc.model.artifact)
        pm = build_planning_model(runtime, resolved, take(workload.inputs, 0, 1), artifact=sc.model.artifact,
                                  accuracy_floor_pts=sc.accuracy_floor_pts, privacy=sc.privacy,
                                  activation_codecs=(*ACTIVATION_CODECS, *OPT_IN_CODECS))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    cost = pm.cost
    free = CostModel(cost.tiers, cost.exit_model, activation_codecs=cost.activation_codecs, input_codecs=cost.input_codecs,
                     max_accuracy_drop_pts=sc.accuracy_floor_pts,
                     default_codec_drop_pts={**DEFAULT_CODEC_DROP_PTS, **{c: 0.0 for c in OPT_IN_CODECS}})  # fmt: skip
    free_planner = Planner(free)
    mids = [(k, c, t) for k in cost.cuts if cum_flops[k] > 0 for c in cost.activation_codecs for t in ("edge", "cloud")]
    out = []
    for rate in rates:
        cond = Conditions(links=(LinkState(rate * 1e6, 2 * DEVICE_EDGE_DELAY_MS / 1e3),
                                 LinkState(EDGE_CLOUD["rate_mbit"] * 1e6, 2 * EDGE_CLOUD["delay_ms"] / 1e3)),
                          compute_factor=pm.compute_factors or {})  # fmt: skip
        best = pm.planner.search(cond, sc.objective).best
        lat: dict[str, tuple[float, str]] = {}
        for k, c, t in mids:
            plan = Plan.parse(f"device[0:{k}]|{c} > {t}[{k}:]")
            ms = 1e3 * cost.evaluate(plan, cond).latency_s
            group = "opt_in" if c in OPT_IN_CODECS else "offered"
            if DEFAULT_CODEC_DROP_PTS.get(c, 0.0) > sc.accuracy_floor_pts and group == "offered":
                continue
            if group not in lat or ms < lat[group][0]:
                lat[group] = (ms, str(plan))
            if "any" not in lat or ms < lat["any"][0]:
                lat["any"] = (ms, str(plan))
        what_if = free_planner.search(cond, sc.objective).best
        best_ms = 1e3 * best.breakdown.latency_s
        out.append({
            "rate_mbit": rate, "best_plan": str(best.plan), "best_kind": plan_kind(str(best.plan), cum_flops),
            "best_ms": round(best_ms, 1),
            "best_mid_split": lat["offered"][1], "best_mid_split_ms": round(lat["offered"][0], 1),
            "best_mid_split_over_best": round(lat["offered"][0] / best_ms, 3),
            "best_mid_split_with_int2_dct": lat["any"][1], "best_mid_split_with_int2_dct_ms": round(lat["any"][0], 1),
            "what_if_int2_dct_lossless_best_plan": str(what_if.plan),
            "what_if_best_kind": plan_kind(str(what_if.plan), cum_flops),
            "what_if_best_ms": round(1e3 * what_if.breakdown.latency_s, 1),
        })  # fmt: skip
    info = {"compute_factors": {t: round(f, 3) for t, f in (pm.compute_factors or {}).items()},
            "slowdown_factor": {t: round(resolved[t].compute.slowdown_factor, 2) for t in TIERS},
            "predicted_device_only_ms": round(1e3 * cost.evaluate(Plan.parse("device[0:]"), cond).latency_s, 1)}  # fmt: skip
    return [info, *out]


def point(rate: float, requests: int, nodes: dict[str, Any], work: Path, cum_flops: list[int]) -> dict[str, Any]:
    data = json.loads(json.dumps(Scenario.from_mapping(__import__("yaml").safe_load(SCENARIO.read_text()),
                                                       source=str(SCENARIO)).model_dump(mode="json")))
    data["name"] = f"mobilenet-sweep-{rate:g}mbit"
    data["links"] = {"device_edge": {"rate_mbit": rate, "delay_ms": DEVICE_EDGE_DELAY_MS}, "edge_cloud": dict(EDGE_CLOUD)}
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
    same = next((n for n in base if s["baselines"][n]["plan"] == main), None)
    return {
        "rate_mbit": rate, "edgeflow_plan": main, "edgeflow_plan_kind": plan_kind(main, cum_flops),
        "edgeflow_plans": s["plans"], "edgeflow_plan_kinds": {p: plan_kind(p, cum_flops) for p in s["plans"]},
        "edgeflow_p50_ms": own, "edgeflow_answered": s["answered"], "edgeflow_lost": s["lost"],
        "agreement": s.get("agreement"), "best_baseline": best,
        "best_baseline_plan": s["baselines"][best]["plan"] if best else None,
        "best_baseline_p50_ms": base.get(best) if best else None,
        "ratio_edgeflow_to_best": round(own / base[best], 4) if best and own else None,
        "baselines_p50_ms": base,
        # the run-to-run spread of one plan on this host: edgeflow against a baseline that ran the same plan
        "same_plan_baseline": same, "ratio_edgeflow_to_same_plan": round(own / base[same], 4) if same and own else None,
        "wall_s": round(time.monotonic() - t0, 1),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="0.1,1,3,10,100,1000", help="comma-separated Mbit/s")
    ap.add_argument("--requests", type=int, default=16, help="requests per run (closed loop, one at a time)")
    ap.add_argument("--predict-only", action="store_true", help="only the planner's predictions (no runs); printed")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    nodes = read_scenario(SCENARIO)[1]
    cum_flops = device_flops(nodes)
    model_info, *predicted = predictions(nodes, rates, cum_flops)
    print(json.dumps(model_info))
    for row in predicted:
        print(json.dumps(row), flush=True)
    if args.predict_only:
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="ef-mbv2-") as tmp:
        for rate in rates:
            row = point(rate, args.requests, nodes, Path(tmp), cum_flops)
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
        "planner_model": model_info, "predicted": predicted,
    }  # fmt: skip
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
