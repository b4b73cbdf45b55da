"""``make_certs``: a CA and node certificates that gRPC accepts for TLS and mTLS."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from edgeflow.errors import ConfigError
from edgeflow.transport.certs import make_certs, write_token


def test_files_sans_and_modes(tmp_path: Path) -> None:
    made = make_certs(tmp_path / "c", ["edge", "cloud"], hosts=["edge.lan", "10.0.0.7"], days=2)
    assert [n.name for n in made.nodes] == ["edge", "cloud"]
    cert = x509.load_pem_x509_certificate(made.nodes[0].cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "edge", "edge.lan"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.7")}
    ca = x509.load_pem_x509_certificate(made.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    for path in (made.ca_key, *(n.key for n in made.nodes)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = write_token(tmp_path / "c" / "token")
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) >= 40


def test_refuses_overwrite_and_bad_names(tmp_path: Path) -> None:
    make_certs(tmp_path, ["edge"])
    with pytest.raises(ConfigError, match="already exist"):
        make_certs(tmp_path, ["edge"])
    make_certs(tmp_path, ["edge"], overwrite=True)
    for nodes in (["ca"], ["a/b"], ["x", "x"], []):
        with pytest.raises(ConfigError):
            make_certs(tmp_path / "other", nodes)
