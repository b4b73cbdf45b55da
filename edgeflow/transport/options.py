"""Channel and server options built from one set of numbers, so both ends always agree.

Keepalive must match across ends: a client pinging more often than the server permits gets GOAWAY
``too_many_pings``. Both option lists below derive from the same :class:`Keepalive`; the server tolerates
pings at half the client's interval, a margin for timer jitter. Message-size limits are set on both ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

from edgeflow.errors import ConfigError
from edgeflow.transport.messages import WireLimits

__all__ = ["Keepalive", "TlsFiles", "channel_options", "server_options", "channel_credentials", "server_credentials"]


@dataclass(frozen=True)
class Keepalive:
    """HTTP/2 keepalive, shared by client and server.

    Attributes:
        time_s: client pings after this long without activity.
        timeout_s: a ping unanswered this long closes the connection.
        permit_without_calls: ping even with no call in flight (keeps idle upstream links warm).
    """

    time_s: float = 30.0
    timeout_s: float = 10.0
    permit_without_calls: bool = True


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for TLS. With ``ca`` on the server, clients must present a certificate (mTLS)."""

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None


def _limit_options(limits: WireLimits) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", limits.max_message_bytes),
        ("grpc.max_send_message_length", limits.max_message_bytes),
    ]


def channel_options(limits: WireLimits, keepalive: Keepalive) -> list[tuple[str, int]]:
    """Options for a client channel to a peer agent."""
    ms = int(keepalive.time_s * 1000)
    return [
        *_limit_options(limits),
        ("grpc.keepalive_time_ms", ms),
        ("grpc.keepalive_timeout_ms", int(keepalive.timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.enable_retries", 0),  # the agent decides what to retry; a re-sent request is recomputed
    ]


def server_options(limits: WireLimits, keepalive: Keepalive) -> list[tuple[str, int]]:
    """Options for an agent's server, consistent with :func:`channel_options` for the same ``keepalive``."""
    ms = int(keepalive.time_s * 1000)
    return [
        *_limit_options(limits),
        ("grpc.keepalive_time_ms", ms),
        ("grpc.keepalive_timeout_ms", int(keepalive.timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", ms // 2),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", 0),  # port 0 must give a port nobody else is bound to
    ]


def _read(path: Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def channel_credentials(tls: TlsFiles) -> grpc.ChannelCredentials:
    """Client TLS credentials: trust ``ca``; present ``cert``/``key`` when given (mTLS)."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(tls.ca), private_key=_read(tls.key), certificate_chain=_read(tls.cert)
    )


def server_credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """Server TLS credentials from ``cert``/``key``; with ``ca``, client certificates are required."""
    if not (tls.cert and tls.key):
        raise ConfigError("tls: a server needs both cert and key")
    return grpc.ssl_server_credentials(
        [(_read(tls.key), _read(tls.cert))], root_certificates=_read(tls.ca), require_client_auth=tls.ca is not None
    )
