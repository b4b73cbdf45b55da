"""When the upstream fails: which failures a tier covers by finishing the model itself, and the time it keeps.

Every agent loads the whole artifact, so any tier can run the rest of the model. When the call upstream fails
for a reason that is nobody's bug (the peer is down, stalled, overloaded, or crashed inside), the tier runs
``[position:]`` itself, with the plan's exits, and says so in the reply (``Breakdown.fallback``). A peer that
serves another model, or one that calls the request invalid, points at a bug or a mis-deployment: that error
goes back to the caller unchanged.

To answer within the request's deadline even when the peer stalls, the upstream call gets the deadline minus a
reserve for the local work (:func:`reserve_s`), not the whole of it (:func:`upstream_deadline`).
"""

from __future__ import annotations

from typing import Sequence

from edgeflow.config import FallbackConfig
from edgeflow.errors import BadReply, DeadlineExceeded, PeerUnavailable, RemoteError
from edgeflow.transport import RangeProfile

__all__ = ["FALLBACK_CODES", "failure_kind", "reserve_s", "upstream_deadline", "fallback_reason"]

# Remote status codes a tier covers: the peer is going away, overloaded, aborted or broke inside. Not
# INVALID_ARGUMENT / FAILED_PRECONDITION / UNIMPLEMENTED / UNAUTHENTICATED...: those are bugs or mis-deployments.
FALLBACK_CODES = frozenset({"UNAVAILABLE", "RESOURCE_EXHAUSTED", "ABORTED", "INTERNAL", "CANCELLED", "DATA_LOSS"})
_MAX_DETAIL = 160  # characters of the peer's error kept in the reason


def failure_kind(exc: BaseException) -> str | None:
    """A few words for an upstream failure a tier may cover by finishing itself; ``None`` for one it must not."""
    if isinstance(exc, PeerUnavailable):
        return "unavailable"
    if isinstance(exc, BadReply):
        return "sent a bad reply"
    if isinstance(exc, DeadlineExceeded):
        return "did not answer in time"
    if isinstance(exc, RemoteError) and exc.code in FALLBACK_CODES:
        return f"answered {exc.code}"
    return None


def reserve_s(profile: Sequence[RangeProfile], position: int, *, safety_factor: float, margin_s: float) -> float:
    """Seconds to keep for computing ``[position:]`` here: ``safety_factor`` x the profiled compute + ``margin_s``.

    ``profile`` holds segments between cuts (slowdown included); a segment ``position`` falls inside counts in
    proportion.
    """
    total = 0.0
    for seg in profile:
        if seg.stop <= position:
            continue
        frac = 1.0 if seg.start >= position else (seg.stop - position) / max(1, seg.stop - seg.start)
        total += frac * seg.compute_s
    return safety_factor * total + margin_s


def upstream_deadline(deadline: float, reserve: float, now: float) -> float:
    """The upstream call's deadline: ``deadline - reserve``; the whole ``deadline`` when that leaves no time
    (finishing here would miss the deadline anyway, the upstream might not)."""
    cut = deadline - reserve
    return cut if cut > now else deadline


def fallback_reason(role: str, upstream_role: str, address: str, kind: str, exc: BaseException, start: int,
                    stop: int) -> str:  # fmt: skip
    """``Breakdown.fallback``: ``"edge: upstream cloud at 127.0.0.1:5 unavailable: ...; finished [52:70] locally"``
    (starts with the role of the tier that fell back; see ``Breakdown.fallback_tier``)."""
    detail = " ".join(str(exc).split())
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    return f"{role}: upstream {upstream_role} at {address} {kind}: {detail}; finished [{start}:{stop}] locally"


def latency_target_s(fallback: FallbackConfig, planner_slo_ms: float | None) -> float | None:
    """Seconds after its start by which a source request should be answered where it can be (the ``target`` of
    ``Agent.submit_local``): ``fallback.slo_ms``, else the planner's SLO; None without one or with fallback off."""
    slo_ms = fallback.slo_ms if fallback.slo_ms is not None else planner_slo_ms
    return slo_ms / 1e3 if slo_ms is not None and fallback.enabled else None


def stall_after_s(fallback: FallbackConfig, predicted_s: float | None) -> float | None:
    """Seconds after which a source request's upstream call counts as stalled and is given up (the ``stall_s`` of
    ``Agent.submit_local``): ``stall_factor`` x the request's predicted latency, at least ``stall_min_ms``; None
    without a prediction, with ``stall_factor`` 0 or with fallback off. It runs from the call, not the request's
    start, so a request that queued for the device's compute does not find its upstream stalled at once."""
    if predicted_s is None or not fallback.enabled or fallback.stall_factor <= 0:
        return None
    return max(fallback.stall_min_ms / 1e3, fallback.stall_factor * predicted_s)
