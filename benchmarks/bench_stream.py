"""Stream mode: bytes per frame against coding each frame on its own, and end-to-end latency on a 1 Mbit/s link.

    python benchmarks/bench_stream.py [--frames 120] [--requests 40] [--skip-e2e] [--skip-auto]
                                      [--out benchmarks/results/stream.json]

1. **Bytes per frame at equal fidelity** (in process, the demo model, real codecs): the synthetic video of
   ``edgeflow.scenario.frames`` (``static``: a fixed camera with a small object drifting; ``moving``: a panning
   camera) coded on one hop at several positions and codecs, by :class:`~edgeflow.agent.streams.StreamSender` (key
   frame every 64 frames or when a residual costs over half a key frame) and decoded by a
   :class:`~edgeflow.agent.streams.StreamReceiver`, against the same frames coded on their own with the same codec.
   Fidelity: the receiver's values are finished by the unsplit model's rest; top-1 agreement with the unsplit model
   on the original frames, for both codings (the loss is independent - delta, in points), and the largest error
   over the codec's own bound. Goal: >= 5x fewer bytes on the static scene at <= 0.5 pt agreement loss.
2. **End to end** (``edgeflow run``, real agent processes, emulated links): ``scenarios/stream.yaml`` with fixed
   plans, the same frames as a stream (``workload.stream: true``) and as independent requests (``false``), on a
   1 Mbit/s device-edge link; p50 and bytes per frame of each. Goal: p50 >= 2x lower with delta coding. The
   comparison that matters is against the best *independent* way to send a frame (``input|jpeg``, which cannot be
   delta coded), reported beside the same plan without delta coding.
3. **Planned live** (``edgeflow run --device-process``, a real device agent process): ``scenarios/stream-auto.yaml``
   (``plan: auto``) with the device's stream samples on and off (``streams.sample_every_frames: 0``,
   :mod:`edgeflow.agent.streamcost`): the plans the planner took, in order (``stream.by_plan``), p50 and bytes per
   frame of each run, and the ratios off / on.
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

import torch
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgeflow.agent.loader import load_runtime  # noqa: E402
from edgeflow.agent.streams import StreamReceiver, StreamRef, StreamSender  # noqa: E402
from edgeflow.config import NodeConfig, StreamsConfig  # noqa: E402
from edgeflow.core.codecs import decode, get_codec  # noqa: E402
from edgeflow.scenario.frames import moving_object_video  # noqa: E402

HOPS = [(0, "lossless"), (0, "int8"), (8, "int8"), (8, "lossless"), (20, "int8"), (36, "int8")]
E2E_PLANS = ["input|lossless > edge[0:]", "device[0:8]|int8 > edge[8:]", "input|jpeg > edge[0:]"]


@torch.inference_mode()
def bytes_per_frame(runtime, frames: torch.Tensor, position: int, spec: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """One hop's stream against independent coding of the same frames (see the module doc)."""
    codec = get_codec(spec)
    sender, receiver = StreamSender(StreamsConfig()), StreamReceiver(StreamsConfig(), "edge")
    names = [i.name for i in runtime.cut_info(position).tensors]
    n, out = runtime.num_positions, runtime.num_positions
    full = [int(runtime.run(0, n, [frames[k : k + 1]]).values[0].argmax()) for k in range(len(frames))]
    delta_bytes = alone_bytes = keys = 0
    agree_delta = agree_alone = 0
    worst_over_bound = 0.0
    for k in range(len(frames)):
        values = runtime.run(0, position, [frames[k : k + 1]]).values if position else [frames[k : k + 1]]
        coded = sender.encode(StreamRef("bench", "cam", k), position, "p", names, values, codec)
        delta_bytes += coded.nbytes
        alone_bytes += coded.key_nbytes
        keys += not coded.delta
        got = receiver.decode(StreamRef("device", "cam", k), position, coded.wire,
                              lambda i, t: decode(t.payload, t.decode_limits()))  # fmt: skip
        alone = [decode(codec.encode(v)) for v in values]
        for g, v in zip(got, values):
            if v.dtype.is_floating_point and codec.max_abs_error(v):
                worst_over_bound = max(worst_over_bound, float((g - v).abs().max()) / codec.max_abs_error(v))
        agree_delta += int(runtime.run(position, out, got).values[0].argmax()) == full[k]
        agree_alone += int(runtime.run(position, out, alone).values[0].argmax()) == full[k]
    f = len(frames)
    return {
        "position": position, "codec": spec, "frames": f, "key_frames": keys,
        "bytes_per_frame": delta_bytes / f, "bytes_per_frame_independent": alone_bytes / f,
        "ratio": alone_bytes / delta_bytes,
        "agreement": agree_delta / f, "agreement_independent": agree_alone / f,
        "agreement_loss_pts": 100.0 * (agree_alone - agree_delta) / f,
        "max_error_over_codec_bound": worst_over_bound,
    }  # fmt: skip


