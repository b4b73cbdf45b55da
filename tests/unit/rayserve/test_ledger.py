"""The reply ledger's semantics with two replicas in one process (no Ray: the ledger is a plain object here).

A copy answered by the other replica is served the first reply, never computed twice; a copy arriving while the
first computes waits for it; a replica that stops heart-beating loses its claim to the one a retry reached; a
failed computation releases its claim."""

from __future__ import annotations

import threading
import time

import pytest

from edgeflow.errors import Overloaded
from edgeflow.rayserve.ledger import DONE, MINE, WAIT, ReplyLedger, SharedReplyCache, ledger_key
from edgeflow.transport import Breakdown, InferReply, WireLimits, WireTensor


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _reply(tag: str) -> InferReply:
    return InferReply(tag, "fp", 70, [WireTensor("output", "FP32", (1, 1), "lossless", tag.encode())], Breakdown(answered_by="cloud"))


def _replica(ledger: ReplyLedger, name: str) -> SharedReplyCache:
    return SharedReplyCache(ledger, name, limits=WireLimits(), call=lambda method, *a: method(*a), heartbeat_s=3600)


def test_a_copy_on_another_replica_gets_the_first_reply() -> None:
    ledger = ReplyLedger()
    a, b = _replica(ledger, "a"), _replica(ledger, "b")
    computed: list[str] = []

    def compute(who: str) -> InferReply:
        computed.append(who)
        return _reply(f"by-{who}")

    key = ("req-1", "fp", 52, 0, "", "", b"digest")
    first = a.run(key, lambda: compute("a"), time.monotonic() + 5)
    again = b.run(key, lambda: compute("b"), time.monotonic() + 5)
    assert computed == ["a"]
    assert bytes(again.tensors[0].payload) == bytes(first.tensors[0].payload) == b"by-a"
    assert (a.duplicates, b.duplicates) == (0, 1)
    assert ledger.stats()["granted"] == 1 and ledger.stats()["served"] == 1


def test_a_copy_waits_while_another_replica_computes() -> None:
    ledger = ReplyLedger()
    a, b = _replica(ledger, "a"), _replica(ledger, "b")
    started, release = threading.Event(), threading.Event()
    out: dict[str, InferReply] = {}

    def slow() -> InferReply:
        started.set()
        release.wait(10)
        return _reply("by-a")

    t = threading.Thread(target=lambda: out.setdefault("a", a.run("k", slow, time.monotonic() + 10)))
    t.start()
    started.wait(10)
    assert ledger.claim(ledger_key("k"), "b") == (WAIT, None)
    waiter = threading.Thread(target=lambda: out.setdefault("b", b.run("k", lambda: _reply("by-b"), time.monotonic() + 10)))
    waiter.start()
    release.set()
    t.join(10)
    waiter.join(10)
    assert bytes(out["b"].tensors[0].payload) == b"by-a"
    assert ledger.stats()["granted"] == 1


def test_a_dead_replicas_claim_is_taken_over() -> None:
    clock = Clock()
    ledger = ReplyLedger(dead_after_s=2.0, clock=clock)
    assert ledger.claim("k", "a")[0] == MINE  # a claims, then dies (no heartbeat, no reply)
    clock.now = 1.0
    ledger.heartbeat("b")
    assert ledger.claim("k", "b") == (WAIT, None)  # a may still be computing
    clock.now = 2.5
    assert ledger.claim("k", "b") == (MINE, None)
    ledger.complete("k", "b", b"reply")
    assert ledger.claim("k", "c") == (DONE, b"reply")
    assert ledger.stats()["takeovers"] == 1


def test_a_failure_releases_the_claim_and_bounds_hold() -> None:
    ledger = ReplyLedger(max_entries=4, max_nbytes=10)
    a = _replica(ledger, "a")

    def fail() -> InferReply:
        raise Overloaded("queue full")

    with pytest.raises(Overloaded):
        a.run("k", fail, time.monotonic() + 5)
    assert ledger.claim("k", "b")[0] == MINE  # a retry computes afresh
    for i in range(10):
        ledger.claim(f"x{i}", "a")
        ledger.complete(f"x{i}", "a", b"123456")
    assert ledger.stats()["entries"] <= 4 and ledger.stats()["nbytes"] <= 10
