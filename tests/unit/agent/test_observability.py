"""Served agents in process: Prometheus /metrics counts what happened, and one request's spans across tiers share
one trace (the context travels in gRPC metadata)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import torch

from edgeflow.agent import AgentClient, serve
from edgeflow.config import NodeConfig
from edgeflow.errors import RemoteError
from edgeflow.transport.tracing import Tracer, current_trace_id

TINY = "zoo:resnet18?width=4&image_size=16&num_classes=10"


def _node(role: str, plan: str, tmp: Path, upstream: str | None = None, trace: bool = True) -> NodeConfig:
    data = {"role": role, "plan": plan, "model": {"artifact": TINY}, "metrics": {"port": 0},
            "tracing": {"enabled": trace, "exporter": "jsonl", "path": str(tmp / "spans.jsonl")}}  # fmt: skip
    if upstream:
        data["upstream"] = {"address": upstream}
    return NodeConfig.from_mapping(data)


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        return r.read().decode()


def _value(text: str, name: str, **labels: str) -> float:
    want = [f'{k}="{v}"' for k, v in labels.items()]
    for line in text.splitlines():
        if line.startswith(name + "{") and all(w in line for w in want):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in /metrics:\n{text[:3000]}")


def test_metrics_and_one_trace_across_tiers(tmp_path: Path) -> None:
    plan = "edge[0:20]|lossless > cloud[20:]"
    cloud = serve(_node("cloud", plan, tmp_path), profile_repeats=0)
    edge = serve(_node("edge", plan, tmp_path, upstream=cloud.address), profile_repeats=0)
    tracer = Tracer.create("test-device", exporter="jsonl", path=tmp_path / "spans.jsonl")
    try:
        client = AgentClient(edge.address)
        with tracer.span("request"):
            trace_id = current_trace_id()
            client.infer(torch.rand(1, 3, 16, 16), timeout_s=30)
        client.infer(torch.rand(2, 3, 16, 16), timeout_s=30)
        with pytest.raises(RemoteError):  # a refused request is counted with its status
            client.peer.infer_bytes(b"\xff", timeout_s=10)
        client.close()
        assert edge.metrics_address is not None and cloud.metrics_address is not None
        text = _scrape(edge.metrics_address)
        assert _value(text, "edgeflow_requests_total", role="edge", rpc="Infer", code="OK") == 2
        assert _value(text, "edgeflow_requests_total", role="edge", rpc="Infer", code="INVALID_ARGUMENT") == 1
        assert _value(text, "edgeflow_stage_seconds_count", role="edge", stage="compute") == 2
        assert _value(text, "edgeflow_hop_bytes_count", role="edge", direction="out") == 2
        assert _value(text, "edgeflow_batch_size_sum", role="edge") == 3  # samples: 1 + 2
        for name in ("edgeflow_fallbacks_total", "edgeflow_shed_total", "edgeflow_plan_switches_total",
                     "edgeflow_queue_depth", "edgeflow_inflight"):  # fmt: skip
            assert _value(text, name, role="edge") == 0
        cloud_text = _scrape(cloud.metrics_address)
        assert _value(cloud_text, "edgeflow_requests_total", role="cloud", rpc="Infer", code="OK") == 2
    finally:
        tracer.close()
        edge.shutdown(1.0)
        cloud.shutdown(1.0)
    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    mine = [s for s in spans if s["trace_id"] == trace_id]
    by_service = {s["service"]: s for s in mine}
    assert set(by_service) == {"test-device", "edgeflow-edge", "edgeflow-cloud"}, mine
    # device -> edge -> cloud: each tier's span is a child of the one below it
    assert by_service["edgeflow-edge"]["parent_span_id"] == by_service["test-device"]["span_id"]
    assert by_service["edgeflow-cloud"]["parent_span_id"] == by_service["edgeflow-edge"]["span_id"]
    assert by_service["edgeflow-cloud"]["attributes"]["edgeflow.start"] == 20


def test_an_untraced_middle_tier_passes_the_context_on(tmp_path: Path) -> None:
    plan = "edge[0:20]|lossless > cloud[20:]"
    cloud = serve(_node("cloud", plan, tmp_path), profile_repeats=0)
    edge = serve(_node("edge", plan, tmp_path, upstream=cloud.address, trace=False), profile_repeats=0)
    tracer = Tracer.create("test-device", exporter="jsonl", path=tmp_path / "spans.jsonl")
    try:
        with AgentClient(edge.address) as client, tracer.span("request"):
            trace_id = current_trace_id()
            client.infer(torch.rand(1, 3, 16, 16), timeout_s=30)
    finally:
        tracer.close()
        edge.shutdown(1.0)
        cloud.shutdown(1.0)
    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    assert {s["service"] for s in spans if s["trace_id"] == trace_id} == {"test-device", "edgeflow-cloud"}


def test_a_device_counts_its_replies_and_fallbacks() -> None:
    from edgeflow.agent import DeviceClient

    cfg = NodeConfig.from_mapping({
        "role": "device", "plan": "device[0:20]|lossless > cloud[20:]", "model": {"artifact": TINY},
        "upstream": {"address": "127.0.0.1:1"}, "deadlines": {"connect_s": 0.3}, "metrics": {"port": 0},
    })  # fmt: skip
    with DeviceClient.from_config(cfg) as device:
        r = device.infer(torch.rand(1, 3, 16, 16), timeout_s=30)
        assert r.breakdown.fallback.startswith("device:")  # nobody at the upstream: finished here
        assert device.metrics is not None
        text = device.metrics.text()
    assert _value(text, "edgeflow_requests_total", role="device", rpc="local", code="OK") == 1
    assert _value(text, "edgeflow_fallbacks_total", role="device") == 1
