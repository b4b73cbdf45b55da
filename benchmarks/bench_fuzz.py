"""Fuzz benchmark: many hostile messages against one live cloud agent; counts per status and peak memory.

    python benchmarks/bench_fuzz.py                  # ~50,000 messages, writes benchmarks/results/fuzz.json
    python benchmarks/bench_fuzz.py --calls 4000     # a smoke run
    python benchmarks/bench_fuzz.py --upstream       # every lie of a hostile upstream, writes fuzz_upstream.json

The same classes and checks as ``tests/integration/test_fuzz.py`` (``edgeflow.testing.fuzz``), more of them:
the agent (a child process, 1 MiB message limit, serving a short range) must answer every message with a
precise status and keep serving valid requests; its VmRSS/VmHWM are read from /proc before and after.

``--upstream``: the other direction (``edgeflow.testing.lying``). A cloud agent process behind a
:class:`LyingUpstream` in this process; a device agent process calling the liar directly, and a second one calling
an edge agent process that calls the liar. Every lie (``LIES``, ``--repeats`` times each) is told to both paths; each
answer must come from the device (direct) or the edge (relayed) by a fallback naming the bad reply and equal the
unsplit model's; health must answer SERVING after each; the device and edge processes' VmHWM growth is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from edgeflow.agent.loader import load_runtime  # noqa: E402
from edgeflow.config import NodeConfig  # noqa: E402
from edgeflow.testing.fuzz import FuzzTarget, fuzz_agent, read_memory_kib  # noqa: E402
from edgeflow.scenario.procs import AgentProcess, child_env  # noqa: E402

PLAN = "device[0:20]|lossless > edge[20:52]|lossless > cloud[52:]"


def upstream_main(args: argparse.Namespace) -> None:
    import grpc
    import torch
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from edgeflow.agent.client import AgentClient
    from edgeflow.testing.lying import LIES, LyingUpstream

    to_cloud = "device[0:20]|lossless > cloud[20:]"
    runtime = load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]"}))
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(args.seed))
    with torch.inference_mode():
        ref = runtime.model(x)
    results: dict[str, dict[str, int]] = {}
    env = child_env(OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        procs: list[AgentProcess] = []

        def start(name: str, node: str, **kw: object) -> AgentProcess:
            a = AgentProcess(name, REPO / "nodes" / f"{node}.yaml", port=0, profile_repeats=1, env=env, cwd=REPO,
                             log_path=Path(tmp) / f"{name}.log", **kw)  # type: ignore[arg-type]  # fmt: skip
            procs.append(a)
            a.wait_ready(120)
            return a

        try:
            cloud = start("cloud", "cloud", plan=PLAN)
            liar = LyingUpstream(cloud.address)
            edge = start("edge", "edge", upstream=liar.address, plan=PLAN)
            direct = start("device-direct", "device", upstream=liar.address, plan=to_cloud)
            relayed = start("device-relayed", "device", upstream=edge.address, plan=PLAN)
            paths = {"direct": (direct, "device"), "relayed": (relayed, "edge")}
            clients = {k: AgentClient(a.address) for k, (a, _) in paths.items()}
            for k, c in clients.items():  # warm: honest answers through every tier
                c.infer(x)
            base = {a.name: read_memory_kib(a.pid)["VmHWM"] for a in (direct, relayed, edge)}
            for name, lie in sorted(LIES.items()):
                liar.lie = lie
                r = results.setdefault(name, {"told": 0, "fell_back_exact": 0, "wrong_accepted": 0, "errors": 0,
                                              "health_failures": 0})  # fmt: skip
                for _ in range(args.repeats):
                    for k, (agent, by) in paths.items():
                        r["told"] += 1
                        try:
                            got = clients[k].infer(x, timeout_s=60)
                        except Exception as e:  # noqa: BLE001 - counted: a lie must end in a fallback, not an error
                            r["errors"] += 1
                            print(f"  {name} ({k}): {type(e).__name__}: {e}", file=sys.stderr)
                            continue
                        ok = got.breakdown.answered_by == by and "bad reply" in got.breakdown.fallback
                        same = torch.allclose(got.output, ref, rtol=1e-5, atol=1e-5)
                        r["fell_back_exact"] += int(ok and same)
                        r["wrong_accepted"] += int(not ok)
                        with grpc.insecure_channel(agent.address) as ch:
                            status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=30)
                        r["health_failures"] += int(status.status != health_pb2.HealthCheckResponse.SERVING)
            growth = {a.name: round((read_memory_kib(a.pid)["VmHWM"] - base[a.name]) / 1024, 2)
                      for a in (direct, relayed, edge)}  # fmt: skip
            for c in clients.values():
                c.close()
            liar.close()
        finally:
            codes = {a.name: a.stop() for a in reversed(procs)}
            tracebacks = {a.name: a.log.count("Traceback") for a in procs}
    totals = {k: sum(r[k] for r in results.values()) for k in ("told", "fell_back_exact", "wrong_accepted", "errors",
                                                                "health_failures")}  # fmt: skip
    out = {
        "benchmark": "bench_fuzz --upstream",
        "command": "python benchmarks/bench_fuzz.py --upstream " + f"--repeats {args.repeats}",
        "host": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "lies": len(results),
        "totals": totals,
        "peak_rss_growth_mb": growth,
        "exit_codes": codes,
        "tracebacks": tracebacks,
        "by_lie": results,
    }
    path = args.out if args.out.name != "fuzz.json" else args.out.with_name("fuzz_upstream.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: out[k] for k in ("lies", "totals", "peak_rss_growth_mb", "exit_codes", "tracebacks")}))
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=38_000, help="calls (stream calls carry several messages)")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuzz.json")
    ap.add_argument("--upstream", action="store_true", help="a hostile upstream's lies instead (see the module doc)")
    ap.add_argument("--repeats", type=int, default=2, help="--upstream: times each lie is told to each path")
    args = ap.parse_args()
    if args.upstream:
        upstream_main(args)
        return

    max_message_bytes = 1 << 20
    node = yaml.safe_load((REPO / "nodes" / "cloud.yaml").read_text())
    node["limits"] = {"max_message_mb": 1, "max_tensors": 32}
    node["queues"] = {"compute": 64, "inflight": 8, "workers": 16}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cloud.yaml"
        path.write_text(yaml.safe_dump(node))
        agent = AgentProcess("cloud", path, port=0, plan=PLAN, profile_repeats=1, log_path=Path(tmp) / "cloud.log",
                             env=child_env(OMP_NUM_THREADS="1"), cwd=REPO)  # fmt: skip
        try:
            agent.wait_ready(120)
            runtime = load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]"}))
            target = FuzzTarget.from_runtime(runtime, max_message_bytes=max_message_bytes)
            report = fuzz_agent(agent.address, target, calls=args.calls, seed=args.seed, threads=args.threads,
                                pid=agent.proc.pid,
                                on_progress=lambda r: print(f"  {r.messages} messages", file=sys.stderr))  # fmt: skip
        finally:
            code = agent.stop()
            log = agent.log
    result = {
        "benchmark": "fuzz",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "agent": {"role": "cloud", "plan": PLAN, "max_message_bytes": max_message_bytes, "exit_code": code,
                  "tracebacks_in_log": log.count("Traceback")},  # fmt: skip
        "seed": args.seed,
        **report.to_json(),
    }
    mem = report.memory_kib
    if mem:
        result["peak_rss_growth_mib"] = round((mem["end_VmHWM"] - mem["start_VmRSS"]) / 1024, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("by_kind",)}, indent=1))
    if report.failures or code != 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
