"""Scenario tests run the ``edgeflow run`` CLI as a subprocess, with real agent processes, CI-sized.

``python -m edgeflow.cli.run_cmd`` is the command on its own, so these tests do not depend on where the main
``edgeflow`` app mounts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def run_cli(*args: str, timeout_s: float = 150.0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "edgeflow.cli.run_cmd", "run", *args]
    return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout_s)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (agents carry their node file's path)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append(f"{d.name}: {cmd}")
    return found


def load_report(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    return summary, records


METRIC_FIELDS = ("requests", "answered", "lost", "duplicated", "latency_ms", "accuracy", "agreement",
                 "bytes_per_request", "plan_switches", "deadline_miss_rate")


def check_invariants(summary: dict[str, Any], records: list[dict[str, Any]], requests: int, baselines: list[str]) -> None:
    """What every report must satisfy, for edgeflow and for each baseline."""
    for m in [summary, *summary["baselines"].values()]:
        for f in METRIC_FIELDS:
            assert f in m, f
        assert m["requests"] == requests
        assert m["answered"] + m["lost"] == m["requests"]
        assert m["duplicated"] == 0
        assert set(m["latency_ms"]) == {"p50", "p95", "p99", "mean"}
        if m["answered"]:
            assert 0 < m["latency_ms"]["p50"] <= m["latency_ms"]["p95"] <= m["latency_ms"]["p99"]
            assert 0.0 <= m["agreement"] <= 1.0
    assert sorted(summary["baselines"]) == sorted(baselines)
    assert sorted(summary["ratios"]) == sorted(baselines)
    by_run: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_run.setdefault(r["run"], []).append(r)
    for run, recs in by_run.items():
        assert len(recs) == requests, run
        assert len({r["id"] for r in recs}) == requests, run  # no duplicated ids
        assert sorted(r["index"] for r in recs) == list(range(requests))
        for r in recs:
            assert r["status"] in ("answered", "lost")
            if r["status"] == "answered":
                assert r["plan"] and r["stages"] and set(r["bytes"]) == {"device_edge", "edge_cloud"}
                assert r["latency_ms"] > 0 and isinstance(r["correct"], bool)
            else:
                assert r["error"]
    assert "edgeflow" in by_run
