"""Driving a workload: the device side of a run, and the request schedule.

Two ways a device sends a request:

- :class:`DeviceSender`: the device agent in this process (its range, its exits, its hop codec), the same
  :class:`~edgeflow.agent.Agent` that ``edgeflow infer --node`` runs; several devices share the loaded model
  but each has its own compute unit (its own emulated hardware) and link.
- :class:`RawInputSender`: for plans whose device runs nothing: the raw input encoded with the run's input
  codec (png/jpeg/lossless), sent to the edge, which runs or relays it.

:func:`drive` sends the requests: open loop at the scheduled offsets (latency counts from the scheduled send
time, so waiting behind earlier requests on the device counts), or closed loop with a fixed number
outstanding. Every loop is bounded by the run's deadline.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import torch

from edgeflow.agent.agent import Agent
from edgeflow.core.codecs import DecodeLimits, codec_from_spec, decode
from edgeflow.core.plan import ExitPoint
from edgeflow.errors import EdgeflowError
from edgeflow.transport import Breakdown, InferCall, PeerClient, TierTiming, WireTensor, datatype_of
from edgeflow.transport.messages import encode_request

__all__ = ["Answer", "Outcome", "Sender", "DeviceSender", "RawInputSender", "drive"]

_MAX_WORKERS = 32  # requests outstanding at once per run (open loop); beyond, they wait in the pool's queue


@dataclass
class Answer:
    """What came back for one request: the answering logits (B, classes) and where time and bytes went."""

    logits: torch.Tensor
    position: int
    breakdown: Breakdown


@dataclass
class Outcome:
    """One request of a run. Times are seconds after the run's start."""

    index: int
    request_id: str
    device: int
    send_s: float
    start_s: float = 0.0
    done_s: float = 0.0
    answer: Answer | None = None
    error: str | None = None
    answers: int = 0  # how many answers arrived for this id (1 normally; >1 would be a duplicate)

    @property
    def latency_s(self) -> float | None:
        return self.done_s - self.send_s if self.answer is not None else None


class Sender(Protocol):
    def send(self, request_id: str, x: torch.Tensor, deadline: float) -> Answer: ...

    def warm_up(self, request_id: str, x: torch.Tensor, deadline: float) -> None: ...

    def close(self) -> None: ...


class DeviceSender:
    """The device tier in process (see the module doc).

    Args:
        agent: the device agent.
        through: an agent with the same plan minus its exits and the *same* upstream, for warm-up requests
            that must reach the next tier whatever the exits decide (None: the plan has no exits or no upstream).
    """

    def __init__(self, agent: Agent, through: Agent | None = None):
        self.agent = agent
        self.through = through

    def send(self, request_id: str, x: torch.Tensor, deadline: float) -> Answer:
        ans = self.agent.submit_local([x], request_id=request_id, deadline=deadline, block=True)
        return Answer(ans.values[0], ans.position, ans.breakdown)

    def warm_up(self, request_id: str, x: torch.Tensor, deadline: float) -> None:
        """Build and run every range the device may run (exit heads evaluated, never taken), then send one
        request up the chain: a range's first run and the upstream handshake are one-time costs, which the
        emulated slowdown would otherwise multiply into the first measured requests."""
        ag = self.agent
        if ag.stage is not None:
            stop = ag.stage.stop or ag.runtime.num_positions
            never = [ExitPoint(e.position, 2.0) for e in ag.plan.exits_in(ag.stage.start, stop)]  # confidence <= 1
            ag.runtime.run(ag.stage.start, stop, [x], never)
        (self.through or ag).submit_local([x], request_id=request_id, deadline=deadline, block=True)

    def close(self) -> None:
        if self.through is not None:
            self.through.compute.stop()  # its upstream is the agent's, closed below
        self.agent.close()


