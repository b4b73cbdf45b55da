"""Two- and three-tier chains of real agent processes give the unsplit model's output."""

from __future__ import annotations

import gc
import json
import subprocess

import numpy as np
import pytest
import torch

from edgeflow.agent import AgentClient, DeviceClient



def _ref(runtime, x):  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        return runtime.model(x)


def test_three_tier_lossless_is_bit_exact(edge, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    with DeviceClient.from_config(make_device_config(edge.address)) as device:
        assert gc.get_freeze_count() > 100_000  # start-up objects out of full collections (torch alone: ~165k)
        for x in images:
            r = device.infer(x)
            assert torch.equal(r.output, _ref(runtime, x))
            assert [t.tier for t in r.breakdown.tiers] == ["device", "edge", "cloud"]
            assert r.answered_by == "cloud"
    assert gc.get_freeze_count() == 0  # and back in once the client is closed


def test_two_tier_lossless_is_bit_exact(cloud, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    with DeviceClient.from_config(make_device_config(cloud.address, "device[0:36]|lossless > cloud[36:]")) as device:
        x = images[-1]
        r = device.infer(x)
        assert torch.equal(r.output, _ref(runtime, x))
        assert [(t.tier, t.start, t.stop) for t in r.breakdown.tiers] == [("device", 0, 36), ("cloud", 36, runtime.num_positions)]


def test_lossy_hop_stays_within_bound(edge, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    plan = "device[0:20]|int8 > edge[20:52]|lossless > cloud[52:]"
    with DeviceClient.from_config(make_device_config(edge.address, plan)) as device:
        x = torch.cat(images[:4])
        r = device.infer(x)
        ref = _ref(runtime, x)
        assert (r.output - ref).abs().max() <= 0.05 * ref.abs().max() + 1e-3
        assert (r.output.argmax(1) == ref.argmax(1)).float().mean() >= 0.75
        lossless = DeviceClient.from_config(make_device_config(edge.address))
        try:
            assert r.breakdown.tiers[0].bytes_out < lossless.infer(x).breakdown.tiers[0].bytes_out
        finally:
            lossless.close()


def test_pipelined_stream_through_three_processes(edge, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    with DeviceClient.from_config(make_device_config(edge.address)) as device:
        xs = images[:4] * 3
        outs = [r.output for r in device.infer_many(xs)]
    # edge and cloud batch concurrent requests (nodes/*.yaml): a batched conv may differ from batch 1 in the last ulp
    assert all(torch.allclose(o, _ref(runtime, x), rtol=0, atol=1e-5) for o, x in zip(outs, xs))


def test_early_exit_answers_on_the_device(edge, runtime, images, make_device_config) -> None:  # type: ignore[no-untyped-def]
    if not runtime.exits:
        pytest.skip("model has no exit heads")
    pos = min(runtime.exits)
    plan = f"device[0:{max(pos, 20)}]|lossless > edge[{max(pos, 20)}:52]|lossless > cloud[52:]  exits@{pos}:1e-06"
    with DeviceClient.from_config(make_device_config(edge.address, plan)) as device:
        r = device.infer(images[0])
    assert r.answered_by == "device" and r.exit_position == pos
    assert [t.tier for t in r.breakdown.tiers] == ["device"]


@pytest.fixture(scope="module")
def device_agent(edge, tools):  # type: ignore[no-untyped-def]
    a = tools.AgentProcess("device", upstream=edge.address, plan=tools.LOSSLESS_PLAN)
    yield a
    assert a.stop() == 0, a.log


def test_device_agent_serves_inputs_over_grpc(device_agent, runtime, images) -> None:  # type: ignore[no-untyped-def]
    with AgentClient(device_agent.address) as client:
        x = images[1]
        r = client.infer(x, timeout_s=30)
        assert torch.equal(r.output, _ref(runtime, x))
        assert [t.tier for t in r.breakdown.tiers] == ["device", "edge", "cloud"]
        results = list(client.infer_stream(images[:4], timeout_s=60))
        assert len(results) == 4 and all(r.answered_by == "cloud" for r in results)


def test_cli_infer_prints_result_and_breakdown(device_agent, edge, tmp_path, tools) -> None:  # type: ignore[no-untyped-def]
    t = tools
    arr = tmp_path / "x.npy"
    np.save(arr, np.random.default_rng(0).random((1, 3, 64, 64), dtype=np.float32))
    via = subprocess.run(t.edgeflow_cmd("infer", "--via", device_agent.address, "--input", str(arr), "--json"),
                         cwd=t.REPO, env=t.env(), capture_output=True, text=True, timeout=120)
    assert via.returncode == 0, via.stderr
    data = json.loads(via.stdout)
    assert data["answered_by"] == "cloud" and [t["tier"] for t in data["tiers"]] == ["device", "edge", "cloud"]
    assert all(t["bytes_in"] > 0 for t in data["tiers"]) and len(data["prediction"]) == 1
    from PIL import Image

    png = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(1).random((40, 30, 3)) * 255).astype(np.uint8)).save(png)
    table = subprocess.run(t.edgeflow_cmd("infer", "--node", str(t.NODES / "device.yaml"), "--upstream", edge.address,
                                          "--artifact", t.ARTIFACT, "--input", str(png)),
                           cwd=t.REPO, env=t.env(), capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "answered by: cloud" in table.stdout and "per-tier breakdown" in table.stdout
