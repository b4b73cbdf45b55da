"""A tiny model runtime and in-process agent chains (LoopbackClient: real wire encoding, no sockets)."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest
import torch

from edgeflow.agent import Agent, ModelRuntime, Upstream
from edgeflow.config import NodeConfig
from edgeflow.core.exits import ExitHead, ExitSpec
from edgeflow.core.zoo import build_model
from edgeflow.transport import LoopbackClient

EXIT_AT = 20  # after layer1 of the zoo ResNet-18


def confident_head(channels: int, cls: int, confident: bool) -> ExitHead:
    """An exit head that always predicts ``cls``, with confidence ~1 (or 0.1, uniform, if not confident)."""
    head = ExitHead(ExitSpec(EXIT_AT, channels, 10))
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.zero_()
        if confident:
            head.fc.bias[cls] = 50.0
    return head.eval()


@pytest.fixture(scope="session")
def runtime() -> ModelRuntime:
    torch.manual_seed(0)
    model = build_model("resnet18", width=4, num_classes=10, image_size=16)
    rt = ModelRuntime(model, torch.rand(1, 3, 16, 16), max_batch=8)
    info = rt.cut_info(EXIT_AT)
    rt.exits[EXIT_AT] = confident_head(info.tensors[info.primary].shape[1], 3, confident=True)
    return rt


def node(role: str, plan: str, upstream: bool, **sections: dict) -> NodeConfig:
    data: dict = {"role": role, "plan": plan, **sections}
    if upstream:
        data["upstream"] = {"address": "loopback:1"}  # the Upstream object decides where calls go
    return NodeConfig.from_mapping(data)


ChainFactory = Callable[..., list[Agent]]


@pytest.fixture
def exit_at() -> int:
    return EXIT_AT


@pytest.fixture
def make_head() -> Callable[..., ExitHead]:
    return confident_head


@pytest.fixture
def make_node() -> Callable[..., NodeConfig]:
    return node


@pytest.fixture
def chain(runtime: ModelRuntime) -> Iterator[ChainFactory]:
    """``chain("device[0:20]|lossless > cloud[20:]", roles=("device", "cloud"))`` -> agents, first = entry."""
    made: list[Agent] = []

    def build(plan: str, roles: tuple[str, ...] | None = None, **sections: dict) -> list[Agent]:
        roles = roles or tuple(s.split("[")[0].strip() for s in plan.split("exits@")[0].split(">"))
        agents: list[Agent] = []
        upstream_agent: Agent | None = None
        for role in reversed(roles):
            upstream = None
            if upstream_agent is not None:
                upstream = Upstream(LoopbackClient(upstream_agent, address=f"{upstream_agent.role}-loopback"),
                                    fingerprint=runtime.fingerprint, role=role, connect_s=1.0)
            cfg = node(role, plan, upstream is not None, **sections)
            agent = Agent(cfg, runtime, upstream=upstream, profile_repeats=0)
            agents.insert(0, agent)
            made.append(agent)
            upstream_agent = agent
        return agents

    yield build
    for a in made:
        a.close()
