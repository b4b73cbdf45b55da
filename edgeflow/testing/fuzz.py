"""Hostile messages for a live agent: seeded generators per class, the statuses each may get, and a runner.

    target = FuzzTarget.from_runtime(runtime, max_message_bytes=1 << 20)
    report = fuzz_agent(agent_address, target, calls=8_000, pid=agent_pid)  # ~10,500 messages
    assert not report.failures

The classes live in :mod:`edgeflow.testing.hostile`: each builds messages from a ``random.Random`` seeded by
``(seed, class, index)``, so a run is the same messages every time and any one message can be rebuilt from its
label (``"bit flips: payload #17"``).
Every message carries the statuses acceptable for it: a precise refusal (INVALID_ARGUMENT,
RESOURCE_EXHAUSTED, FAILED_PRECONDITION, OUT_OF_RANGE) with a non-empty message, never UNKNOWN or INTERNAL,
and OK only where the message is in fact well formed (an oracle says so, e.g. a bit flip that only changed
the request id). Every ``valid_every`` messages a valid request must still succeed. The agent should serve a
short range (valid requests start at a late cut) so the suite spends its time in the decode path.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import grpc

from edgeflow.testing.hostile import (
    KINDS,
    OK,
    REFUSALS,
    FuzzCase,
    FuzzTarget,
    build_case,
    plan_cases,
    plan_ok,
    valid_request,
)
from edgeflow.transport import SERVICE_NAME
from edgeflow.transport.messages import WireLimits, decode_reply

__all__ = ["REFUSALS", "KINDS", "FuzzTarget", "FuzzCase", "FuzzReport", "build_case", "plan_cases", "plan_ok",
           "fuzz_agent", "read_memory_kib"]  # fmt: skip


# ------------------------------------------------------------------------------------------ running
def read_memory_kib(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in KiB, from ``/proc/<pid>/status`` (Linux)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


@dataclass
class FuzzReport:
    """What a run sent and got."""

    messages: int = 0
    calls: int = 0
    valid_ok: int = 0
    by_kind: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    memory_kib: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"messages": self.messages, "calls": self.calls, "valid_requests_ok": self.valid_ok,
                "wall_s": round(self.wall_s, 2), "messages_per_s": round(self.messages / max(self.wall_s, 1e-9), 1),
                "by_status": dict(sorted(self.by_status.items())), "by_kind": dict(sorted(self.by_kind.items())),
                "memory_kib": self.memory_kib, "failures": self.failures[:50]}  # fmt: skip


class _Sender:
    def __init__(self, address: str, target: FuzzTarget, timeout_s: float):
        opts = [("grpc.max_send_message_length", 4 * target.max_message_bytes + (1 << 20)),
                ("grpc.max_receive_message_length", 4 * target.max_message_bytes + (1 << 20))]  # fmt: skip
        self.channel = grpc.insecure_channel(address, options=opts)
        path = f"/{SERVICE_NAME}/"
        self.unary = {m: self.channel.unary_unary(path + m) for m in ("Infer", "Describe", "Probe")}
        self.stream = self.channel.stream_stream(path + "InferStream")
        self.limits = WireLimits(max_message_bytes=4 * target.max_message_bytes, max_tensors=1 << 20)
        self.timeout_s = timeout_s

    def send(self, case: FuzzCase) -> list[tuple[str, str]]:
        """``(status name, message)`` per message of ``case``."""
        if case.method == "InferStream":
            try:
                replies = [decode_reply(d, self.limits) for d in self.stream(iter(case.messages), timeout=self.timeout_s)]
            except grpc.RpcError as e:
                return [(e.code().name, f"whole stream: {e.details()}")] * len(case.messages)
            got = [(grpc_name(r.error_code), r.error_message) for r in replies]
            got += [("MISSING", "no reply")] * (len(case.messages) - len(got))
            return sorted(got)  # completion order: compared as a multiset below
        try:
            self.unary[case.method](case.messages[0], timeout=self.timeout_s)
            return [(OK, "")]
        except grpc.RpcError as e:
            return [(e.code().name, e.details() or "")]


def grpc_name(number: int) -> str:
    """Status name of a numeric code (0: OK)."""
    return next((c.name for c in grpc.StatusCode if c.value[0] == number), f"CODE_{number}")


def _check(case: FuzzCase, got: list[tuple[str, str]], label: str) -> list[str]:
    bad = [f"{label}: {status} with an empty message" for status, message in got if status != OK and not message.strip()]
    if case.method != "InferStream":
        (status, message), expect = got[0], case.expect[0]
        if status not in expect:
            bad.append(f"{label}: got {status} {message[:300]!r}, expected one of {sorted(expect)}")
        return bad
    # Stream replies come in completion order: each reply must be matched to a distinct item whose
    # expectation admits its status (bipartite matching, Kuhn's augmenting paths; n < 30).
    owner: dict[int, int] = {}

    def place(i: int, seen: set[int]) -> bool:
        for j, expect in enumerate(case.expect):
            if got[i][0] in expect and j not in seen:
                seen.add(j)
                if j not in owner or place(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(got)):
        if not place(i, set()):
            statuses = Counter(s for s, _ in got)
            wanted = [sorted(e) for e in case.expect]
            bad.append(f"{label}: stream replies {dict(statuses)} do not fit the items' expectations {wanted}; "
                       f"e.g. {got[i][0]} {got[i][1][:200]!r}")  # fmt: skip
            break
    return bad


def fuzz_agent(address: str, target: FuzzTarget, *, calls: int = 6000, seed: int = 0, threads: int = 4,
               valid_every: int = 500, pid: int | None = None, kinds: Any = None, timeout_s: float = 30.0,
               on_progress: Callable[[FuzzReport], None] | None = None) -> FuzzReport:  # fmt: skip
    """Send ``calls`` hostile calls (streams carry several messages each) to the agent at ``address``.

    Args:
        target: the agent's model and limits.
        calls: number of calls; :attr:`FuzzReport.messages` counts stream items one by one.
        threads: calls in flight at once.
        valid_every: send a valid request after this many messages (it must succeed).
        pid: the agent's process id, to record its memory (``VmRSS``/``VmHWM``) before and after.
        kinds: restrict to these classes (names from :data:`KINDS`).

    Returns:
        The report; ``failures`` lists every unexpected status (empty on success).
    """
    report = FuzzReport()
    sender = _Sender(address, target, timeout_s)
    lock = threading.Lock()
    valid_rng = random.Random(f"{seed}:valid")
    next_valid = [valid_every]
    if pid is not None:
        report.memory_kib.update({f"start_{k}": v for k, v in read_memory_kib(pid).items()})

    def valid() -> None:
        with lock:
            data = valid_request(target, valid_rng)
        got = sender.send(FuzzCase("valid", "Infer", [data], [frozenset({OK})]))
        with lock:
            report.valid_ok += got[0][0] == OK
            if got[0][0] != OK:
                report.failures.append(f"valid request after {report.messages} messages: {got[0]}")

    def one(job: tuple[str, int]) -> None:
        kind, index = job
        case = build_case(target, kind, index, seed)
        got = sender.send(case)
        bad = _check(case, got, f"{kind} #{index}")
        with lock:
            report.calls += 1
            report.messages += len(case.messages)
            report.by_kind[kind] += len(case.messages)
            report.by_status.update(s for s, _ in got)
            report.failures.extend(bad)
            due = bool(valid_every) and report.messages >= next_valid[0]
            if due:
                next_valid[0] += valid_every
        if due:
            valid()
        if on_progress is not None and report.calls % 1000 == 0:
            on_progress(report)

    t0 = time.monotonic()
    valid()
    with ThreadPoolExecutor(threads, thread_name_prefix="edgeflow-fuzz") as pool:
        list(pool.map(one, plan_cases(calls, kinds)))
    valid()
    report.wall_s = time.monotonic() - t0
    if pid is not None:
        report.memory_kib.update({f"end_{k}": v for k, v in read_memory_kib(pid).items()})
    sender.channel.close()
    return report
