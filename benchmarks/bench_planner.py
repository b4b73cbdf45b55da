"""Planner search time and exactness.

    python benchmarks/bench_planner.py [--repeats 20] [--oracle-seeds 300] [--out benchmarks/results/planner.json]

Measured in one run, on this host:
  - search time (median, p95) per objective for the demo model (70 positions, 69 cuts, its 3 trained exits
    measured jointly on the calibration split) and for full ResNet-18 at 224x224 (69 cuts; untrained weights,
    so its 3 exits get a seeded synthetic calibration) and MobileNetV2 (153 cuts, same): 3 tiers (device x8,
    edge x2, cloud x1 compute), all 7 activation codecs + 3 input codecs, exit grid off/0.8/0.9/0.95/0.99 per
    exit, accuracy floor 1 pt. Each search is a re-plan at a new bandwidth (0.1-1000 Mbit/s sweep): the
    bandwidth-independent tables are built once per model (``build_s``);
  - oracle agreement: the search vs brute force (every plan evaluated one by one) on seeded random cost tables
    for each objective, and on the demo model with every 10th cut (brute force over all plans of the full demo
    is 24.6 M plans).
Target (issue 4): >= 50 cuts x 3 tiers x all codecs x exit thresholds searched in <= 5 ms median.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeflow.core.artifact import load_artifact  # noqa: E402
from edgeflow.core.codecs import get_codec  # noqa: E402
from edgeflow.core.data import DEMO_WEIGHTS, load_demo_dataset, photo_batch  # noqa: E402
from edgeflow.core.exits import position_after  # noqa: E402
from edgeflow.core.partition import partition  # noqa: E402
from edgeflow.core.planner import (  # noqa: E402
    OBJECTIVES,
    Conditions,
    CostModel,
    LinkState,
    Planner,
    PowerSpec,
    TierSpec,
    brute_force,
    codec_drops_from_cuts,
    node_param_nbytes,
)
from edgeflow.core.planner.build import exit_head_seconds, exit_model_from_heads  # noqa: E402
from edgeflow.core.planner.synthetic import synthetic_conditions, synthetic_exits, synthetic_model  # noqa: E402
from edgeflow.core.profile import profile_model  # noqa: E402
from edgeflow.core.zoo import build_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "planner.json"
CUTS = Path(__file__).resolve().parent / "results" / "cuts.json"
ACT = ("lossless", "fp16", "bf16", "int8", "int8c", "int4", "int2")
INP = ("lossless", "png", "jpeg")
GRID = (0.8, 0.9, 0.95, 0.99)
SLOWDOWN = {"device": 8.0, "edge": 2.0, "cloud": 1.0}
BANDWIDTHS = [float(b) for b in np.geomspace(1e5, 1e9, 13)]


def _profile(name: str):
    """(profile, partition, exit model, head seconds, drops) for the demo or a zoo model."""
    act, inp = [get_codec(c) for c in ACT], [get_codec(c) for c in INP]
    if name == "demo":
        art = load_artifact(DEMO_WEIGHTS)
        x = load_demo_dataset("test")[0][:1].contiguous()
        p = partition(art.model, x)
        prof = profile_model(p, (x,), name=name, activation_codecs=act, input_codecs=inp, repeats=5)
        images, labels = load_demo_dataset("calibration")[:2]
        exits = exit_model_from_heads(p, list(art.exits), images, labels, GRID)
        heads = exit_head_seconds(p, list(art.exits), x)
        drops = codec_drops_from_cuts(json.loads(CUTS.read_text())) if CUTS.exists() else {}
        return prof, p, exits, heads, drops
    torch.manual_seed(0)
    net = build_model(name).eval()
    x = photo_batch(1, 224)
    p = partition(net, x)
    prof = profile_model(p, (x,), name=name, activation_codecs=act, input_codecs=inp, repeats=3, codec_repeats=1)
    stages = {"resnet18": ("layer1", "layer2", "layer3"), "mobilenet_v2": ("features.4", "features.7", "features.14")}
    positions = [position_after(p, m) for m in stages[name]]
    exits = synthetic_exits(np.random.default_rng(0), positions, GRID, source="calibration", num_samples=400)
    return prof, p, exits, {e: 5e-5 for e in positions}, {}


def _model(prof, p, exits, heads, drops) -> CostModel:
    tiers = [
        TierSpec(t, prof, compute_scale=SLOWDOWN[t], exit_head_s=heads,
                 power=PowerSpec(0.5, 3.0, 1.2) if t == "device" else PowerSpec())
        for t in ("device", "edge", "cloud")
    ]  # fmt: skip
    return CostModel(tiers, exits, codec_accuracy_drop=drops, max_accuracy_drop_pts=1.0, param_nbytes=node_param_nbytes(p))


def _conditions(bw: float) -> Conditions:
    return Conditions((LinkState(bw, 0.04), LinkState(1e9, 0.01)))


def _time_searches(model: CostModel, repeats: int) -> dict:
    t0 = time.perf_counter()
    planner = Planner(model)
    build_s = time.perf_counter() - t0
    out = {"build_s": build_s, "plans_searched": planner.num_plans, "exit_combos_kept": len(planner.rows), "objectives": {}}
    for obj in OBJECTIVES:
        times, best = [], {}
        for bw in BANDWIDTHS:
            cond = _conditions(bw)
            planner.search(cond, obj)  # warm
            for _ in range(repeats):
                t = time.perf_counter()
                res = planner.search(cond, obj)
                times.append(time.perf_counter() - t)
            best[f"{bw:.3g}"] = {"plan": str(res.best), "value": res.best.value}
        q = statistics.quantiles(times, n=20)
        out["objectives"][obj] = {
            "search_ms_median": 1e3 * statistics.median(times),
            "search_ms_p95": 1e3 * q[18],
            "searches": len(times),
            "best_by_bandwidth_bps": best,
        }
    return out


def _oracle_random(seeds: int) -> dict:
    agree = {o: 0 for o in OBJECTIVES}
    feasible = {o: 0 for o in OBJECTIVES}
    mismatches = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        nt = int(rng.integers(1, 4))
        md = synthetic_model(
            rng, num_positions=int(rng.integers(3, 9)), num_tiers=nt, memory_caps=bool(rng.random() < 0.5),
            privacy=bool(rng.random() < 0.3), exit_source=str(rng.choice(["samples", "calibration"])),
            num_exits=int(rng.integers(0, 3)), max_accuracy_drop_pts=float(rng.choice([0.0, 0.5, 1.0, 2.0])),
        )  # fmt: skip
        cond = synthetic_conditions(rng, nt - 1, md.names)
        pl = Planner(md)
        for obj in OBJECTIVES:
            want, _ = brute_force(md, cond, obj)
            try:
                got = pl.search(cond, obj).best.value
            except Exception:
                got = math.inf
            ok = (math.isinf(want) and math.isinf(got)) or math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12)
            agree[obj] += ok
            feasible[obj] += math.isfinite(want)
            if not ok:
                mismatches.append({"seed": seed, "objective": obj, "search": got, "oracle": want})
    return {"instances": seeds, "agree": agree, "feasible": feasible, "mismatches": mismatches[:10]}


def _oracle_demo(prof, p, exits, heads, drops) -> dict:
    sub = copy.deepcopy(prof)
    keep = set(range(10, sub.num_positions, 10))
    for pp in sub.positions:
        if pp.is_cut and pp.position not in keep:
            pp.is_cut = False
    md = _model(sub, p, exits, heads, drops)
    pl = Planner(md)
    rows = []
    for bw in (2e5, 1e7, 1e9):
        for obj in OBJECTIVES:
            t = time.perf_counter()
            want, _ = brute_force(md, _conditions(bw), obj)
            oracle_s = time.perf_counter() - t
            got = pl.search(_conditions(bw), obj).best.value
            rows.append({"bandwidth_bps": bw, "objective": obj, "search": got, "oracle": want, "oracle_s": oracle_s,
                         "agree": math.isclose(got, want, rel_tol=1e-9)})  # fmt: skip
    return {"cuts": len(md.cuts), "plans": pl.num_plans, "agree": sum(r["agree"] for r in rows), "checks": len(rows),
            "rows": rows}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20, help="searches per bandwidth and objective")
    ap.add_argument("--oracle-seeds", type=int, default=300)
    ap.add_argument("--models", default="demo,resnet18,mobilenet_v2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    result: dict = {
        "summary": {},
        "setup": {"tiers": SLOWDOWN, "activation_codecs": ACT, "input_codecs": INP, "exit_grid": ["off", *GRID],
                  "bandwidths_bps": BANDWIDTHS, "rtt_s": [0.04, 0.01], "accuracy_floor_pts": 1.0,
                  "host": platform.processor() or platform.machine(), "python": platform.python_version(),
                  "numpy": np.__version__, "threads": args.threads},  # fmt: skip
        "models": {},
    }
    demo_inputs = None
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        t = time.perf_counter()
        inputs = _profile(name)
        prof_s = time.perf_counter() - t
        if name == "demo":
            demo_inputs = inputs
        md = _model(*inputs)
        r = _time_searches(md, args.repeats)
        r.update(positions=md.num_positions, cuts=len(md.cuts), exits=list(md.exit_positions), profile_s=prof_s,
                 exit_source=md.exit_model.source)  # fmt: skip
        result["models"][name] = r
        times = ", ".join(
            f"{o} {v['search_ms_median']:.2f} ms (p95 {v['search_ms_p95']:.2f})" for o, v in r["objectives"].items()
        )
        print(f"{name}: {md.num_positions} positions, {len(md.cuts)} cuts, {r['plans_searched']:,} plans; {times}")
    t = time.perf_counter()
    result["oracle_random"] = _oracle_random(args.oracle_seeds)
    result["oracle_random"]["seconds"] = time.perf_counter() - t
    print(f"oracle on random tables: {result['oracle_random']['agree']} of {args.oracle_seeds} per objective")
    if demo_inputs is not None:
        result["oracle_demo_every_10th_cut"] = _oracle_demo(*demo_inputs)
        od = result["oracle_demo_every_10th_cut"]
        print(f"oracle on the demo (every 10th cut): {od['agree']}/{od['checks']}")
    big = {n: m for n, m in result["models"].items() if m["cuts"] >= 50}
    result["summary"] = {
        "target": "<= 5 ms median search, >= 50 cuts x 3 tiers x all codecs x exit thresholds (latency objective)",
        "latency_search_ms_median": {n: m["objectives"]["latency"]["search_ms_median"] for n, m in big.items()},
        "latency_search_ms_p95": {n: m["objectives"]["latency"]["search_ms_p95"] for n, m in big.items()},
        "energy_search_ms_median": {n: m["objectives"]["energy"]["search_ms_median"] for n, m in big.items()},
        "throughput_search_ms_median": {n: m["objectives"]["throughput"]["search_ms_median"] for n, m in big.items()},
        "meets_target": all(m["objectives"]["latency"]["search_ms_median"] <= 5.0 for m in big.values()),
        "oracle_agreement": {o: f"{a}/{args.oracle_seeds}" for o, a in result["oracle_random"]["agree"].items()},
        "wall_s": time.perf_counter() - t_start,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result["summary"], indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