class RawInputSender:
    """Sends the raw input, encoded with ``input_codec``, to ``address`` (the edge agent, through the link).

    The device's own share (encoding, the call) is reported as a ``device`` tier running the empty range
    ``[0:0]``, so bytes per hop read the same as for plans the device takes part in.
    """

    def __init__(self, peer: PeerClient, *, fingerprint: str, input_names: Sequence[str], input_codec: str):
        self.peer = peer
        self.fingerprint = fingerprint
        self.names = list(input_names)
        self.codec = codec_from_spec(input_codec)

    def send(self, request_id: str, x: torch.Tensor, deadline: float) -> Answer:
        t0 = time.monotonic()
        dtype = datatype_of(str(x.dtype).removeprefix("torch."))
        tensors = [WireTensor(self.names[0] if self.names else "", dtype, tuple(x.shape), self.codec.spec, self.codec.encode(x))]
        data = encode_request(InferCall(request_id, self.fingerprint, 0, tensors))
        encode_s = time.monotonic() - t0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            from edgeflow.errors import DeadlineExceeded

            raise DeadlineExceeded(f"request {request_id}: no time left to send")
        t1 = time.monotonic()
        reply = self.peer.infer_bytes(data, timeout_s=remaining)
        call_s = time.monotonic() - t1
        t2 = time.monotonic()
        values = [decode(t.payload, DecodeLimits()) for t in reply.tensors]
        up = reply.breakdown
        mine = TierTiming(
            "device", 0, 0, encode_s=encode_s, decode_s=time.monotonic() - t2,
            network_s=max(0.0, call_s - (up.tiers[0].total_s if up.tiers else 0.0)),
            bytes_out=len(data), bytes_back=reply.wire_nbytes,
        )  # fmt: skip
        mine.total_s = time.monotonic() - t0
        return Answer(values[0], reply.position, Breakdown([mine, *up.tiers], up.answered_by, up.exit_position, up.exit_confidence))

    def warm_up(self, request_id: str, x: torch.Tensor, deadline: float) -> None:
        self.send(request_id, x, deadline)

    def close(self) -> None:
        self.peer.close()


def drive(
    inputs: torch.Tensor,
    send_s: Sequence[float] | None,
    device_of: Sequence[int],
    senders: Sequence[Sender],
    *,
    run_name: str,
    timeout_s: float,
    concurrency: int = 1,
    start: float | None = None,
    on_done: Callable[[Outcome], None] | None = None,
) -> tuple[float, list[Outcome]]:
    """Send every request; returns the run's start (``time.monotonic()``) and one outcome per request.

    Args:
        inputs: (R, C, H, W) one input per request.
        send_s: open loop: offsets from the start; None: closed loop with ``concurrency`` outstanding.
        device_of: (R,) which sender sends each request.
        senders: one per device.
        run_name: prefix of request ids (``<run>-<index>``).
        timeout_s: a request still unanswered this long after its send time is lost.
        start: ``time.monotonic()`` of the run's start (default: now), e.g. when its links went live.
        on_done: called (from a worker thread) as each request finishes.
    """
    n = len(inputs)
    outcomes = [Outcome(i, f"{run_name}-{i}", int(device_of[i]), 0.0) for i in range(n)]
    lock = threading.Lock()
    t0 = time.monotonic() if start is None else start

    def one(i: int) -> None:
        o = outcomes[i]
        o.start_s = time.monotonic() - t0
        if o.send_s == 0.0 and send_s is None:
            o.send_s = o.start_s
        try:
            ans = senders[o.device].send(o.request_id, inputs[i : i + 1], t0 + o.send_s + timeout_s)
        except EdgeflowError as e:
            o.error = f"{type(e).__name__}: {e}"
        except Exception as e:  # noqa: BLE001 - a bug in a sender must not hang the run; it is recorded
            o.error = f"internal {type(e).__name__}: {e}"
        else:
            with lock:
                o.answers += 1
                if o.answer is None:
                    o.answer = ans
            o.done_s = time.monotonic() - t0
        if on_done is not None:
            on_done(o)

    workers = min(_MAX_WORKERS, n) if send_s is not None else min(concurrency, n)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=f"edgeflow-run-{run_name}")
    futures: list[Future[None]] = []
    try:
        if send_s is not None:
            for i in range(n):
                outcomes[i].send_s = float(send_s[i])
                delay = t0 + outcomes[i].send_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                futures.append(pool.submit(one, i))
        else:
            _closed_loop(pool, one, n, concurrency, futures)
        # Every request carries its own deadline; this bound is a backstop (a closed loop's chains run back to back).
        rounds = 1 if send_s is not None else -(-n // max(1, concurrency))
        end = time.monotonic() + rounds * timeout_s + 5.0
        pending = set(futures)
        while pending and time.monotonic() < end:
            _, pending = wait(pending, timeout=min(1.0, max(0.0, end - time.monotonic())), return_when=FIRST_COMPLETED)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    for o in outcomes:
        if o.answer is None and o.error is None:
            o.error = "no answer before the run's end"
    return t0, outcomes


def _closed_loop(pool: ThreadPoolExecutor, one: Callable[[int], None], n: int, concurrency: int,
                 futures: list[Future[None]]) -> None:
    """``concurrency`` chains of requests: each sends its next request when the previous one finished."""
    counter = iter(range(n))
    lock = threading.Lock()

    def chain() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            one(i)

    futures.extend(pool.submit(chain) for _ in range(min(concurrency, n)))
