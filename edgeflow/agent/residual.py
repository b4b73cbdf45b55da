"""The time a request spends in the chain that none of the cost model's terms covers, learned from its replies.

The cost model prices a request's path as compute, queueing, codec times and each hop's network time, and every
reply's breakdown measures exactly those (``TierTiming``: queue, compute, encode, decode, network) beside each
tier's *total* time. What is left of the source's total — the entry's own work around them: stamping the ticket,
the result memory's key, building and checking messages, admitting the reply — is no term of the model. On the
regime-switch scenario (2 loaded cores) it was 1.4 ms per request through the edge, a systematic 4% under the
~33 ms those requests took. :class:`Residual` tracks it per tier set a plan uses
(a device-only plan builds no messages), and the device's :class:`~edgeflow.agent.source.Source` adds it to each
request's prediction.

It is the mean, not the median (the prediction stays the planner's expectation): an exponentially weighted mean,
each sample winsorised at ``cap_factor`` x the mean so far, at least ``floor_s`` (a GC pause or a channel's first
connection in one request must not move every later prediction by its share).
"""

from __future__ import annotations

import math
import threading
from typing import Sequence

from edgeflow.transport import Breakdown

__all__ = ["Residual", "unmodelled_s"]


def unmodelled_s(breakdown: Breakdown) -> float | None:
    """Seconds of the first tier's total that no measured term covers: its total less every tier's queue, compute,
    encode, decode and network time (a tier's network time is its upstream call less the upstream's total, so the
    upstream tiers' own leftovers are in it too). None for a reply without a breakdown."""
    if not breakdown.tiers:
        return None
    parts = sum(t.queue_s + t.compute_s + t.encode_s + t.decode_s + t.network_s for t in breakdown.tiers)
    return breakdown.tiers[0].total_s - parts


class Residual:
    """Per tier set: the mean unmodelled seconds of a request (see the module doc).

    Args:
        weight: the weight of a new sample (an exponentially weighted mean over about ``1 / weight`` replies).
        cap_factor, floor_s: each sample clipped to ``[0, max(floor_s, cap_factor x the mean so far)]``.
        max_keys: tier sets tracked at most.
    """

    def __init__(self, *, weight: float = 0.1, cap_factor: float = 4.0, floor_s: float = 0.005, max_keys: int = 64):
        if not (0 < weight <= 1 and cap_factor >= 1 and floor_s > 0 and max_keys >= 1):
            raise ValueError(f"weight must be in (0, 1], cap_factor >= 1, floor_s > 0 and max_keys >= 1, got {weight}, "
                             f"{cap_factor}, {floor_s}, {max_keys}")  # fmt: skip
        self.weight, self.cap_factor, self.floor_s, self.max_keys = weight, cap_factor, floor_s, max_keys
        self._mean: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def observe(self, tiers: Sequence[str], breakdown: Breakdown) -> None:
        """One reply of a request that went by a plan using ``tiers``; fallbacks and stream frames are skipped (a
        fallback's path is not the plan's; a frame's hops are coded against the stream)."""
        if breakdown.fallback or breakdown.stream_frame:
            return
        x = unmodelled_s(breakdown)
        if x is None or not math.isfinite(x):
            return
        key = tuple(tiers)
        with self._lock:
            old = self._mean.get(key)
            x = min(max(self.floor_s, self.cap_factor * (old or 0.0)), max(0.0, x))
            if old is None:
                if len(self._mean) >= self.max_keys:
                    return
                self._mean[key] = x
            else:
                self._mean[key] = old + self.weight * (x - old)

    def seconds(self, tiers: Sequence[str]) -> float:
        """The mean for plans using ``tiers`` (0 before any reply of one)."""
        return self._mean.get(tuple(tiers), 0.0)
