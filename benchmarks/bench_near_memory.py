"""Near-duplicate answers from the result memory: agreement with the full model on held-out inputs, and coverage.

    python benchmarks/bench_near_memory.py [--target 0.995] [--frames 120] [--skip-e2e]
                                           [--out benchmarks/results/near_memory.json]

1. **Calibration** (:func:`edgeflow.agent.nearmemory.calibrate_demo`, demo model, *training* split): the threshold,
   the calibration pairs within it and their agreement, and the seconds it took.
2. **Held out** (the *test* split, never seen by the calibration): every test image with fresh perturbations of
   the same kinds (other random draws) and with its nearest other test image: of the pairs within the threshold
   (answered from the memory), the share whose full-model top-1 agrees (the goal: at least the target), and the
   share of perturbed inputs answered so (coverage).
3. **A camera stream**: the synthetic static and moving videos of ``edgeflow.scenario.frames``; each frame looked up
   against the previous frames' answers (a memory of 64): near hits and their agreement with the full model.
4. **End to end** (``edgeflow run``, real agent processes): ``scenarios/stream.yaml`` (its fixed split) with the
   device's ``memory: {enabled: true, near: true}``: near hits and agreement in ``summary.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeflow.agent.loader import load_runtime  # noqa: E402
from edgeflow.agent.memory import ResultMemory  # noqa: E402
from edgeflow.agent.nearmemory import GRID, _perturbed, calibrate_demo  # noqa: E402
from edgeflow.config import MemoryConfig, NodeConfig  # noqa: E402
from edgeflow.core.data import load_demo_dataset  # noqa: E402
from edgeflow.scenario.frames import moving_object_video  # noqa: E402


def _top1(runtime, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    n = runtime.num_positions
    return torch.cat([runtime.run(0, n, [x[i : i + 64]]).values[0].argmax(dim=-1) for i in range(0, len(x), 64)])


def held_out(runtime, threshold: float, size: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    images, _ = load_demo_dataset("test", size=size)
    base = _top1(runtime, images)
    emb = F.adaptive_avg_pool2d(images, GRID).reshape(len(images), -1)
    within = agree = total = 0
    for p in _perturbed(images, np.random.default_rng(12345)):
        d = ((F.adaptive_avg_pool2d(p, GRID).reshape(len(p), -1) - emb).pow(2).mean(dim=1)).sqrt()
        hit = d <= threshold
        within += int(hit.sum())
        agree += int((_top1(runtime, p) == base)[hit].sum())
        total += len(p)
    d_all = torch.cdist(emb, emb) / math.sqrt(emb.shape[1])
    d_all.fill_diagonal_(float("inf"))
    nearest_d, nearest = d_all.min(dim=1)
    other_hits = nearest_d <= threshold
    return {"perturbed_inputs": total, "answered_near": within, "coverage": within / total,
            "agreement": agree / within if within else None,
            "other_images_within_threshold": int(other_hits.sum()),
            "other_images_agreeing": int((base[nearest] == base)[other_hits].sum())}  # fmt: skip


def camera(runtime, threshold: float, frames: int, size: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from edgeflow.agent.nearmemory import NearCalibration

    out = {}
    for motion in ("static", "moving"):
        video = moving_object_video(frames, size, motion, seed=0)
        full = _top1(runtime, video)
        memory = ResultMemory(MemoryConfig(enabled=True, near=True, max_entries=64), runtime.fingerprint,
                              NearCalibration(threshold, 0.0, 0.0, 0.0, 0, 0))  # fmt: skip
        near = agree = 0
        lookup_s = 0.0
        for k in range(frames):
            x = video[k : k + 1]
            t = time.perf_counter()
            emb = memory.embed([x])
            found = memory.find(memory.key([x], "p"), emb, "p")
            lookup_s += time.perf_counter() - t
            if found is not None and found[1] == "near":
                near += 1
                agree += int(found[0].values[0]) == int(full[k])
            elif found is None:
                memory.put(memory.key([x], "p"), [full[k : k + 1]], position=runtime.num_positions, answered_by="device",
                           exit_position=-1, exit_confidence=0.0, saved_bytes=0, plan="p", embedding=emb)  # fmt: skip
        out[motion] = {"frames": frames, "near_hits": near, "near_agreement": agree / near if near else None,
                       "lookup_ms_mean": 1e3 * lookup_s / frames}  # fmt: skip
    return out


def end_to_end(tmp: Path, requests: int) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "scenarios" / "stream.yaml").read_text())
    for tier, ref in data["nodes"].items():
        ref["file"] = str(REPO / "nodes" / f"{tier}.yaml")
    data["nodes"]["device"]["overrides"] = {"memory.enabled": True, "memory.near": True}
    data["workload"]["requests"] = requests
    data["baselines"] = []
    path, out = tmp / "stream-near.yaml", tmp / "out"
    path.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-m", "edgeflow", "run", str(path), "--out", str(out), "--baselines", "none", "--json",
           "--no-plots", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    s = json.loads(proc.stdout)
    return {"scenario": "scenarios/stream.yaml + memory near", "requests": requests, "memory": s["memory"],
            "agreement": s["agreement"], "p50_ms": s["latency_ms"]["p50"], "bytes_per_request": s["bytes_per_request"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=float, default=0.995)
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "near_memory.json")
    args = ap.parse_args()
    t0 = time.monotonic()
    torch.set_num_threads(1)
    runtime = load_runtime(NodeConfig.from_mapping({"role": "device", "plan": "device[0:]",
                                                     "model": {"artifact": "builtin:demo"}}))  # fmt: skip
    size = int(runtime.cut_info(0).tensors[0].shape[2])
    t = time.perf_counter()
    cal = calibrate_demo(runtime, args.target)
    cal_s = time.perf_counter() - t
    print(f"calibration: threshold {cal.threshold:.4f}, {cal.pairs_within}/{cal.pairs} pairs within, agreement "
          f"{cal.agreement:.4f} (lower bound {cal.lower_bound:.4f}), {cal_s:.1f} s")  # fmt: skip
    held = held_out(runtime, cal.threshold, size)
    print(f"held out: {held}")
    cam = camera(runtime, cal.threshold, args.frames, size)
    print(f"camera: {cam}")
    e2e = None
    if not args.skip_e2e:
        with tempfile.TemporaryDirectory() as d:
            e2e = end_to_end(Path(d), args.requests)
        print(f"e2e: {e2e}")
    out = {
        "benchmark": "bench_near_memory",
        "command": "python benchmarks/bench_near_memory.py " + " ".join(sys.argv[1:]),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "setup": {"model": "builtin:demo", "target": args.target, "embedding": f"{GRID}x{GRID} average per channel, "
                  "RMS distance", "calibration": "demo training split", "held_out": "demo test split"},  # fmt: skip
        "calibration": {**vars(cal), "seconds": round(cal_s, 2)},
        "held_out": held,
        "goal_held_out_agreement_at_target": held["agreement"] is not None and held["agreement"] >= args.target,
        "camera": cam,
        "e2e": e2e,
        "seconds": round(time.monotonic() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {out['seconds']} s")


if __name__ == "__main__":
    main()
