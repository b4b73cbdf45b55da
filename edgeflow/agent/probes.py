"""Measuring a link with ``Probe`` calls: round trips and one bandwidth sample, into a link estimator.

The edge-to-cloud link is probed through the edge (:class:`RelayedPeer`, ``ProbeRequest.forward``): the edge times its
own probes of the cloud, so the device measures the link its requests take and needs no route past its edge.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from edgeflow.errors import EdgeflowError, PeerUnavailable

__all__ = ["RTT_PROBES", "PROBE_TIMEOUT_S", "RelayedPeer", "probe_link"]

_log = logging.getLogger(__name__)
RTT_PROBES = 3
PROBE_TIMEOUT_S = 5.0


class RelayedPeer:
    """Probes the link past ``via`` through it (``ProbeRequest.forward``): ``via`` times its own probe of its upstream
    and answers the seconds, so the link measured is the one requests take (edge to cloud, not the device's own path
    to the cloud's address) and the device needs no route past its edge. Used as a ``peers`` entry.

    Args:
        via: the client of the relaying tier (the device's upstream).
        address: the far tier's address, for messages.
    """

    def __init__(self, via: Any, address: str):
        self.via, self.address = via, address

    def probe(self, *, send_nbytes: int = 0, timeout_s: float = 10.0) -> float:
        seconds = float(self.via.probe_upstream(send_nbytes=send_nbytes, timeout_s=timeout_s))
        if not seconds > 0:  # an agent that predates ProbeRequest.forward echoes the probe and leaves forward_s at 0
            raise PeerUnavailable(f"{self.via.address} did not forward the probe to {self.address} (an older edgeflow?)")
        return seconds


def probe_link(tracker: Any, link: int, peer: Any, nbytes: int, clock: Callable[[], float],
               lock: threading.Lock | None = None, *, rtt: bool = True, restart: bool = False) -> bool:  # fmt: skip
    """RTT (best of a few empty probes) and one bandwidth sample (a probe carrying ``nbytes`` up) of ``link`` into
    ``tracker`` (a ``ConditionsTracker``); ``restart``: the link's rate estimate restarts from that sample (kept as it
    was should the probe fail or be unusable). Returns whether the peer answered."""
    lock = lock or threading.Lock()
    try:
        if rtt:
            best = min(peer.probe(timeout_s=PROBE_TIMEOUT_S) for _ in range(RTT_PROBES))
            with lock:
                tracker.observe_rtt(link, best, clock())
        seconds = peer.probe(send_nbytes=nbytes, timeout_s=PROBE_TIMEOUT_S)
        with lock:
            used = tracker.observe_transfer(link, nbytes, seconds, clock(), message=False, restart=restart)
        _log.debug("probe of link %d: %d bytes in %.1f ms (%s)", link, nbytes, seconds * 1e3, "used" if used else "unusable")
        return True
    except EdgeflowError as e:
        _log.info("probe of link %d failed: %s", link, e)
        return False
