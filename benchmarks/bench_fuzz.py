"""Fuzz benchmark: many hostile messages against one live cloud agent; counts per status and peak memory.

    python benchmarks/bench_fuzz.py                  # ~50,000 messages, writes benchmarks/results/fuzz.json
    python benchmarks/bench_fuzz.py --calls 4000     # a smoke run

The same classes and checks as ``tests/integration/test_fuzz.py`` (``edgeflow.testing.fuzz``), more of them:
the agent (a child process, 1 MiB message limit, serving a short range) must answer every message with a
precise status and keep serving valid requests; its VmRSS/VmHWM are read from /proc before and after.
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
from edgeflow.testing.fuzz import FuzzTarget, fuzz_agent  # noqa: E402
from edgeflow.scenario.procs import AgentProcess, child_env  # noqa: E402

PLAN = "device[0:20]|lossless > edge[20:52]|lossless > cloud[52:]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=38_000, help="calls (stream calls carry several messages)")
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuzz.json")
    args = ap.parse_args()

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
