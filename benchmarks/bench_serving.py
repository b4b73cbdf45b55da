"""Serving benchmarks: cloud replicas, the Ray Serve proxy's cost, KServe ModelInfer vs edgeflow.v1 Infer.

    python benchmarks/bench_serving.py                  # writes benchmarks/results/serving.json
    python benchmarks/bench_serving.py --quick          # fewer requests (a smoke run)
    python benchmarks/bench_serving.py --only kserve    # one part: replicas, proxy, kserve

Every figure is measured in this run on this machine, servers in child processes (or Ray workers) on 127.0.0.1;
every loop is bounded.

1. replicas: 16 concurrent devices (threads here, each a closed loop sending the model input to the cloud tier,
   which runs the whole model: compute-bound cloud slices) against 1, 2 and 4 cloud replicas, two ways: Ray Serve
   replicas behind its gRPC proxy, and plain agent processes behind one upstream listing them all (gRPC
   round_robin). Each way once with real compute (``slowdown_factor`` 1: replicas share this machine's cores) and
   once with an emulated slower box (``slowdown_factor`` F: a replica holds its compute unit F x its CPU time,
   sleeping, so the replicas' CPU need stays within the cores). Throughput ratios 2/1 and 4/1 replicas.
2. proxy: sequential Infer round trips (batch 1) to one Ray Serve replica through the proxy vs to one plain cloud
   agent: the proxy's added latency, p50 and p90.
3. kserve: sequential round trips to one cloud agent with the same input, as KServe ModelInfer (plain FP32 bytes,
   the way tritonclient sends them) vs edgeflow.v1 Infer (lossless codec payload): p50 each and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from edgeflow.agent.endpoints import model_name  # noqa: E402
from edgeflow.config import NodeConfig  # noqa: E402
from edgeflow.core.codecs import get_codec  # noqa: E402
from edgeflow.testing.procs import AgentProcess  # noqa: E402
from edgeflow.transport import InferCall, PeerClient, WireTensor  # noqa: E402
from edgeflow.transport import kserve_pb as kpb  # noqa: E402
from edgeflow.transport.messages import encode_request  # noqa: E402
from edgeflow.transport.wire import frame  # noqa: E402

MODEL = "zoo:resnet18?width=32&image_size=64&num_classes=10"  # ~9 ms per image on one core here
PLAN = "cloud[0:]"
DEVICES = 16
EMULATED_SLOWDOWN = 6.0


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def _node(slowdown: float, **extra: Any) -> dict[str, Any]:
    return {"role": "cloud", "plan": PLAN, "model": {"artifact": MODEL}, "compute": {"slowdown_factor": slowdown},
            "queues": {"compute": 64, "workers": 64}, "listen": {"address": "127.0.0.1:0"}, **extra}  # fmt: skip


def _agent(tmp: Path, name: str, node: dict[str, Any]) -> AgentProcess:
    path = tmp / f"{name}.yaml"
    node = {k: v for k, v in node.items() if k != "model"}  # a zoo: spec is no path: given on the command line
    path.write_text(yaml.safe_dump(node))
    p = AgentProcess(name, path, port=0, artifact=MODEL, profile_repeats=0, log_level="warning", env=_env(), cwd=REPO)
    p.wait_ready(120.0)
    return p


def _call(peer: PeerClient, rid: str, x: torch.Tensor) -> bytes:
    d = peer.describe(timeout_s=60)
    name = d.inputs[0][0]
    return encode_request(InferCall(rid, d.fingerprint, 0, [WireTensor(name, "FP32", tuple(x.shape), "lossless",
                                                                      get_codec("lossless").encode(x))]))  # fmt: skip


def _load(address: str, metadata: dict[str, str] | None, per_device: int, *, endpoints: tuple[str, ...] = ()) -> dict[str, Any]:
    """``DEVICES`` closed loops, ``per_device`` requests each; throughput over the whole run."""
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    peers = [PeerClient(address, metadata=metadata, endpoints=endpoints) for _ in range(DEVICES)]
    requests = [[_call(peers[d], f"load-{time.monotonic_ns()}-{d}-{i}", x) for i in range(per_device)] for d in range(DEVICES)]
    for d in range(DEVICES):  # warm: every channel connected, every replica's first request done
        peers[d].infer_bytes(_call(peers[d], f"warm-{time.monotonic_ns()}-{d}", x), timeout_s=120)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def device(d: int) -> None:
        for data in requests[d]:
            t0 = time.perf_counter()
            try:
                peers[d].infer_bytes(data, timeout_s=120)
            except Exception as e:  # counted, never hidden
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=device, args=(d,)) for d in range(DEVICES)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    wall = time.perf_counter() - t0
    for p in peers:
        p.close()
    return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:3], "wall_s": wall,
            "throughput_rps": len(latencies) / wall, "p50_ms": 1e3 * statistics.median(latencies),
            "p90_ms": 1e3 * float(np.percentile(latencies, 90))}  # fmt: skip


def _ratios(rows: dict[int, dict[str, Any]]) -> dict[str, float]:
    base = rows[1]["throughput_rps"]
    return {f"{n}_over_1": rows[n]["throughput_rps"] / base for n in rows if n != 1}


def bench_replicas(tmp: Path, per_device: int, counts: tuple[int, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": DEVICES, "requests_per_device": per_device, "model": MODEL, "plan": PLAN}
    for label, slowdown in (("real_compute", 1.0), ("emulated_slowdown", EMULATED_SLOWDOWN)):
        plain: dict[int, dict[str, Any]] = {}
        for n in counts:
            procs = [_agent(tmp, f"cloud{i}", _node(slowdown)) for i in range(n)]
            try:
                addrs = [p.address for p in procs]
                plain[n] = _load(addrs[0], None, per_device, endpoints=tuple(addrs[1:]))
            finally:
                for p in procs:
                    p.stop(10.0)
            print(f"plain {label} {n} processes: {plain[n]['throughput_rps']:.1f} req/s", flush=True)
        out[f"plain_round_robin_{label}"] = {"by_replicas": plain, "ratios": _ratios(plain), "slowdown_factor": slowdown}
        try:
            ray_rows = _ray_replicas(slowdown, per_device, counts)
        except ImportError:
            ray_rows = None
        if ray_rows is not None:
            out[f"ray_serve_{label}"] = {"by_replicas": ray_rows, "ratios": _ratios(ray_rows), "slowdown_factor": slowdown}
    out["note"] = (
        f"{os.cpu_count()} cores shared by the {DEVICES} device threads, the proxy (Ray) and the replicas. real_compute: "
        "each replica computes on one core, so more replicas than free cores cannot add throughput; emulated_slowdown: "
        f"each request holds its replica {EMULATED_SLOWDOWN:g}x its CPU time (sleeping), the replicas' CPU need fits "
        "the cores, so the ratio shows what replicas give when each has its own hardware (an emulation)."
    )
    return out


def _ray_replicas(slowdown: float, per_device: int, counts: tuple[int, ...]) -> dict[int, dict[str, Any]]:
    import ray  # noqa: F401  (ImportError: part skipped)
    from ray import serve

    from edgeflow.rayserve import build_app, start

    rows: dict[int, dict[str, Any]] = {}
    first = NodeConfig.from_mapping(_node(slowdown, ray={"grpc_port": 0, "num_replicas": counts[0], "num_cpus": 0.1,
                                                         "max_ongoing_requests": 32}))  # fmt: skip
    cloud = start(first, num_cpus=os.cpu_count())
    try:
        for n in counts:
            cfg = first.with_overrides(**{"ray.num_replicas": n})
            serve.run(build_app(cfg), name=cfg.ray.app_name, route_prefix=f"/{cfg.ray.app_name}")  # waits until healthy
            rows[n] = _load(cloud.address, cloud.metadata, per_device)
            print(f"ray {slowdown:g}x {n} replicas: {rows[n]['throughput_rps']:.1f} req/s", flush=True)
    finally:
        cloud.shutdown()
    return rows


def _rtts(fn: Callable[[int], Any], n: int) -> list[float]:
    for i in range(10):
        fn(-1 - i)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def _summary(rtts: list[float]) -> dict[str, float]:
    return {"p50_ms": 1e3 * statistics.median(rtts), "p90_ms": 1e3 * float(np.percentile(rtts, 90))}


def bench_proxy(tmp: Path, n: int) -> dict[str, Any]:
    from edgeflow.rayserve import start

    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    plain = _agent(tmp, "cloud-plain", _node(1.0))
    try:
        with PeerClient(plain.address) as peer:
            direct = _rtts(lambda i: peer.infer_bytes(_call(peer, f"direct-{i}-{time.monotonic_ns()}", x), timeout_s=60), n)
    finally:
        plain.stop(10.0)
    cfg = NodeConfig.from_mapping(_node(1.0, ray={"grpc_port": 0, "num_replicas": 1, "num_cpus": 0.1}))
    cloud = start(cfg, num_cpus=os.cpu_count())
    try:
        with PeerClient(cloud.address, metadata=cloud.metadata) as peer:
            proxied = _rtts(lambda i: peer.infer_bytes(_call(peer, f"ray-{i}-{time.monotonic_ns()}", x), timeout_s=60), n)
    finally:
        cloud.shutdown()
    d, p = _summary(direct), _summary(proxied)
    return {"requests": n, "plain_agent": d, "ray_serve_proxy": p, "added_p50_ms": p["p50_ms"] - d["p50_ms"],
            "added_p90_ms": p["p90_ms"] - d["p90_ms"],
            "note": "sequential Infer round trips of one 64x64 image (whole model, ~9 ms compute) from this process; "
                    "the proxy adds a hop through Ray's proxy actor and the replica's Serve plumbing"}  # fmt: skip


def bench_kserve(tmp: Path, n: int) -> dict[str, Any]:
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    cloud = _agent(tmp, "cloud-kserve", _node(1.0))
    try:
        with PeerClient(cloud.address) as peer:
            d = peer.describe(timeout_s=60)
            infer = _rtts(lambda i: peer.infer_bytes(_call(peer, f"v1-{i}-{time.monotonic_ns()}", x), timeout_s=60), n)
        ch = grpc.insecure_channel(cloud.address)
        model_infer = ch.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        raw = x.numpy().tobytes()

        def kserve(i: int) -> None:
            req = kpb.ModelInferRequest(model_name=model_name(MODEL), id=f"ks-{i}-{time.monotonic_ns()}")
            req.inputs.add(name=d.inputs[0][0], datatype="FP32", shape=list(x.shape))
            data = frame(req.SerializeToString(), 7, [raw])  # raw_input_contents, as tritonclient sends them
            resp = kpb.ModelInferResponse.FromString(model_infer(data, timeout=60))
            np.frombuffer(resp.raw_output_contents[0], dtype=np.float32)

        model = _rtts(kserve, n)
        ch.close()
    finally:
        cloud.stop(10.0)
    i, k = _summary(infer), _summary(model)
    return {"requests": n, "edgeflow_v1_infer": i, "kserve_model_infer": k, "ratio_p50": k["p50_ms"] / i["p50_ms"],
            "input_nbytes": len(raw),
            "note": "same agent, same image: ModelInfer carries plain FP32 bytes (the agent frames them as a lossless "
                    "payload, zstd -7, and returns plain bytes), Infer a lossless codec payload"}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "serving.json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("replicas", "proxy", "kserve"))
    ns = parser.parse_args(argv)
    torch.set_num_threads(1)
    import tempfile

    report: dict[str, Any] = {
        "benchmark": "serving",
        "command": "python benchmarks/bench_serving.py" + (" --quick" if ns.quick else "") + (f" --only {ns.only}" if ns.only else ""),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "grpc": grpc.__version__, "platform": platform.platform()},
    }  # fmt: skip
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if ns.only in (None, "kserve"):
            report["kserve"] = bench_kserve(Path(tmp), 50 if ns.quick else 200)
            print(f"ModelInfer p50 {report['kserve']['kserve_model_infer']['p50_ms']:.2f} ms vs Infer "
                  f"{report['kserve']['edgeflow_v1_infer']['p50_ms']:.2f} ms", flush=True)  # fmt: skip
        if ns.only in (None, "proxy"):
            report["proxy"] = bench_proxy(Path(tmp), 50 if ns.quick else 200)
            print(f"Ray proxy adds {report['proxy']['added_p50_ms']:.2f} ms p50", flush=True)
        if ns.only in (None, "replicas"):
            report["replicas"] = bench_replicas(Path(tmp), 3 if ns.quick else 8, (1, 2, 4))
    report["seconds"] = time.time() - t0
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written {ns.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
