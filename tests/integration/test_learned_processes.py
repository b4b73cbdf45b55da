"""learned:b20 across real agent processes: edge and cloud load builtin:demo_bottleneck (demo model + bottleneck,
its own fingerprint), the in-process device runs the encoder, the edge process the decoder."""

from __future__ import annotations

import pytest
import torch

from edgeflow.agent import DeviceClient
from edgeflow.agent.loader import builtin_artifact_path

ARTIFACT = "builtin:demo_bottleneck"
PLAN = "device[0:20]|learned:b20 > edge[20:52]|int8 > cloud[52:]"
pytestmark = pytest.mark.skipif(not builtin_artifact_path("demo_bottleneck").exists(), reason="artifact not built")


def test_learned_hop_through_edge_and_cloud_processes(tools) -> None:  # type: ignore[no-untyped-def]
    from edgeflow.agent.loader import load_runtime
    from edgeflow.cli.agent_cmds import read_node_file
    from edgeflow.config import NodeConfig
    from edgeflow.core.codecs import decode
    from edgeflow.core.codecs.learned import LearnedCodec, uninstall_bottlenecks
    from edgeflow.core.data import load_demo_dataset

    cloud = tools.AgentProcess("cloud", plan=PLAN, artifact=ARTIFACT)
    edge = None
    try:
        edge = tools.AgentProcess("edge", upstream=cloud.address, plan=PLAN, artifact=ARTIFACT)
        rt = load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]", "model": {"artifact": ARTIFACT}}))
        x = load_demo_dataset("test")[0][:12]
        p = rt.partition
        head, tail = p.range_module(0, 20), p.range_module(20, p.num_positions)
        cfg = read_node_file(tools.NODES / "device.yaml", upstream=edge.address, plan=PLAN, artifact=ARTIFACT)
        with DeviceClient.from_config(cfg) as device:
            for i in range(len(x)):
                r = device.infer(x[i : i + 1])
                assert [t.tier for t in r.breakdown.tiers] == ["device", "edge", "cloud"]
                with torch.inference_mode():
                    local = tail(decode(LearnedCodec(20).encode(head(x[i : i + 1]))))
                # the edge process decoded what the device encoded: the same answer as the codec in this process
                # (the int8 hop at 52 may move the logits a little, not the class on these images)
                assert int(r.output.argmax(1)) == int(local.argmax(1))
    finally:
        uninstall_bottlenecks()
        if edge is not None:
            assert edge.stop() == 0, edge.log
        assert cloud.stop() == 0, cloud.log
