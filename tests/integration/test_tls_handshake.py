"""Issue 14 item 4: a failed TLS handshake with a real agent process is UNAVAILABLE saying so, at once
(not DEADLINE_EXCEEDED after the whole timeout), whether a call waits for the peer to be ready or not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from edgeflow.errors import PeerUnavailable
from edgeflow.transport import InferCall, PeerClient, TlsFiles
from edgeflow.transport.certs import make_certs

TIMEOUT_S = 120.0  # far longer than a test run: a DeadlineExceeded would mean the client waited it out


@pytest.fixture(scope="module")
def tls_cloud(tmp_path_factory, tools):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("tls")
    r = subprocess.run(tools.edgeflow_cmd("certs", "--out", str(d / "certs"), "--nodes", "edge,cloud"),
                       cwd=tools.REPO, env=tools.env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    node = yaml.safe_load((tools.NODES / "cloud.yaml").read_text())
    node.update(tls={"cert": "certs/cloud.pem", "key": "certs/cloud.key", "ca": "certs/ca.pem"})
    (d / "cloud.yaml").write_text(yaml.safe_dump(node))
    other = d / "other"
    make_certs(other, ["edge"], days=1)  # another CA altogether
    agent = tools.AgentProcess(d / "cloud.yaml", plan=tools.LOSSLESS_PLAN)
    yield agent, d / "certs", other
    assert agent.stop() == 0, agent.log


@pytest.fixture(scope="module")
def plain_cloud(cloud):  # type: ignore[no-untyped-def]
    return cloud


def _clients(tls_cloud, plain_cloud) -> dict[str, PeerClient]:  # type: ignore[no-untyped-def]
    agent, certs, other = tls_cloud
    return {
        "server not signed by our CA": PeerClient(agent.address, tls=TlsFiles(cert=other / "edge.pem",
                                                  key=other / "edge.key", ca=other / "ca.pem")),  # fmt: skip
        "our certificate not signed by its CA": PeerClient(agent.address, tls=TlsFiles(cert=other / "edge.pem",
                                                           key=other / "edge.key", ca=certs / "ca.pem")),  # fmt: skip
        "plaintext to a TLS server": PeerClient(agent.address),
        "TLS to a plaintext server": PeerClient(plain_cloud.address, tls=TlsFiles(cert=certs / "edge.pem",
                                                key=certs / "edge.key", ca=certs / "ca.pem")),  # fmt: skip
    }


def test_failed_handshake_is_unavailable_and_says_so(tls_cloud, plain_cloud) -> None:  # type: ignore[no-untyped-def]
    for case, client in _clients(tls_cloud, plain_cloud).items():
        with client:
            with pytest.raises(PeerUnavailable, match="TLS handshake failed"):  # describe waits for ready
                client.describe(timeout_s=TIMEOUT_S)
            with pytest.raises(PeerUnavailable, match="TLS handshake failed"):
                client.infer(InferCall("r", "fp", 0, []), timeout_s=TIMEOUT_S, wait_for_ready=True)
            with pytest.raises(PeerUnavailable, match="TLS handshake failed"):
                client.infer(InferCall("r", "fp", 0, []), timeout_s=TIMEOUT_S)


def test_right_certificates_still_connect(tls_cloud, runtime) -> None:  # type: ignore[no-untyped-def]
    agent, certs, _ = tls_cloud
    tls = TlsFiles(cert=certs / "edge.pem", key=certs / "edge.key", ca=certs / "ca.pem")
    with PeerClient(agent.address, tls=tls) as client:
        assert client.describe(timeout_s=TIMEOUT_S).fingerprint == runtime.fingerprint


def test_unreachable_peer_is_still_waited_for(tmp_path: Path) -> None:
    from edgeflow.errors import DeadlineExceeded

    with PeerClient("127.0.0.1:1") as client:  # nothing listens: a wait, then the deadline (not a TLS error)
        with pytest.raises(DeadlineExceeded):
            client.describe(timeout_s=0.5)
