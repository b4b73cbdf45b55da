"""Channel and server options built from one set of numbers, so both ends always agree.

Keepalive must match across ends: a client pinging more often than the server permits gets GOAWAY
``too_many_pings``. Both option lists below derive from the same :class:`Keepalive`; the server tolerates
pings at half the client's interval, a margin for timer jitter. Message-size limits are set on both ends.

Reconnecting and retrying are gRPC's, configured here rather than hand-rolled: a channel whose peer went away
reconnects with exponential backoff (:class:`Reconnect`), and a call that fails with UNAVAILABLE before the peer
answered (refused connection, reset, a peer shutting down) is retried by the channel's service config
(:func:`service_config`). Re-sending ``Infer`` is safe because agents are idempotent per request id (a peer that
sees an id again answers from its reply cache, see ``edgeflow.agent.replay``).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Sequence
from pathlib import Path

import grpc

from edgeflow.errors import ConfigError
from edgeflow.transport._gen import agent_pb2 as pb
from edgeflow.transport.messages import WireLimits

__all__ = ["Keepalive", "Reconnect", "TlsFiles", "channel_options", "service_config", "server_options",
           "channel_credentials", "server_credentials"]  # fmt: skip


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
class Reconnect:
    """How a channel reconnects to a peer that went away, and how calls are retried (gRPC does both).

    gRPC's connection backoff (``doc/connection-backoff.md`` in grpc/grpc): attempts start ``initial_backoff_s``
    apart, growing x1.6 (jitter +-20%) up to ``max_backoff_s``; each attempt may take ``min_connect_timeout_s``.
    gRPC's defaults (1 s, 120 s, 20 s) suit a fleet of clients hammering a server; here one agent watches one
    peer, and a peer that comes back should carry traffic again within a second, so the cap is 0.5 s (gRPC's floor
    for each of these is 0.1 s).

    Attributes:
        initial_backoff_s, max_backoff_s, min_connect_timeout_s: as above.
        retry_attempts: attempts per call (first included) that failed with UNAVAILABLE; 1: no retries.
        retry_backoff_s: the first retry's delay (doubling, capped at 4x): a short wait, since a stalled call
            only has its own deadline to spend.
    """

    initial_backoff_s: float = 0.1
    max_backoff_s: float = 0.5
    min_connect_timeout_s: float = 2.0
    retry_attempts: int = 3
    retry_backoff_s: float = 0.05


def service_config(reconnect: Reconnect, *, round_robin: bool = False) -> str:
    """The channel's service config (gRFC A6 retry policy, JSON): UNAVAILABLE is retried on Describe, Probe and
    Infer (idempotent, see the module doc); never on InferStream, whose items may already have been answered.
    ``round_robin``: spread calls over every address the target resolves to (several endpoints of one tier)."""
    service = pb.DESCRIPTOR.services_by_name["Agent"].full_name
    policy = {
        "maxAttempts": reconnect.retry_attempts,
        "initialBackoff": f"{reconnect.retry_backoff_s:g}s",
        "maxBackoff": f"{4 * reconnect.retry_backoff_s:g}s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    names = [{"service": service, "method": m} for m in ("Describe", "Probe", "Infer")]
    config: dict = {"methodConfig": [{"name": names, "retryPolicy": policy}] if reconnect.retry_attempts > 1 else []}
    if round_robin:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
    return json.dumps(config)


def channel_target(address: str, endpoints: Sequence[str] = ()) -> str:
    """The gRPC target for ``address`` alone, or for it and ``endpoints`` together (``ipv4:a:1,b:2``: gRPC's static
    address list, balanced by ``round_robin``; it takes IP literals, so ``localhost`` is read as 127.0.0.1).

    Raises:
        ConfigError: several endpoints, one of them not an IPv4 literal.
    """
    if not endpoints:
        return address
    out = []
    for a in (address, *endpoints):
        host, _, port = a.rpartition(":")
        host = "127.0.0.1" if host == "localhost" else host
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(f"upstream.endpoints: {a!r}: several endpoints must be IPv4 addresses (host:port)") from None
        out.append(f"{host}:{port}")
    return "ipv4:" + ",".join(out)


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


def channel_options(
    limits: WireLimits, keepalive: Keepalive, reconnect: Reconnect = Reconnect(), *, round_robin: bool = False
) -> list[tuple[str, int | str]]:
    """Options for a client channel to a peer agent."""
    ms = int(keepalive.time_s * 1000)
    return [
        *_limit_options(limits),
        ("grpc.keepalive_time_ms", ms),
        ("grpc.keepalive_timeout_ms", int(keepalive.timeout_s * 1000)),
        ("grpc.keepalive_permit_without_calls", int(keepalive.permit_without_calls)),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", int(reconnect.initial_backoff_s * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(reconnect.max_backoff_s * 1000)),
        ("grpc.min_reconnect_backoff_ms", int(reconnect.min_connect_timeout_s * 1000)),  # gRPC: the connect timeout
        # retries are safe since agents answer a repeated request id from their reply cache instead of computing
        # it again (they were off while a re-sent request was recomputed)
        ("grpc.enable_retries", int(reconnect.retry_attempts > 1)),
        ("grpc.service_config", service_config(reconnect, round_robin=round_robin)),
        # a call can be retried only while its request is still buffered (gRPC's default: 256 KiB, less than one
        # hop's activations); one message per call in flight, which the caller holds anyway
        ("grpc.per_rpc_retry_buffer_size", min(limits.max_message_bytes, 2**31 - 1)),
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
