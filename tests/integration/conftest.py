"""Real agent processes on 127.0.0.1, port 0, started through the CLI and shared across the session.

The shipped node files are used with command-line overrides (port 0, upstream address, plan). The model
is the demo artifact when it is present, else a seeded zoo model of the same architecture.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

from edgeflow.agent.loader import builtin_artifact_path
from edgeflow.errors import ScenarioError
from edgeflow.scenario import procs

REPO = Path(__file__).resolve().parents[2]
NODES = REPO / "nodes"
ARTIFACT = (
    "builtin:demo" if builtin_artifact_path("demo").exists() else "zoo:resnet18?width=16&image_size=64&num_classes=10"
)
LOSSLESS_PLAN = "device[0:20]|lossless > edge[20:52]|lossless > cloud[52:]"
START_TIMEOUT_S = 90.0


def edgeflow_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeflow", *args]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


class AgentProcess(procs.AgentProcess):
    """``edgeflow agent`` in a subprocess (:class:`edgeflow.scenario.procs.AgentProcess`) with the test defaults:
    a shipped node file by name, port 0, the test artifact; waits until it listens (:attr:`address`)."""

    def __init__(self, node: str | Path, *extra: str, port: int = 0, upstream: str | None = None,
                 plan: str | None = None, artifact: str = ARTIFACT):
        path = node if isinstance(node, Path) else NODES / f"{node}.yaml"
        super().__init__(path.stem, path, *extra, port=port, upstream=upstream, plan=plan, artifact=artifact,
                         profile_repeats=1, env=env(), cwd=REPO)  # fmt: skip
        try:
            self.wait_ready(START_TIMEOUT_S)
        except ScenarioError as e:
            self.stop(5.0)
            raise RuntimeError(f"{self.name} agent did not start: {e}\n{self.log}") from None

    def stop(self, timeout_s: float = 20.0) -> int:  # type: ignore[override]
        """SIGTERM, wait ``timeout_s``, then SIGKILL; returns the exit code."""
        code = super().stop(grace_s=timeout_s)
        assert code is not None
        return code


@pytest.fixture(scope="session")
def cloud() -> Iterator[AgentProcess]:
    a = AgentProcess("cloud", plan=LOSSLESS_PLAN)
    yield a
    assert a.stop() == 0, a.log


@pytest.fixture(scope="session")
def edge(cloud: AgentProcess) -> Iterator[AgentProcess]:
    a = AgentProcess("edge", upstream=cloud.address, plan=LOSSLESS_PLAN)
    yield a
    assert a.stop() == 0, a.log


@pytest.fixture(scope="session")
def runtime():  # type: ignore[no-untyped-def]
    """The same model, loaded in the test process: the unsplit reference."""
    from edgeflow.agent.loader import load_runtime
    from edgeflow.config import NodeConfig

    return load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]", "model": {"artifact": ARTIFACT}}))


def device_config(upstream: str, plan: str = LOSSLESS_PLAN):  # type: ignore[no-untyped-def]
    from edgeflow.cli.agent_cmds import read_node_file

    return read_node_file(NODES / "device.yaml", upstream=upstream, plan=plan, artifact=ARTIFACT)


@pytest.fixture(scope="session")
def make_device_config():  # type: ignore[no-untyped-def]
    return device_config


@pytest.fixture(scope="session")
def images():  # type: ignore[no-untyped-def]
    """Four demo-sized images (B=1 each) and a batch of 3."""
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.rand(1, 3, 64, 64, generator=g) for _ in range(4)] + [torch.rand(3, 3, 64, 64, generator=g)]


@pytest.fixture(scope="session")
def tools():  # type: ignore[no-untyped-def]
    """Helpers for tests that start their own processes."""
    import types

    return types.SimpleNamespace(
        AgentProcess=AgentProcess, edgeflow_cmd=edgeflow_cmd, env=env, REPO=REPO, NODES=NODES, ARTIFACT=ARTIFACT,
        LOSSLESS_PLAN=LOSSLESS_PLAN,
    )
