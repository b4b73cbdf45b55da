"""TLS and mutual TLS between AgentServer and PeerClient, with throwaway certificates from ``make_certs``."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeflow.errors import PeerUnavailable
from edgeflow.transport import (
    AgentServer,
    Breakdown,
    Description,
    InferCall,
    InferReply,
    PeerClient,
    TlsFiles,
)
from edgeflow.transport.certs import make_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_certs(d, ["server", "client"], days=1)  # what `edgeflow certs` writes
    return d


class _Handler:
    def describe(self, caller_fingerprint: str, caller_role: str) -> Description:
        return Description("cloud", "fp", 1, [], [], "cloud[0:]")

    def infer(self, call: InferCall, deadline: float) -> InferReply:
        return InferReply(call.request_id, "fp", 1, [], Breakdown())


def test_mutual_tls(certs: Path) -> None:
    server_tls = TlsFiles(cert=certs / "server.pem", key=certs / "server.key", ca=certs / "ca.pem")
    server = AgentServer(_Handler(), address="127.0.0.1:0", tls=server_tls)
    server.start()
    try:
        client_tls = TlsFiles(cert=certs / "client.pem", key=certs / "client.key", ca=certs / "ca.pem")
        with PeerClient(server.address, tls=client_tls) as c:
            assert c.describe(timeout_s=10).role == "cloud"
        with PeerClient(server.address, tls=TlsFiles(ca=certs / "ca.pem")) as anonymous:  # no client certificate
            with pytest.raises(PeerUnavailable):
                anonymous.infer(InferCall("r", "fp", 0, []), timeout_s=5)
        with PeerClient(server.address) as plaintext:
            with pytest.raises(PeerUnavailable):
                plaintext.infer(InferCall("r", "fp", 0, []), timeout_s=5)
    finally:
        server.stop(0).wait(5)
