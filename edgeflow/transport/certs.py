"""A throwaway certificate authority and node certificates for local TLS and mTLS (``edgeflow certs``).

For tests, demos and a lab chain on one network: one CA, and per node a key and a certificate signed by it
that serves both ends of mTLS (extended key usage serverAuth + clientAuth), valid for ``127.0.0.1``,
``localhost``, the node's name and any extra hosts. Keys are ECDSA P-256, written with mode 0600. Made with
the ``cryptography`` package, never by shelling out. A production deployment brings certificates from its own
PKI; the node files only name PEM paths (``tls``, ``upstream.tls``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeflow.errors import ConfigError

__all__ = ["NodeCert", "CertSet", "make_certs", "write_token"]

_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}")
_KEY_MODE = 0o600


@dataclass(frozen=True)
class NodeCert:
    """One node's PEM files."""

    name: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class CertSet:
    """What :func:`make_certs` wrote: the CA's files and one :class:`NodeCert` per node."""

    ca: Path
    ca_key: Path
    nodes: tuple[NodeCert, ...]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # O_CREAT's mode does not apply to a file that already existed


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _san(name: str, hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in ("127.0.0.1", "localhost", name, *hosts):
        try:
            entry: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
        except ValueError:
            entry = x509.DNSName(host)
        if entry not in entries:
            entries.append(entry)
    return x509.SubjectAlternativeName(entries)


def make_certs(
    out: Path, nodes: Sequence[str], *, hosts: Sequence[str] = (), days: int = 365, overwrite: bool = False
) -> CertSet:
    """Write ``ca.pem``/``ca.key`` and ``<node>.pem``/``<node>.key`` for each node into ``out``.

    Args:
        out: folder (created if missing).
        nodes: node names, e.g. ``["device", "edge", "cloud"]``; each is also a DNS name in its certificate.
        hosts: extra host names or IP addresses for every node certificate.
        days: validity from now.
        overwrite: replace existing files (otherwise refuse).

    Raises:
        ConfigError: a bad node name, duplicate names, ``days`` < 1, or files that exist without ``overwrite``.
    """
    if not nodes:
        raise ConfigError("--nodes: give at least one node name")
    for n in nodes:
        if not _NODE_NAME.fullmatch(n) or n == "ca":
            raise ConfigError(f"--nodes: {n!r} is not a usable node name (letters, digits, '_.-'; not 'ca')")
    if len(set(nodes)) != len(nodes):
        raise ConfigError(f"--nodes: duplicate names in {list(nodes)}")
    if days < 1:
        raise ConfigError(f"--days: {days}, must be >= 1")
    out = Path(out)
    names = ["ca", *nodes]
    paths = [out / f"{n}.{ext}" for n in names for ext in ("pem", "key")]
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{', '.join(existing)} already exist; pass --force to replace them")
    out.mkdir(parents=True, exist_ok=True)

    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)  # tolerate small clock skew between hosts
    until = now + dt.timedelta(days=days)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeflow local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    _write(out / "ca.key", _key_pem(ca_key), _KEY_MODE)
    _write(out / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))

    written = []
    for name in nodes:
        key = _key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
                              encipher_only=False, decipher_only=False),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(_san(name, hosts), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )  # fmt: skip
        node = NodeCert(name, out / f"{name}.pem", out / f"{name}.key")
        _write(node.key, _key_pem(key), _KEY_MODE)
        _write(node.cert, cert.public_bytes(serialization.Encoding.PEM))
        written.append(node)
    return CertSet(out / "ca.pem", out / "ca.key", tuple(written))


def write_token(path: Path, *, overwrite: bool = False, nbytes: int = 32) -> Path:
    """Write a fresh random bearer token (URL-safe base64 of ``nbytes`` random bytes) with mode 0600.

    Raises:
        ConfigError: the file exists and ``overwrite`` is not set.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    _write(path, (secrets.token_urlsafe(nbytes) + "\n").encode("ascii"), _KEY_MODE)
    return path
