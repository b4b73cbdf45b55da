"""Exactly-once across replicas: one reply ledger (a Ray actor) that every replica consults before computing.

Semantics (docs/RAY.md):

- A request is known by :func:`edgeflow.agent.replay.request_key` (id, fingerprint, range, plan, output codec, a
  digest of its tensors). The first replica to claim a key computes it; the reply is stored in the ledger.
- A copy that reaches another replica while the first computes waits for that reply; a later copy gets the stored
  reply (``duplicates_served`` grows on the replica that served it). Either way the model runs once and the caller
  gets the first computation's reply: a retry answered by another replica is not counted twice.
- A replica that dies holding a claim stops heart-beating; after ``dead_after_s`` its claims may be taken over by
  the replica a retry reached, which computes the request (the dead one's work is lost, never its reply doubled).
- A failed computation releases its claim: the error goes to its caller, a retry computes afresh.
- Bounded: at most ``max_entries`` keys and ``max_nbytes`` of stored replies, each kept ``ttl_s``; past that the
  oldest finished entries go first (a copy arriving after that is computed again, as with one agent's cache).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable

from edgeflow.agent.replay import ReplyCache
from edgeflow.errors import DeadlineExceeded
from edgeflow.transport import InferReply, WireLimits
from edgeflow.transport.messages import decode_reply, encode_reply

__all__ = ["ReplyLedger", "SharedReplyCache", "ledger_key"]

MINE, DONE, WAIT = "mine", "done", "wait"


def ledger_key(key: Hashable) -> str:
    """A short stable digest of a request key (keys hold bytes and tuples; the ledger stores strings)."""
    return hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()


class ReplyLedger:
    """The shared ledger; run as a Ray actor (``ray.remote(ReplyLedger)``), plain for unit tests.

    Args:
        dead_after_s: a replica silent this long is dead: its claims may be taken over.
        max_entries, max_nbytes, ttl_s: bounds (see the module doc).
        clock: ``time.monotonic`` (tests pass a fake).
    """

    def __init__(self, *, dead_after_s: float = 2.0, max_entries: int = 4096, max_nbytes: int = 64 << 20,
                 ttl_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.dead_after_s, self.max_entries, self.max_nbytes, self.ttl_s = dead_after_s, max_entries, max_nbytes, ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()  # key -> [owner, reply | None, since]
        self._beats: dict[str, float] = {}
        self._nbytes = 0
        self.granted = self.served = self.takeovers = 0  # claims to compute, stored replies handed out, takeovers

    def heartbeat(self, owner: str) -> None:
        self._beats[owner] = self.clock()

    def claim(self, key: str, owner: str) -> tuple[str, bytes | None]:
        """``("mine", None)``: compute it; ``("done", reply)``: answer this; ``("wait", None)``: ask again soon."""
        now = self.clock()
        self._beats[owner] = now
        self._expire(now)
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= self.max_entries:
                self._evict_one()
            self._entries[key] = [owner, None, now]
            self.granted += 1
            return MINE, None
        holder, reply, _ = entry
        if reply is not None:
            self.served += 1
            return DONE, reply
        if holder == owner:
            return MINE, None  # our own claim (a local copy raced past the replica's cache)
        if now - self._beats.get(holder, entry[2]) > self.dead_after_s:
            entry[0], entry[2] = owner, now
            self.takeovers += 1
            return MINE, None
        return WAIT, None

    def complete(self, key: str, owner: str, reply: bytes) -> None:
        entry = self._entries.get(key)
        if entry is None or entry[1] is not None:
            return
        if len(reply) > self.max_nbytes:
            del self._entries[key]
            return
        entry[0], entry[1], entry[2] = owner, reply, self.clock()
        self._nbytes += len(reply)
        while self._nbytes > self.max_nbytes:
            self._evict_one()

    def release(self, key: str, owner: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[1] is None and entry[0] == owner:
            del self._entries[key]

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._entries), "nbytes": self._nbytes, "granted": self.granted, "served": self.served,
                "takeovers": self.takeovers}

    def _expire(self, now: float) -> None:
        while self._entries:
            key, (_, reply, since) = next(iter(self._entries.items()))
            if now - since <= self.ttl_s:
                return
            self._drop(key)

    def _evict_one(self) -> None:
        for key, (_, reply, _) in self._entries.items():
            if reply is not None:
                self._drop(key)
                return
        self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, reply, _ = self._entries.pop(key)
        if reply is not None:
            self._nbytes -= len(reply)


class SharedReplyCache:
    """A replica's reply cache backed by the ledger: what ``Agent.replies`` is in a Ray Serve replica.

    Copies of a request within this replica are handled by a local :class:`ReplyCache` (no ledger round trip for
    them); the first copy here asks the ledger (see the module doc).

    Args:
        ledger: the ledger, a Ray actor handle (or an object whose methods return values, for tests).
        owner: this replica's id.
        limits: for decoding stored replies.
        call: how to call a ledger method: ``ray.get(method.remote(...))`` for an actor.
        heartbeat_s: how often this replica tells the ledger it is alive.
    """

    def __init__(self, ledger: Any, owner: str, *, limits: WireLimits, call: Callable[..., Any],
                 heartbeat_s: float = 0.5) -> None:  # fmt: skip
        self.ledger, self.owner, self.limits, self._call = ledger, owner, limits, call
        self.local = ReplyCache()
        self.remote_duplicates = 0
        self._stop = threading.Event()
        self._call(self.ledger.heartbeat, owner)
        threading.Thread(target=self._beat, args=(heartbeat_s,), name="edgeflow-ledger-heartbeat", daemon=True).start()

    @property
    def duplicates(self) -> int:
        return self.local.duplicates + self.remote_duplicates

    def run(self, key: Hashable | None, compute: Callable[[], InferReply], deadline: float) -> InferReply:
        """As :meth:`ReplyCache.run`, across every replica that shares the ledger."""
        if key is None:
            return compute()
        return self.local.run(key, lambda: self._shared(ledger_key(key), compute, deadline), deadline)

    def _shared(self, key: str, compute: Callable[[], InferReply], deadline: float) -> InferReply:
        wait_s = 0.005
        while True:
            state, reply = self._call(self.ledger.claim, key, self.owner)
            if state == MINE:
                break
            if state == DONE:
                self.remote_duplicates += 1
                return decode_reply(reply, self.limits)
            if time.monotonic() + wait_s > deadline:
                raise DeadlineExceeded(f"request {key} is still being computed by another replica")
            time.sleep(wait_s)
            wait_s = min(0.05, wait_s * 2)
        try:
            out = compute()
        except BaseException:
            self._call(self.ledger.release, key, self.owner)
            raise
        self._call(self.ledger.complete, key, self.owner, encode_reply(out))
        return out

    def _beat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self._call(self.ledger.heartbeat, self.owner)
            except Exception:  # the ledger restarts or the cluster shuts down: keep trying until closed
                continue

    def close(self) -> None:
        self._stop.set()
