"""The link model both emulator backends share: what one direction of a link does to the bytes it carries.

Pure (no sockets, no clocks: every method takes the time), so tests can drive it with made-up times.

One direction is a FIFO bottleneck shared by every connection that crosses it:

- **Rate.** Bytes are serialised one chunk after another at the rate of a :class:`BandwidthTrace` over
  link time (seconds since the emulator started, plus ``trace_offset_s``). A chunk starts when the link is
  free. If the link went idle less than ``burst_s`` before the chunk arrived, the chunk continues the flow
  from where the link went idle: that gap is the event loop's timer and read jitter, not idle air time, and
  counting it would bulk-transfer below the set rate. A link idle for longer banks no credit, so an isolated
  message takes its full ``size / rate`` (a token bucket that banked credit while idle made small messages
  look faster than the rate, and fooled rate estimators that time them).
- **Delay.** A chunk is delivered ``delay_s`` after its last bit is serialised. Chunks are pipelined, so
  delay adds latency without cutting throughput; deliveries on one connection keep their order.
- **Loss as retransmission delay.** Over TCP a lost packet costs time, not bytes: each 1500-byte packet is
  lost with probability ``loss``, and a chunk that loses any packet is delivered one retransmission timeout
  later, ``rto_s`` = max(200 ms, 2 x delay_s) by default (Linux's minimum RTO, or the round trip of a
  symmetric link). Later chunks of the connection wait behind it (head-of-line blocking). The link does not
  slow down: TCP's congestion-window reaction is not modelled.
- **Outages.** Scheduled windows in which the link carries nothing; chunks that would be serialised or
  delivered inside one wait for its end. See :class:`Outage` for what happens to connections.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

from edgeflow.core.traces import BandwidthTrace, constant
from edgeflow.errors import ConfigError

__all__ = ["PACKET_BYTES", "LinkSpec", "Outage", "Schedule", "LinkClock"]

PACKET_BYTES = 1500


@dataclass(frozen=True)
class LinkSpec:
    """One direction of an emulated link.

    Attributes:
        rate: the rate over time; ``None`` leaves the direction unshaped.
        delay_s: one-way delay.
        loss: probability that a 1500-byte packet is lost (costs ``rto_s``, see the module doc).
        rto_s: the retransmission timeout; ``None`` means max(0.2, 2 x delay_s).
        burst_s: idle gaps up to this long (link time) count as one continued flow, not idle air time.
        trace_offset_s: where in the trace link time 0 falls.
        seed: seeds the loss draws.
    """

    rate: BandwidthTrace | None = None
    delay_s: float = 0.0
    loss: float = 0.0
    rto_s: float | None = None
    burst_s: float = 0.005
    trace_offset_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.delay_s) and self.delay_s >= 0):
            raise ConfigError(f"link delay_s {self.delay_s} must be >= 0")
        if not 0 <= self.loss < 1:
            raise ConfigError(f"link loss {self.loss} must be in [0, 1)")
        if self.rto_s is not None and not self.rto_s > 0:
            raise ConfigError(f"link rto_s {self.rto_s} must be > 0")
        if not self.burst_s >= 0:
            raise ConfigError(f"link burst_s {self.burst_s} must be >= 0")

    @classmethod
    def constant(cls, rate_bps: float | None, **kwargs: float) -> LinkSpec:
        """A constant rate (``None``: unshaped) with the other fields as keywords."""
        return cls(rate=None if rate_bps is None else constant(rate_bps), **kwargs)  # type: ignore[arg-type]

    @property
    def effective_rto_s(self) -> float:
        return self.rto_s if self.rto_s is not None else max(0.2, 2 * self.delay_s)

    @property
    def transparent(self) -> bool:
        """True when the direction changes nothing (no rate, delay or loss)."""
        return self.rate is None and self.delay_s == 0 and self.loss == 0


@dataclass(frozen=True)
class Outage:
    """A scheduled window in which the link carries no bytes.

    Attributes:
        start_s: seconds after the emulator started.
        duration_s: length of the window.
        refuse_new: new connections are reset as soon as they are accepted (clients see a reset, gRPC
            ``UNAVAILABLE``); otherwise they are accepted and stall like the others.
        reset_existing: connections open when the window starts are reset (RST to both ends).
    """

    start_s: float
    duration_s: float
    refuse_new: bool = True
    reset_existing: bool = False

    def __post_init__(self) -> None:
        if not (self.start_s >= 0 and self.duration_s > 0):
            raise ConfigError(f"outage needs start_s >= 0 and duration_s > 0; got {self.start_s}, {self.duration_s}")

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


class Schedule:
    """Outages sorted by start; answers which one (if any) covers a time."""

    def __init__(self, outages: Sequence[Outage] = ()):
        self.outages = tuple(sorted(outages, key=lambda o: o.start_s))
        for a, b in zip(self.outages, self.outages[1:]):
            if b.start_s < a.end_s:
                raise ConfigError(f"outages overlap: {a} and {b}")

    def at(self, t_s: float) -> Outage | None:
        for o in self.outages:
            if o.start_s <= t_s < o.end_s:
                return o
            if o.start_s > t_s:
                break
        return None

    def skip(self, t_s: float) -> float:
        """``t_s``, or the end of the outage that covers it."""
        o = self.at(t_s)
        return t_s if o is None else o.end_s


class LinkClock:
    """Serialisation time of one link direction (shared by all its connections), in link time."""

    def __init__(self, spec: LinkSpec, schedule: Schedule | None = None):
        self.spec = spec
        self.schedule = schedule or Schedule()
        self.next_free_s = 0.0
        self._rng = random.Random(spec.seed)

    def rate_at(self, t_s: float) -> float | None:
        """The set rate at link time ``t_s``: 0 inside an outage, ``None`` when unshaped."""
        if self.schedule.at(t_s) is not None:
            return 0.0
        return None if self.spec.rate is None else self.spec.rate.rate_at(t_s + self.spec.trace_offset_s)

    def _serialised(self, start_s: float, nbits: float) -> float:
        """When ``nbits`` starting at ``start_s`` are through, skipping outages."""
        trace, off = self.spec.rate, self.spec.trace_offset_s
        t = start_s
        for o in self.schedule.outages:  # bounded by the number of outages
            if o.end_s <= t:
                continue
            if o.start_s <= t:
                t = o.end_s
                continue
            if trace is None:
                return t
            room = trace.bits_between(t + off, o.start_s + off)
            if room >= nbits:
                break
            nbits -= room
            t = o.end_s
        if trace is None:
            return t
        return trace.time_after(t + off, nbits) - off

    def send(self, now_s: float, nbytes: int) -> float:
        """Queues ``nbytes`` arriving at ``now_s``; returns when they may be delivered (before ordering)."""
        idle_s = now_s - self.next_free_s
        start = self.next_free_s if idle_s <= self.spec.burst_s else now_s  # see "Rate" in the module doc
        done = max(now_s, self._serialised(start, nbytes * 8))  # a continued flow goes through now, not earlier
        self.next_free_s = done
        deliver = done + self.spec.delay_s
        if self.spec.loss > 0:
            packets = max(1, -(-nbytes // PACKET_BYTES))
            if self._rng.random() < 1 - (1 - self.spec.loss) ** packets:
                deliver += self.spec.effective_rto_s
        return self.schedule.skip(deliver)

    def backlog_s(self, now_s: float) -> float:
        """How far ahead of ``now_s`` the link is booked."""
        return self.next_free_s - now_s

    def chunk_bytes(self, now_s: float, period_s: float = 0.004, max_bytes: int = 256 * 1024) -> int:
        """A read size worth about ``period_s`` of link time (at least one packet)."""
        rate = self.rate_at(now_s)
        if rate is None:
            return max_bytes
        return int(min(max_bytes, max(PACKET_BYTES, rate * period_s / 8)))
