"""An agent's door: requests in flight, draining on shutdown, and the counters ``Describe`` reports.

Every request enters through :meth:`RequestGate.request` (a context manager): it is counted, refused with
ShuttingDown once the agent drains, and counted as shed when it leaves as Overloaded. :meth:`RequestGate.drain`
waits for the requests in flight to finish.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

from edgeflow.transport import Counters, Overloaded, ShuttingDown

__all__ = ["RequestGate"]


class RequestGate:
    """In-flight bookkeeping and counters of one agent (thread-safe).

    Attributes:
        requests: requests taken in, refused and failed ones included.
        shed: requests refused as Overloaded (compute queue full, memory cap in use).
        fallbacks: requests this tier finished itself because its upstream failed.
        last_fallback: the latest one's ``Breakdown.fallback``.
    """

    def __init__(self, role: str):
        self.role = role
        self.requests = self.shed = self.fallbacks = 0
        self.last_fallback = ""
        self._counts = threading.Lock()
        self._idle = threading.Condition()
        self._inflight = 0
        self._draining = False

    @contextmanager
    def request(self) -> Iterator[None]:
        """One request's stay in the agent.

        Raises:
            ShuttingDown: the agent drains.
        """
        with self._counts:
            self.requests += 1
        with self._idle:
            if self._draining:
                raise ShuttingDown(f"{self.role} agent is shutting down")
            self._inflight += 1
        try:
            yield
        except Overloaded:
            with self._counts:
                self.shed += 1
            raise
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def fell_back(self, reason: str) -> None:
        """A request was finished here because the upstream failed (``reason``: its ``Breakdown.fallback``)."""
        with self._counts:
            self.fallbacks += 1
            self.last_fallback = reason

    def counters(self, duplicates_served: int) -> Counters:
        """A consistent snapshot, with the reply cache's ``duplicates_served``."""
        with self._counts:
            return Counters(self.requests, self.fallbacks, duplicates_served, self.shed, self.last_fallback)

    @property
    def inflight(self) -> int:
        return self._inflight

    def drain(self, grace_s: float) -> bool:
        """Refuse new requests and wait up to ``grace_s`` for those in flight; True if all finished."""
        end = time.monotonic() + grace_s
        with self._idle:
            self._draining = True
            while self._inflight and time.monotonic() < end:
                self._idle.wait(timeout=min(0.1, max(0.0, end - time.monotonic())))
            return self._inflight == 0

    def close(self) -> None:
        """Refuse new requests from now on (without waiting)."""
        with self._idle:
            self._draining = True
