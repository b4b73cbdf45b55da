"""A plain multi-process cloud tier without Ray: an upstream listing several endpoints spreads calls over them
(gRPC ``round_robin``), and ``edgeflow agent --metrics-port`` serves Prometheus metrics."""

from __future__ import annotations

import re
import time
import urllib.request


from edgeflow.agent import AgentClient, serve
from edgeflow.transport import PeerClient


def test_an_upstream_with_two_endpoints_spreads_requests(cloud, tools, make_device_config, images) -> None:  # type: ignore[no-untyped-def]
    second = tools.AgentProcess("cloud", "--metrics-port", "0", plan=tools.LOSSLESS_PLAN)
    try:
        cfg = make_device_config(cloud.address)  # an edge-role config: the device file's model and plan
        cfg = cfg.with_overrides(**{"role": "edge", "listen.address": "127.0.0.1:0",
                                    "upstream.endpoints": [second.address]})  # fmt: skip
        edge = serve(cfg, profile_repeats=0)
        before = {a: PeerClient(a).describe(timeout_s=10).counters.requests for a in (cloud.address, second.address)}
        with AgentClient(edge.address) as client:
            for i in range(8):
                r = client.infer(images[i % 4], timeout_s=60)
                assert r.answered_by == "cloud" and not r.breakdown.fallback
        after = {a: PeerClient(a).describe(timeout_s=10).counters.requests for a in (cloud.address, second.address)}
        served = {a: after[a] - before[a] for a in after}
        assert sum(served.values()) == 8 and min(served.values()) >= 1, served
        edge.shutdown(1.0)
        # the second cloud was started with --metrics-port 0: it printed where
        deadline = time.monotonic() + 30
        while not (m := re.search(r"metrics on (http://\S+/metrics)", "\n".join(second.stdout_tail))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert m, list(second.stdout_tail)
        with urllib.request.urlopen(m.group(1), timeout=10) as resp:
            text = resp.read().decode()
        line = next(l for l in text.splitlines() if l.startswith("edgeflow_requests_total{") and 'code="OK"' in l)
        assert float(line.rsplit(" ", 1)[1]) == served[second.address]
    finally:
        assert second.stop() == 0, second.log
