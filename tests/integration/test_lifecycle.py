"""Fingerprint handshake across processes, and graceful shutdown on SIGTERM."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import yaml

from edgeflow.agent import AgentClient, DeviceClient
from edgeflow.errors import PeerUnavailable
from edgeflow.transport import FingerprintMismatch

OTHER_MODEL = "zoo:resnet18?width=8&image_size=64&num_classes=10"  # not the chain's model


@pytest.fixture(scope="module")
def slow_other_cloud(tools, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A cloud agent serving another model, ~0.3-1 s per request (emulated slowdown), 5 s grace."""
    node = yaml.safe_load((tools.NODES / "cloud.yaml").read_text())
    node["compute"]["slowdown_factor"] = 200.0
    node["deadlines"]["shutdown_grace_s"] = 8.0
    node["plan"] = "cloud[0:]"
    path: Path = tmp_path_factory.mktemp("nodes") / "slow_cloud.yaml"
    path.write_text(yaml.safe_dump(node))
    a = tools.AgentProcess(path, artifact=OTHER_MODEL)
    yield a
    if a.proc.poll() is None:
        a.stop()


def test_chain_with_another_model_is_refused(slow_other_cloud, make_device_config, images) -> None:  # type: ignore[no-untyped-def]
    with DeviceClient.from_config(make_device_config(slow_other_cloud.address, "device[0:20]|int8 > cloud[20:]")) as device:
        with pytest.raises(FingerprintMismatch) as err:
            device.infer(images[0])
    message = str(err.value)
    assert "fingerprint mismatch" in message and device.agent.fingerprint in message


def test_sigterm_finishes_in_flight_requests_then_exits(slow_other_cloud, images) -> None:  # type: ignore[no-untyped-def]
    client = AgentClient(slow_other_cloud.address)
    client.describe()
    results: list[object] = []

    def run() -> None:
        try:
            results.append(client.infer(images[0], timeout_s=30))
        except Exception as e:  # collected and checked below
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # all three are in flight: one computing, two queued
    slow_other_cloud.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    with pytest.raises(PeerUnavailable):
        AgentClient(slow_other_cloud.address).infer(images[0], timeout_s=10)
    for t in threads:
        t.join(30)
    assert slow_other_cloud.proc.wait(30) == 0
    assert all(getattr(r, "answered_by", None) == "cloud" for r in results), results
    assert "draining" in slow_other_cloud.log and "all requests finished" in slow_other_cloud.log
    client.close()
