"""The link to the next tier up: a peer client plus the handshake (Describe with our fingerprint).

The handshake runs once, lazily (the upstream may start after us), and is retried until the connect
deadline. After a handshake that found no peer, later ones try for at most ``_RETRY_S`` (the caller's fallback
should not wait ``connect_s`` on every request for a peer that is down). A peer serving another model is refused
(``FingerprintMismatch`` -> FAILED_PRECONDITION for our own callers too), so a mis-deployed chain fails loudly on
its first request instead of computing garbage.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

from edgeflow.errors import DeadlineExceeded, PeerUnavailable
from edgeflow.transport import Description, FingerprintMismatch, InferReply, RemoteError

__all__ = ["PeerLike", "Upstream"]

_log = logging.getLogger(__name__)
_RETRY_S = 0.5


class PeerLike(Protocol):
    """What :class:`Upstream` needs from a client: ``PeerClient`` or ``LoopbackClient``."""

    address: str

    def describe(self, fingerprint: str = "", role: str = "", *, timeout_s: float = 5.0) -> Description: ...

    def infer_bytes(self, request: bytes, *, timeout_s: float, wait_for_ready: bool = False) -> InferReply: ...

    def probe(self, *, send_nbytes: int = 0, reply_nbytes: int = 0, echo: bool = False, timeout_s: float = 10.0) -> float: ...

    def close(self) -> None: ...


class Upstream:
    """A handshaken link to the upstream agent.

    Args:
        peer: the client.
        fingerprint: this agent's model fingerprint.
        role: this agent's role (told to the peer).
        connect_s: how long the first handshake may wait for the peer to come up.
    """

    def __init__(self, peer: PeerLike, *, fingerprint: str, role: str, connect_s: float = 10.0):
        self.peer = peer
        self.fingerprint = fingerprint
        self.role = role
        self.connect_s = connect_s
        self._description: Description | None = None
        self._lock = threading.Lock()
        self._unreachable = False  # the last handshake found no peer

    @property
    def address(self) -> str:
        return self.peer.address

    @property
    def description(self) -> Description | None:
        """The peer's handshake answer, once it succeeded."""
        return self._description

    def handshake(self, deadline: float | None = None) -> Description:
        """Describe the peer (once), checking that it serves our model.

        Raises:
            FingerprintMismatch: the peer serves another model.
            PeerUnavailable / DeadlineExceeded: the peer did not answer in time.
        """
        if self._description is not None:
            return self._description
        with self._lock:
            if self._description is not None:
                return self._description
            wait_s = _RETRY_S if self._unreachable else self.connect_s
            end = time.monotonic() + wait_s if deadline is None else min(deadline, time.monotonic() + wait_s)
            while True:
                remaining = end - time.monotonic()
                try:
                    d = self.peer.describe(self.fingerprint, self.role, timeout_s=max(remaining, 0.05))
                    break
                except RemoteError as e:
                    if e.code == "FAILED_PRECONDITION":
                        raise FingerprintMismatch(f"upstream {self.address} refused the handshake: {e.details}") from None
                    raise
                except (PeerUnavailable, DeadlineExceeded):
                    if time.monotonic() + 0.2 >= end:
                        self._unreachable = True
                        raise PeerUnavailable(f"upstream {self.address} did not answer the handshake within {wait_s:g} s") from None
                    time.sleep(0.2)
            if d.fingerprint != self.fingerprint:
                raise FingerprintMismatch(
                    f"upstream {d.role or 'agent'} at {self.address} serves model {d.fingerprint}, "
                    f"this {self.role} serves {self.fingerprint}"
                )
            _log.info("handshake with upstream %s at %s: plan %s", d.role, self.address, d.plan)
            self._description = d
            return d

    def infer_bytes(self, request: bytes, deadline: float) -> InferReply:
        """Send an encoded InferRequest upstream before ``deadline`` (handshaking first if needed)."""
        self.handshake(deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"no time left to call upstream {self.address}")
        return self.peer.infer_bytes(request, timeout_s=remaining)

    def close(self) -> None:
        self.peer.close()
