"""Validated upstream answers: detection rate and false alarms of the device's check, on the demo model.

    python benchmarks/bench_validate.py                 # writes benchmarks/results/validate.json
    python benchmarks/bench_validate.py --requests 60   # a smoke run

An edge and a cloud agent process (the shipped node files, real gRPC); a :class:`LyingUpstream` in this process in
front of the edge flips a fraction of the answers to a well-formed wrong class (``WrongClass``: ``uniform`` any other
class, or ``runner-up`` the most plausible one); a device in this process (``validate: flag``, a fresh device per
run so each run's running test starts from nothing) sends the demo's *test* split (the check was calibrated on its
calibration split) under several plans. The liar knows which answers it flipped; the device does not.

Per run: ``detection`` = flipped answers the device flagged / flipped answers; ``false_alarm`` = answers not
flipped that it flagged / answers not flipped (the goal: detection >= 0.90 at false_alarm <= 0.02 on honest traffic,
lie fraction 0). Requests the device answered itself (its own exit) are not upstream answers and are not counted.
One ``recompute-locally`` run reports how many final answers equal the unsplit model's. ``head_cost`` is the time of
the device's exit head next to the device's slice and the whole model (in-process, medians of single runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from edgeflow.agent.client import DeviceClient  # noqa: E402
from edgeflow.agent.loader import load_runtime  # noqa: E402
from edgeflow.cli.agent_cmds import read_node_file  # noqa: E402
from edgeflow.config import NodeConfig  # noqa: E402
from edgeflow.core.data import load_demo_dataset  # noqa: E402
from edgeflow.scenario.procs import AgentProcess, child_env  # noqa: E402
from edgeflow.testing.lying import LyingUpstream, WrongClass  # noqa: E402

PLANS = {
    "head@20, no exits, lossless": "device[0:20]|lossless > edge[20:52]|lossless > cloud[52:]",
    "head@20, shipped plan (device exit 0.99, edge exit 0.95, int8)":
        "device[0:20]|int8 > edge[20:52]|int8 > cloud[52:]  exits@20:0.99,36:0.95",
    "head@36, int8": "device[0:36]|int8 > cloud[36:]",
}  # fmt: skip
LIES = [(0.0, "uniform"), (0.1, "uniform"), (0.3, "uniform"), (0.1, "runner-up"), (0.3, "runner-up")]


def head_cost(repeats: int) -> dict[str, float]:
    """Median seconds of the device's slice [0:20], its head at 20, and the whole model (batch 1)."""
    rt = load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]"}))
    x = load_demo_dataset("calibration")[0][:1]
    head = rt.exits[20]
    times: dict[str, list[float]] = {"slice_0_20_s": [], "head_20_s": [], "model_s": []}
    with torch.inference_mode():
        for _ in range(repeats):
            t = time.perf_counter()
            out = rt.run(0, 20, [x]).values
            times["slice_0_20_s"].append(time.perf_counter() - t)
            primary = out[rt.cut_info(20).primary]
            t = time.perf_counter()
            head(primary)
            times["head_20_s"].append(time.perf_counter() - t)
            t = time.perf_counter()
            rt.model(x)
            times["model_s"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    med["head_over_slice"] = med["head_20_s"] / med["slice_0_20_s"]
    med["head_over_model"] = med["head_20_s"] / med["model_s"]
    return med


def one_run(device_cfg: NodeConfig, liar_address: str, plan: str, images: torch.Tensor, liar: WrongClass,
            unsplit: list[int], tag: str) -> dict[str, object]:  # fmt: skip
    flipped_n = flagged_flipped = honest_n = flagged_honest = device_answered = equal_unsplit = 0
    with DeviceClient.from_config(device_cfg.with_overrides(plan=plan)) as device:
        for i in range(len(images)):
            rid = f"{tag}-{i}"
            r = device.agent.submit_local([images[i : i + 1]], request_id=rid, deadline=time.monotonic() + 30)
            b = r.breakdown
            equal_unsplit += int(r.values[0].argmax()) == unsplit[i]
            if not b.validation:  # answered by the device itself: nothing to check
                device_answered += 1
                continue
            flagged = b.validation in ("flagged", "recomputed")
            if rid in liar.flipped:
                flipped_n += 1
                flagged_flipped += flagged
            else:
                honest_n += 1
                flagged_honest += flagged
        stats = device.agent.validator.stats()
    return {
        "upstream_answers": flipped_n + honest_n, "device_answered": device_answered, "flipped": flipped_n,
        "flagged_flipped": flagged_flipped, "not_flipped": honest_n, "flagged_not_flipped": flagged_honest,
        "detection": flagged_flipped / flipped_n if flipped_n else None,
        "false_alarm": flagged_honest / honest_n if honest_n else None,
        "final_equals_unsplit": equal_unsplit / len(images), "suspect_at_end": stats.suspect,
        "flagged_by_head": stats.by_head, "flagged_by_consistency": stats.by_consistency,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=360, help="test images per run (the split has 360)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "validate.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # a flag per lie is logged at INFO; suspicions at WARNING

    images, _ = load_demo_dataset("test")
    images = images[: args.requests]
    rt = load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]"}))
    with torch.inference_mode():
        unsplit = rt.model(images).argmax(1).tolist()
    env = child_env(OMP_NUM_THREADS="1")
    results: list[dict[str, object]] = []
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        procs: list[AgentProcess] = []
        try:
            first = next(iter(PLANS.values()))
            cloud = AgentProcess("cloud", REPO / "nodes" / "cloud.yaml", port=0, plan=first, profile_repeats=1, env=env,
                                 cwd=REPO, log_path=Path(tmp) / "cloud.log")  # fmt: skip
            procs.append(cloud)
            cloud.wait_ready(120)
            edge = AgentProcess("edge", REPO / "nodes" / "edge.yaml", port=0, plan=first, upstream=cloud.address,
                                profile_repeats=1, env=env, cwd=REPO, log_path=Path(tmp) / "edge.log")  # fmt: skip
            procs.append(edge)
            edge.wait_ready(120)
            base = read_node_file(REPO / "nodes" / "device.yaml", upstream="127.0.0.1:1", plan=first)
            for name, plan in PLANS.items():
                for fraction, choice in LIES:
                    liar = WrongClass(fraction, seed=args.seed, choice=choice)
                    with LyingUpstream(edge.address, wrong_class=liar) as up:
                        cfg = base.with_overrides(**{"upstream.address": up.address, "validate.mode": "flag",
                                                     "compute.slowdown_factor": 1.0})  # fmt: skip
                        tag = f"{name}-{fraction}-{choice}"
                        row = one_run(cfg, up.address, plan, images, liar, unsplit, tag)
                    row.update(plan_name=name, plan=plan, lie_fraction=fraction, choice=choice, mode="flag")
                    results.append(row)
                    print(f"{name:62s} lie {fraction:.2f} {choice:9s} detection {row['detection']} "
                          f"false alarm {row['false_alarm']} ({row['upstream_answers']} checked)", flush=True)  # fmt: skip
            plan = PLANS["head@20, no exits, lossless"]
            liar = WrongClass(0.3, seed=args.seed)
            with LyingUpstream(edge.address, wrong_class=liar) as up:
                cfg = base.with_overrides(**{"upstream.address": up.address, "validate.mode": "recompute-locally",
                                             "compute.slowdown_factor": 1.0})  # fmt: skip
                row = one_run(cfg, up.address, plan, images, liar, unsplit, "recompute")
            row.update(plan_name="head@20, no exits, lossless", plan=plan, lie_fraction=0.3, choice="uniform",
                       mode="recompute-locally")  # fmt: skip
            results.append(row)
            print(f"recompute-locally lie 0.30: final answers equal to the unsplit model {row['final_equals_unsplit']}")
        finally:
            for p in procs:
                p.stop(grace_s=10)
    honest = [r for r in results if r["lie_fraction"] == 0.0]
    lying = [r for r in results if r["lie_fraction"] > 0 and r["mode"] == "flag"]
    def pooled(rows: list[dict[str, object]], hit: str, of: str) -> float | None:
        n = sum(int(r[of]) for r in rows)  # type: ignore[call-overload]
        return sum(int(r[hit]) for r in rows) / n if n else None  # type: ignore[call-overload]

    goal: dict[str, object] = {
        "detection_min_uniform": min(float(r["detection"]) for r in lying if r["choice"] == "uniform" and r["detection"] is not None),  # type: ignore[arg-type]
        "detection_min_runner_up": min(float(r["detection"]) for r in lying if r["choice"] == "runner-up" and r["detection"] is not None),  # type: ignore[arg-type]
        "detection_pooled_uniform": pooled([r for r in lying if r["choice"] == "uniform"], "flagged_flipped", "flipped"),
        "detection_pooled_runner_up": pooled([r for r in lying if r["choice"] == "runner-up"], "flagged_flipped", "flipped"),
        "false_alarm_max_honest": max(float(r["false_alarm"]) for r in honest if r["false_alarm"] is not None),  # type: ignore[arg-type]
        "false_alarm_pooled_honest": pooled(honest, "flagged_not_flipped", "not_flipped"),
        "false_alarm_pooled_not_flipped_in_lying_runs": pooled(lying, "flagged_not_flipped", "not_flipped"),
    }
    goal["met_uniform"] = goal["detection_min_uniform"] >= 0.9 and goal["false_alarm_max_honest"] <= 0.02  # type: ignore[operator]
    goal["met_runner_up"] = goal["detection_min_runner_up"] >= 0.9 and goal["false_alarm_max_honest"] <= 0.02  # type: ignore[operator]
    out = {
        "benchmark": "validate",
        "command": "python benchmarks/bench_validate.py" + (f" --requests {args.requests}" if args.requests != 360 else ""),
        "host": {"machine": platform.machine(), "python": platform.python_version(), "torch": torch.__version__},
        "requests_per_run": len(images), "data": "demo test split (calibrated on the calibration split)",
        "goal": "detection >= 0.90 of flipped answers at false_alarm <= 0.02 on honest traffic", "summary": goal,
        "head_cost": head_cost(200), "runs": results, "wall_s": round(time.monotonic() - t_start, 1),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(goal, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