def _scenario(tmp: Path, plan: str, stream: bool, requests: int) -> Path:
    data = yaml.safe_load((REPO / "scenarios" / "stream.yaml").read_text())
    for tier, ref in data["nodes"].items():
        ref["file"] = str(REPO / "nodes" / f"{tier}.yaml")
    data["plan"] = plan
    data["baselines"] = []
    data["workload"].update(stream=stream, requests=requests, rate_hz=2)  # the link keeps up with independent frames
    data["name"] = f"stream-{'delta' if stream else 'independent'}"
    path = tmp / f"{data['name']}-{abs(hash(plan))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def end_to_end(tmp: Path, plan: str, stream: bool, requests: int) -> dict[str, Any]:
    out = tmp / f"out-{abs(hash((plan, stream)))}"
    cmd = [sys.executable, "-m", "edgeflow", "run", str(_scenario(tmp, plan, stream, requests)), "--out", str(out),
           "--baselines", "none", "--json", "--no-plots", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    s = json.loads(proc.stdout)
    st = s.get("stream") or {}
    return {"plan": plan, "stream": stream, "p50_ms": s["latency_ms"]["p50"], "p95_ms": s["latency_ms"]["p95"],
            "bytes_per_frame": st.get("bytes_per_frame"), "bytes_per_frame_independent": st.get("bytes_per_frame_independent"),
            "bytes_per_request": s["bytes_per_request"], "agreement": s["agreement"], "lost": s["lost"],
            "fallbacks": s["fallbacks"]}  # fmt: skip


def planned_live(tmp: Path, sample: bool) -> dict[str, Any]:
    """``scenarios/stream-auto.yaml`` with a device agent process, its stream samples on or off."""
    data = yaml.safe_load((REPO / "scenarios" / "stream-auto.yaml").read_text())
    for tier, ref in data["nodes"].items():
        ref["file"] = str(REPO / "nodes" / f"{tier}.yaml")
    if not sample:
        data["nodes"]["device"]["overrides"] = {"streams.sample_every_frames": 0}
    data["baselines"] = []
    path, out = tmp / f"auto-{sample}.yaml", tmp / f"out-auto-{sample}"
    path.write_text(yaml.safe_dump(data))
    cmd = [sys.executable, "-m", "edgeflow", "run", str(path), "--out", str(out), "--baselines", "none", "--json",
           "--no-plots", "--no-progress", "--device-process"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    s = json.loads(proc.stdout)
    st = s.get("stream") or {}
    return {"samples": sample, "p50_ms": s["latency_ms"]["p50"], "p95_ms": s["latency_ms"]["p95"],
            "bytes_per_frame": st.get("bytes_per_frame"), "bytes_per_frame_independent": st.get("bytes_per_frame_independent"),
            "plan_switches": s["plan_switches"], "by_plan": st.get("by_plan"), "agreement": s["agreement"],
            "lost": s["lost"], "fallbacks": s["fallbacks"]}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--skip-auto", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "stream.json")
    args = ap.parse_args()
    t0 = time.monotonic()
    torch.set_num_threads(1)
    runtime = load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]",
                                                     "model": {"artifact": "builtin:demo"}}))  # fmt: skip
    size = runtime.example_input[0].shape[-1]
    hops: dict[str, list[dict[str, Any]]] = {}
    for motion in ("static", "moving"):
        frames = moving_object_video(args.frames, size, motion, seed=0)
        hops[motion] = [bytes_per_frame(runtime, frames, pos, spec) for pos, spec in HOPS]
        for r in hops[motion]:
            print(f"{motion:7s} position {r['position']:2d} {r['codec']:8s}: {r['bytes_per_frame']:8.0f} B/frame vs "
                  f"{r['bytes_per_frame_independent']:8.0f} alone ({r['ratio']:5.2f}x), agreement loss "
                  f"{r['agreement_loss_pts']:+.2f} pt, {r['key_frames']} key frames")  # fmt: skip
    static_ok = [r for r in hops["static"] if r["ratio"] >= 5.0 and r["agreement_loss_pts"] <= 0.5]
    e2e: list[dict[str, Any]] = []
    if not args.skip_e2e:
        with tempfile.TemporaryDirectory() as d:
            for plan in E2E_PLANS:
                for stream in ((True, False) if "jpeg" not in plan else (False,)):
                    e2e.append(end_to_end(Path(d), plan, stream, args.requests))
                    r = e2e[-1]
                    print(f"e2e {plan:32s} {'delta' if stream else 'alone':5s}: p50 {r['p50_ms']:7.1f} ms, p95 "
                          f"{r['p95_ms']:7.1f} ms, {r['bytes_per_request']:8.0f} B/request, lost {r['lost']}")  # fmt: skip
    ratios: dict[str, Any] = {}
    for plan in E2E_PLANS:
        on = next((r for r in e2e if r["plan"] == plan and r["stream"]), None)
        off = next((r for r in e2e if r["plan"] == plan and not r["stream"]), None)
        if on and off:
            ratios[plan] = {"p50_off_over_on": off["p50_ms"] / on["p50_ms"]}
    auto: list[dict[str, Any]] = []
    if not args.skip_auto:
        with tempfile.TemporaryDirectory() as d:
            for sample in (True, False):
                auto.append(planned_live(Path(d), sample))
                r = auto[-1]
                print(f"auto, samples {'on ' if sample else 'off'}: p50 {r['p50_ms']:7.1f} ms, "
                      f"{r['bytes_per_frame']:8.0f} B/frame, plans {list(r['by_plan'] or {})}")  # fmt: skip
    best_alone = min((r for r in e2e if not r["stream"]), key=lambda r: r["p50_ms"], default=None)
    best_delta = min((r for r in e2e if r["stream"]), key=lambda r: r["p50_ms"], default=None)
    out = {
        "benchmark": "bench_stream",
        "command": "python benchmarks/bench_stream.py " + " ".join(sys.argv[1:]),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "setup": {"model": "builtin:demo", "frames": args.frames, "streams": StreamsConfig().model_dump(),
                  "e2e": "scenarios/stream.yaml, fixed plans, 1 Mbit/s device-edge, 2 frames/s",
                  "e2e_requests": args.requests,
                  "auto": "scenarios/stream-auto.yaml, plan auto, device agent process 256x slower, 60 frames"},  # fmt: skip
        "bytes": hops,
        "goal_static_5x_at_0.5pt": {"met_at": [f"{r['codec']}@{r['position']}" for r in static_ok],
                                    "missed_at": [f"{r['codec']}@{r['position']}" for r in hops["static"]
                                                  if r not in static_ok]},  # fmt: skip
        "e2e": e2e,
        "e2e_ratios_same_plan": ratios,
        "e2e_best_independent_over_best_delta_p50": (best_alone["p50_ms"] / best_delta["p50_ms"]
                                                     if best_alone and best_delta else None),  # fmt: skip
        "auto": auto,
        "auto_samples_off_over_on": ({"p50": auto[1]["p50_ms"] / auto[0]["p50_ms"],
                                      "bytes_per_frame": auto[1]["bytes_per_frame"] / auto[0]["bytes_per_frame"]}
                                     if len(auto) == 2 and auto[0]["bytes_per_frame"] else None),  # fmt: skip
        "seconds": round(time.monotonic() - t0, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out} in {out['seconds']} s")


if __name__ == "__main__":
    main()
