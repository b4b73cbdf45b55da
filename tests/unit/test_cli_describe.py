"""`edgeflow describe` against an agent served in process: what it serves, its counters, and an unreachable address."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from edgeflow.agent import AgentClient, ServedAgent, serve
from edgeflow.cli.main import app
from edgeflow.config import NodeConfig

TINY = "zoo:resnet18?width=4&image_size=16&num_classes=10"
runner = CliRunner()


@pytest.fixture(scope="module")
def cloud() -> Iterator[ServedAgent]:
    cfg = NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]", "model": {"artifact": TINY}})
    served = serve(cfg, profile_repeats=0)
    with AgentClient(served.address) as client:
        client.infer(torch.rand(1, 3, 16, 16), timeout_s=30)
    yield served
    served.shutdown(1.0)


def test_describe_prints_role_plan_and_counters(cloud: ServedAgent) -> None:
    r = runner.invoke(app, ["describe", cloud.address])
    assert r.exit_code == 0, r.output
    assert f"cloud agent at {cloud.address}" in r.output and f"plan: {cloud.agent.plan}" in r.output
    assert f"model: {cloud.agent.fingerprint}" in r.output and "upstream: none" in r.output
    assert "requests: 1  fallbacks: 0  duplicates served: 0  shed: 0" in r.output
    assert "last fallback" not in r.output


def test_describe_json(cloud: ServedAgent) -> None:
    r = runner.invoke(app, ["describe", cloud.address, "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["role"] == "cloud" and data["plan"] == str(cloud.agent.plan) == "cloud[0:70]" and data["upstream"] == ""
    assert data["fingerprint"] == cloud.agent.fingerprint and data["version"]
    assert data["counters"] == {"requests": 1, "fallbacks": 0, "duplicates_served": 0, "shed": 0, "last_fallback": ""}


def test_unreachable_agent_is_a_cli_error() -> None:
    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = runner.invoke(app, ["describe", f"127.0.0.1:{port}", "--timeout", "0.5"])
    assert r.exit_code == 2
    assert "PeerUnavailable" in r.output and f"127.0.0.1:{port}" in r.output and "not reachable" in r.output


def test_describe_shows_the_last_fallback() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    cfg = NodeConfig.from_mapping({
        "role": "edge", "plan": "edge[0:13]|lossless > cloud[13:]", "model": {"artifact": TINY},
        "upstream": {"address": dead}, "deadlines": {"connect_s": 0.3},  # the handshake gives up soon: fall back
    })
    edge = serve(cfg, profile_repeats=0)
    try:
        with AgentClient(edge.address) as client:
            assert client.infer(torch.rand(1, 3, 16, 16), timeout_s=30).breakdown.fallback_tier == "edge"
        r = runner.invoke(app, ["describe", edge.address])
    finally:
        edge.shutdown(1.0)
    assert r.exit_code == 0, r.output
    assert f"upstream: {dead}" in r.output and "requests: 1  fallbacks: 1" in r.output
    assert f"last fallback: edge: upstream cloud at {dead} unavailable" in r.output


@pytest.fixture(scope="module")
def mtls_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServedAgent, Path]]:
    from edgeflow.transport.certs import make_certs

    certs = tmp_path_factory.mktemp("certs")
    make_certs(certs, ["cloud", "client"], days=1)  # what `edgeflow certs` writes
    tls = {"cert": str(certs / "cloud.pem"), "key": str(certs / "cloud.key"), "ca": str(certs / "ca.pem")}
    cfg = NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]", "model": {"artifact": TINY}, "tls": tls})
    served = serve(cfg, profile_repeats=0)
    yield served, certs
    served.shutdown(1.0)


def test_describe_and_infer_over_mutual_tls(mtls_cloud: tuple[ServedAgent, Path], tmp_path: Path) -> None:
    served, certs = mtls_cloud
    client = ["--ca", str(certs / "ca.pem"), "--cert", str(certs / "client.pem"), "--key", str(certs / "client.key")]
    r = runner.invoke(app, ["describe", served.address, *client])
    assert r.exit_code == 0, r.output
    assert f"cloud agent at {served.address}" in r.output
    image = tmp_path / "x.npy"
    np.save(image, np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32))
    r = runner.invoke(app, ["infer", "--input", str(image), "--via", served.address, *client, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["answered_by"] == "cloud"
    for refused in ([], client[:2]):  # plaintext; TLS without a client certificate
        r = runner.invoke(app, ["describe", served.address, *refused, "--timeout", "1"])
        assert r.exit_code == 2 and "PeerUnavailable" in r.output, r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cert", "c.pem", "--key", "c.key"], "--cert/--key need --ca"),
        (["--ca", "CA", "--cert", "c.pem"], "give --cert and --key together"),
        (["--ca", "missing.pem"], "--ca: missing.pem: no such file"),
    ],
)
def test_bad_tls_options_are_cli_errors(args: list[str], message: str, tmp_path: Path) -> None:
    args = [str(tmp_path / "ca.pem") if a == "CA" else a for a in args]
    (tmp_path / "ca.pem").write_text("not used")
    r = runner.invoke(app, ["describe", "127.0.0.1:1", *args])
    assert r.exit_code == 2 and message in r.output, r.output
