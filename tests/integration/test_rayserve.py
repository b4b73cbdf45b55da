"""The cloud tier on a real local Ray cluster (``ray.init(num_cpus=2)``) behind Serve's gRPC proxy (docs/RAY.md).

An edge reaches it by changing only its upstream address (plus the ``application`` metadata); the same request
sent again and again is computed once across the replicas (the ledger); KServe clients reach it too; a replica
killed mid-batch loses no request. Skipped, with the reason, only where ray is not installed.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

import numpy as np
import pytest
import torch

pytest.importorskip("ray.serve", reason="the Ray Serve tests need ray[serve] (the test extra, or edgeflow[ray])")

from edgeflow.agent import AgentClient, serve  # noqa: E402
from edgeflow.config import NodeConfig  # noqa: E402
from edgeflow.errors import TransportError  # noqa: E402
from edgeflow.rayserve import RayCloud, start  # noqa: E402
from edgeflow.transport import InferCall, PeerClient, WireTensor  # noqa: E402
from edgeflow.transport.messages import encode_request  # noqa: E402

TINY = "zoo:resnet18?width=4&image_size=16&num_classes=10"
PLAN = "edge[0:20]|lossless > cloud[20:]"


@pytest.fixture(scope="module")
def cloud() -> Iterator[RayCloud]:
    cfg = NodeConfig.from_mapping({
        "role": "cloud", "plan": PLAN, "model": {"artifact": TINY},
        "compute": {"slowdown_factor": 20.0},  # ~0.1 s batches: long enough to kill a replica inside one
        "batching": {"enabled": True, "max_batch_size": 4, "max_queue_delay_microseconds": 5000},
        "ray": {"grpc_port": 0, "num_replicas": 2, "num_cpus": 0.5, "max_ongoing_requests": 8},
    })  # fmt: skip
    c = start(cfg, num_cpus=2)
    yield c
    c.shutdown()


@pytest.fixture(scope="module")
def edge(cloud: RayCloud):  # type: ignore[no-untyped-def]
    cfg = NodeConfig.from_mapping({"role": "edge", "plan": PLAN, "model": {"artifact": TINY},
                                   "upstream": {"address": cloud.address, "metadata": cloud.metadata}})  # fmt: skip
    served = serve(cfg, profile_repeats=0)
    yield served
    served.shutdown(1.0)


def _unsplit(x: torch.Tensor) -> torch.Tensor:
    from edgeflow.agent.loader import load_runtime

    rt = load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]", "model": {"artifact": TINY}}))
    with torch.inference_mode():
        return rt.model(x)


def test_an_edge_reaches_the_serve_cloud_by_its_upstream_address(edge, cloud: RayCloud) -> None:  # type: ignore[no-untyped-def]
    xs = [torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    with AgentClient(edge.address) as client:
        results = list(client.infer_stream(xs, timeout_s=120))
    assert len(results) == 6
    for r in results:
        assert [t.tier for t in r.breakdown.tiers] == ["edge", "cloud"] and not r.breakdown.fallback
    by_id = {r.request_id: r for r in results}
    assert len(by_id) == 6
    # the values are the unsplit model's (lossless hop); equal inputs pipelined together may share a batch
    torch.testing.assert_close(client_result(edge, xs[0]), _unsplit(xs[0]), rtol=0, atol=1e-5)


def client_result(edge, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    with AgentClient(edge.address) as client:
        return client.infer(x, timeout_s=60).output  # type: ignore[return-value]


def test_a_retried_request_is_computed_once_across_replicas(cloud: RayCloud) -> None:
    import ray

    ledger = cloud.ledger()
    before = ray.get(ledger.stats.remote())
    with PeerClient(cloud.address, metadata=cloud.metadata) as peer:
        d = peer.describe(timeout_s=30)
        from edgeflow.core.codecs import get_codec

        x = torch.rand(1, 3, 16, 16)
        call = InferCall("same-id", d.fingerprint, 0, [WireTensor(d.inputs[0][0], "FP32", tuple(x.shape), "lossless",
                                                                  get_codec("lossless").encode(x))])  # fmt: skip
        data = encode_request(call)
        replies = [peer.infer_bytes(data, timeout_s=60) for _ in range(8)]  # Serve spreads them over both replicas
    after = ray.get(ledger.stats.remote())
    assert after["granted"] - before["granted"] == 1  # computed once
    payloads = {bytes(r.tensors[0].payload) for r in replies}
    assert len(payloads) == 1  # every copy got the first computation's reply


def test_kserve_through_the_serve_proxy(cloud: RayCloud) -> None:
    tg = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (the test extra)")
    client = tg.InferenceServerClient(cloud.address)
    headers = cloud.metadata
    assert client.is_model_ready("resnet18", headers=headers)
    meta = client.get_model_metadata("resnet18", headers=headers)
    x = torch.rand(2, 3, 16, 16)
    inp = tg.InferInput(meta.inputs[0].name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x.numpy())
    out = client.infer("resnet18", [inp], headers=headers).as_numpy("output")
    np.testing.assert_allclose(out, _unsplit(x).numpy(), rtol=0, atol=1e-5)
    client.close()


def test_a_replica_killed_mid_batch_loses_no_request(edge, cloud: RayCloud) -> None:  # type: ignore[no-untyped-def]
    import ray

    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True) if "EdgeflowReplica" in a["name"]]
    assert len(replicas) == 2, replicas
    victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
    outcomes: list[object] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            r = AgentClient(edge.address).infer(torch.rand(1, 3, 16, 16), timeout_s=60)
            outcome: object = r.breakdown
        except TransportError as e:  # allowed: a clear status, never silence
            outcome = e
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # requests are in the replicas' batches by now (each batch holds a replica >= 0.1 s)
    ray.kill(victim, no_restart=False)
    for t in threads:
        t.join(90)
    assert len(outcomes) == 8, "a request neither answered nor failed"
    for o in outcomes:
        if isinstance(o, TransportError):
            assert str(o), "a failure must say why"
        elif o.answered_by == "edge":  # type: ignore[attr-defined]
            # the proxy answered INTERNAL for the dead replica's requests; the edge finished them and says why
            assert "died" in o.fallback or "INTERNAL" in o.fallback, o.fallback  # type: ignore[attr-defined]
        else:
            assert o.answered_by == "cloud" and not o.fallback  # type: ignore[attr-defined]
