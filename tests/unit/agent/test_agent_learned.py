"""learned:b20 on a real agent chain: both tiers load the bottleneck artifact (builtin:demo_bottleneck), the device
runs the encoder, the cloud the decoder; an agent on the plain demo artifact refuses such a payload."""

from __future__ import annotations

from typing import Any, Iterator

import pytest
import torch

from edgeflow.agent import Agent, DeviceClient, ModelRuntime, Upstream
from edgeflow.config import NodeConfig
from edgeflow.core.codecs import decode
from edgeflow.core.codecs.learned import LearnedCodec, installed_bottlenecks, uninstall_bottlenecks
from edgeflow.core.data import DEMO_WEIGHTS
from edgeflow.errors import CodecError
from edgeflow.transport import LoopbackClient

ARTIFACT = DEMO_WEIGHTS.with_name("demo_bottleneck.safetensors")
pytestmark = pytest.mark.skipif(not ARTIFACT.is_file(), reason="demo_bottleneck.safetensors not built")


@pytest.fixture(scope="module")
def bn_runtime() -> Iterator[ModelRuntime]:
    from edgeflow.agent.loader import load_runtime

    rt = load_runtime(NodeConfig.from_mapping(
        {"role": "cloud", "plan": "cloud[0:]", "model": {"artifact": "builtin:demo_bottleneck"}}))
    yield rt
    uninstall_bottlenecks()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from edgeflow.core.data import load_demo_dataset

    return load_demo_dataset("test")[0][:24]


@pytest.fixture
def chain(bn_runtime: ModelRuntime) -> Iterator[Any]:
    made: list[Agent] = []

    def make(plan: str) -> Agent:
        cloud = Agent(NodeConfig.from_mapping({"role": "cloud", "plan": plan}), bn_runtime, profile_repeats=0)
        up = Upstream(LoopbackClient(cloud, address="cloud-loopback"), fingerprint=bn_runtime.fingerprint,
                      role="device", connect_s=1.0)
        node = {"role": "device", "plan": plan, "upstream": {"address": "loopback:1"}}
        device = Agent(NodeConfig.from_mapping(node), bn_runtime, upstream=up, profile_repeats=0)
        made.extend([device, cloud])
        return device

    yield make
    for a in made:
        a.close()


def test_a_learned_hop_answers_as_the_bottleneck_and_sends_fewest_bytes(
    chain: Any, bn_runtime: ModelRuntime, images: torch.Tensor
) -> None:
    assert [c for _, c in installed_bottlenecks() if _ == bn_runtime.fingerprint] == [20]
    p = bn_runtime.partition
    head, tail = p.range_module(0, 20), p.range_module(20, p.num_positions)
    codec = LearnedCodec(20)
    sent: dict[str, int] = {}
    for spec in ("int8", "dct:d15", "learned:b20"):
        device = chain(f"device[0:20]|{spec} > cloud[20:]")
        client = DeviceClient(device)
        answers = []
        for i in range(len(images)):
            r = client.infer(images[i : i + 1])
            assert r.answered_by == "cloud"
            answers.append(int(r.output.argmax(1)))
            sent[spec] = sent.get(spec, 0) + r.breakdown.tiers[0].bytes_out
        if spec == "learned:b20":
            with torch.inference_mode():
                local = [int(tail(decode(codec.encode(head(images[i : i + 1])))).argmax(1)) for i in range(len(images))]
                unsplit = bn_runtime.model(images).argmax(1).tolist()
            assert answers == local  # the chain's answer is the bottleneck's, request by request
            assert sum(a == u for a, u in zip(answers, unsplit)) >= 0.9 * len(images)
    assert sent["learned:b20"] < sent["dct:d15"] < sent["int8"]


def test_a_tier_without_the_bottleneck_refuses_its_payload(bn_runtime: ModelRuntime, images: torch.Tensor) -> None:
    with torch.inference_mode():
        act = bn_runtime.partition.range_module(0, 20)(images[:1])
    payload = LearnedCodec(20).encode(act)
    fp = bn_runtime.fingerprint
    saved = {c: b for (f, c), b in _installed(fp)}
    uninstall_bottlenecks(fp)  # as on a tier that loaded the plain demo artifact
    try:
        with pytest.raises(CodecError, match="encoded by artifact"):
            decode(payload)
    finally:
        from edgeflow.core.codecs.learned import install_bottlenecks

        install_bottlenecks(fp, saved)


def _installed(fp: str) -> list[tuple[tuple[str, int], Any]]:
    from edgeflow.core.codecs import learned

    with learned._LOCK:
        return [(k, b) for k, b in learned._INSTALLED.items() if k[0] == fp]
