"""A served agent in process: shutdown with too short a grace fails in-flight requests explicitly."""

from __future__ import annotations

import threading
import time

import torch

from edgeflow.agent import AgentClient, serve
from edgeflow.config import NodeConfig
from edgeflow.errors import TransportError

TINY = "zoo:resnet18?width=4&image_size=16&num_classes=10"


def test_short_grace_fails_in_flight_requests_explicitly() -> None:
    cfg = NodeConfig.from_mapping({
        "role": "cloud", "plan": "cloud[0:]", "model": {"artifact": TINY},
        "compute": {"slowdown_factor": 1000.0}, "deadlines": {"shutdown_grace_s": 0.1},
    })
    served = serve(cfg, profile_repeats=0)
    client = AgentClient(served.address)
    client.describe()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            client.infer(torch.rand(1, 3, 16, 16), timeout_s=30)
        except TransportError as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert served.shutdown(0.1) is False  # one computing, one queued: neither finishes in 0.1 s
    assert time.monotonic() - t0 < 5
    for t in threads:
        t.join(10)
    assert len(errors) == 2, errors
    client.close()
