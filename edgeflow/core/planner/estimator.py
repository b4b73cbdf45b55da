"""Online estimates the cost model needs: link bandwidth and RTT, compute corrections, queueing delays.

Pure state machines: every method takes the time (``now_s``, any monotonic seconds) as an argument; nothing
here reads a clock.

**Bandwidth: byte-weighted harmonic mean of the last K median-of-3-filtered samples.** Each transfer gives a
rate sample ``8 * nbytes / (seconds - rtt)``. The samples first pass a causal median-of-3 filter (each rate
becomes the median of itself and the two before it), which removes any single outlier — a stalled transfer, a
timer hiccup — completely while letting a step through after two samples. The estimate is then
``8 * sum(nbytes) / sum(nbytes * 8 / rate)`` over the last ``window`` filtered samples younger than
``max_age_s``: the harmonic mean of the rates weighted by bytes. The harmonic mean follows drops fast and rises
cautiously (it is dominated by the slow samples, as in FESTIVE, Jiang et al., CoNEXT 2012), which is the safe
side for a planner; byte weighting lets big transfers, whose timing is mostly serialisation, outweigh small ones,
whose timing is mostly overhead. An EWMA was not chosen: one clipped sample still moves it by its weight, and
its reaction to a step depends on the sample rate.

**Level shifts restart the window.** When the last ``shift_samples`` raw rates all lie more than
``shift_ratio`` times away from the estimate, on the same side, the link changed level (a handover, a 10x drop,
the end of an outage), not by noise: the older samples are dropped and the estimate restarts from the new ones.
Without this a drop shows in full only once it has filled most of the window (4 to 6 transfers), and a planner
keeps a bad plan that long. One outlier never triggers it (it needs ``shift_samples`` in a row, 2 by default:
the same evidence the median filter needs to let a step through). Only transfers whose own transfer part took at
least ``shift_min_transfer_s`` (10 ms) count as evidence: a shorter one is timed mostly by per-message overhead,
and its rate reading moves with the message size, not the link (a planner alternating between plans with 1 KB
and 50 KB messages on a fast link would otherwise restart the window at every change of plan).

**Per-message overhead.** A real message pays a fixed cost that an empty probe does not: the handler's and
(de)serialisation work around it (measured at ~2 ms per Infer call on a busy 2-core host). Read as bandwidth, it
makes small messages look like a slow link (a 4 KB hop at 30 Mbit/s read as 11 Mbit/s) and big ones then
over-priced. ``overhead_s`` (measured at start-up with real calls, see ``edgeflow.agent.live``) is taken off
every passive sample (``message=True``) before its rate is read, and the cost model sees it as part of the
link's round trip (:meth:`ConditionsTracker.conditions`). Probes pay no such cost (``message=False``).

Samples whose transfer part is small next to the round trip (``seconds - rtt < min_transfer_fraction *
seconds``) carry no rate information and are rejected; when no sample has been accepted for ``stale_after_s``
the link :meth:`LinkEstimator.needs_probe` and :meth:`LinkEstimator.probe_nbytes` says how big a probe makes a
usable sample.

**Probes share the link with requests.** A probe's bytes queue ahead of the requests sent while it is on the
wire, so its size is about two round trips of transfer at the last known rate (an estimate that expired still
sizes it): long enough that RTT jitter does not bias the rate much, short enough not to stall requests. At 4
round trips, a 1.4 Mbit/s uplink with 40 ms one-way delay carried a 30 KB probe for 170 ms every 2 s, and once
the estimate had expired a 64 KB default for 420 ms: the requests behind it stalled.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Mapping, Sequence

from edgeflow.errors import PlanError

from .costmodel import Conditions, LinkState

__all__ = ["LinkEstimator", "ComputeCorrection", "QueueTracker", "ConditionsTracker"]


@dataclass(frozen=True)
class _Sample:
    t_s: float
    nbytes: float
    rate_bps: float  # filtered


class LinkEstimator:
    """Bandwidth and RTT of one link from passive samples (see the module doc).

    Args:
        window: rate samples averaged.
        max_age_s: samples older than this are forgotten.
        stale_after_s: :meth:`needs_probe` when no rate sample was accepted for this long.
        rtt_window: RTT samples kept; the estimate is their median.
        min_transfer_fraction: reject a transfer whose time is mostly the round trip.
        min_nbytes: reject transfers smaller than this (headers and timer resolution dominate).
        shift_ratio: how far (as a factor, either way) the last ``shift_samples`` raw rates must lie from the
            estimate to restart the window (see the module doc); ``None`` turns this off.
        shift_samples: how many raw rates in a row.
        shift_min_transfer_s: a transfer counts towards a shift only if its transfer part took this long.
        overhead_s: fixed seconds a message (not a probe) pays beyond the round trip (see the module doc).
    """

    def __init__(
        self,
        *,
        window: int = 8,
        max_age_s: float = 10.0,
        stale_after_s: float = 2.0,
        rtt_window: int = 16,
        min_transfer_fraction: float = 0.2,
        min_nbytes: int = 256,
        shift_ratio: float | None = 2.0,
        shift_samples: int = 2,
        shift_min_transfer_s: float = 0.010,
        overhead_s: float = 0.0,
    ):
        if shift_ratio is not None and not shift_ratio > 1:
            raise PlanError(f"estimator: shift_ratio {shift_ratio} must be > 1")
        if shift_samples < 1:
            raise PlanError(f"estimator: shift_samples {shift_samples} must be >= 1")
        if window < 1 or rtt_window < 1 or not max_age_s > 0 or not stale_after_s > 0:
            raise PlanError("estimator: window, rtt_window, max_age_s and stale_after_s must be positive")
        if not (overhead_s >= 0 and math.isfinite(overhead_s)):
            raise PlanError(f"estimator: overhead_s {overhead_s} must be >= 0")
        self.overhead_s = overhead_s
        self.window, self.max_age_s, self.stale_after_s = window, max_age_s, stale_after_s
        self.min_transfer_fraction, self.min_nbytes = min_transfer_fraction, min_nbytes
        self.shift_ratio, self.shift_samples, self.shift_min_transfer_s = shift_ratio, shift_samples, shift_min_transfer_s
        self._raw: deque[float] = deque(maxlen=3)  # last raw rates, for the median filter
        self._timed: deque[tuple[float, float]] = deque(maxlen=shift_samples)  # (raw rate, transfer s): shifts
        self._samples: deque[_Sample] = deque(maxlen=window)
        self._rtts: deque[tuple[float, float]] = deque(maxlen=rtt_window)
        self._last_accept_s: float | None = None

    # ------------------------------------------------------------------------------------ samples
    def observe_rtt(self, rtt_s: float, now_s: float) -> None:
        """A round-trip time sample (e.g. an empty call, or a health check)."""
        if rtt_s >= 0 and math.isfinite(rtt_s):
            self._rtts.append((now_s, rtt_s))

    def observe_transfer(self, nbytes: float, seconds: float, now_s: float, *, includes_rtt: bool = True,
                         message: bool = True, restart: bool = False) -> bool:  # fmt: skip
        """A transfer of ``nbytes`` that took ``seconds`` (send start to reply, when ``includes_rtt``); a
        ``message`` (not a probe) also pays ``overhead_s``. ``restart``: if the sample is usable, the estimate
        starts again from it alone (the level is unknown again, e.g. after an outage or a stall, where the
        requests given up left no sample of the rate that stalled them).

        Returns:
            Whether it was used as a rate sample.
        """
        if not (nbytes >= self.min_nbytes and seconds > 0 and math.isfinite(seconds)):
            return False
        rtt = (self.rtt_s(now_s) or 0.0) if includes_rtt else 0.0
        transfer = seconds - rtt - (self.overhead_s if message else 0.0)
        if transfer < self.min_transfer_fraction * seconds:
            return False
        rate = 8.0 * nbytes / transfer
        if restart:
            self._forget()
        before = self.bandwidth_bps(now_s)
        self._raw.append(rate)
        self._timed.append((rate, transfer))
        recent = [r for r, _ in self._timed]
        timed = len(self._timed) == self.shift_samples and all(t >= self.shift_min_transfer_s for _, t in self._timed)
        if before is not None and self.shift_ratio is not None and timed and (
            all(r * self.shift_ratio < before for r in recent) or all(r > before * self.shift_ratio for r in recent)
        ):
            # a level shift: restart from the new level (the samples in ``recent`` are its evidence)
            self._forget()
            self._raw.extend(recent[-3:])
            self._samples.append(_Sample(now_s, float(nbytes), float(statistics.median(recent))))
        else:
            self._samples.append(_Sample(now_s, float(nbytes), float(statistics.median(self._raw))))
        self._last_accept_s = now_s
        return True

    def _forget(self) -> None:
        """Drop the rate samples and filter state (not the RTTs)."""
        self._samples.clear()
        self._raw.clear()
        self._timed.clear()

    # ------------------------------------------------------------------------------------ estimates
    def bandwidth_bps(self, now_s: float) -> float | None:
        """The estimate, or None without recent samples."""
        fresh = [s for s in self._samples if now_s - s.t_s <= self.max_age_s]
        if not fresh:
            return None
        return 8.0 * sum(s.nbytes for s in fresh) / sum(8.0 * s.nbytes / s.rate_bps for s in fresh)

    def rtt_s(self, now_s: float) -> float | None:
        """Median of the recent RTT samples, or None."""
        fresh = [r for t, r in self._rtts if now_s - t <= self.max_age_s]
        return float(statistics.median(fresh)) if fresh else None

    def needs_probe(self, now_s: float) -> bool:
        """True when the bandwidth estimate is missing or older than ``stale_after_s`` (or RTT is unknown)."""
        if self._last_accept_s is None or self.rtt_s(now_s) is None:
            return True
        return now_s - self._last_accept_s > self.stale_after_s

    def probe_nbytes(self, now_s: float, *, rtt_multiple: float = 2.0, lo: int = 2048, hi: int = 1 << 20) -> int:
        """A probe size whose transfer takes about ``rtt_multiple`` round trips at the current estimate (or, once
        that expired, the last one); ``4 * lo`` with no rate or RTT ever measured. See the module doc."""
        last = self._last_accept_s
        bw = self.bandwidth_bps(now_s) or (self.bandwidth_bps(last) if last is not None else None)
        rtt = self.rtt_s(now_s) or (self._rtts[-1][1] if self._rtts else None)
        if bw is None or rtt is None:
            return lo * 4
        return int(min(hi, max(lo, bw * rtt * rtt_multiple / 8.0)))


class ComputeCorrection:
    """Per-tier multiplicative correction of predicted compute: EWMA of clipped, median-filtered
    measured/predicted ratios.

    Each tier's ratios first pass a causal median-of-3 filter seeded with the profile's own ratio, 1: a single
    outlier (a cold first run that takes 5x, a GC pause) never moves the factor; two agreeing ratios do. Without
    it, a first request that ran cold set the factor to 5x, the planner left that tier's plans, and with no more
    samples from it the factor never came back.

    Feed it ``predicted_s`` from :meth:`CostModel.stage_compute_s` (the uncorrected prediction), so the factor
    converges to measured/predicted instead of feeding back on itself. A ``weight`` below 1 scales a sample's
    EWMA weight: the replanner weighs each stage by its share of the tier's whole-model compute, because one factor
    per tier scales every range and a tiny stage's ratio is mostly fixed per-stage overhead (a device running only
    ``[0:1]`` must not teach the planner that running everything there costs 3x the profile).

    Args:
        alpha: EWMA weight of a new ratio.
        clip: each ratio is clipped to this range first, so one outlier moves the factor by a bounded amount.
    """

    def __init__(self, alpha: float = 0.2, clip: tuple[float, float] = (0.2, 5.0)):
        if not 0 < alpha <= 1 or not 0 < clip[0] <= 1 <= clip[1]:
            raise PlanError(f"compute correction: alpha in (0, 1] and clip around 1 required, got {alpha}, {clip}")
        self.alpha, self.clip = alpha, clip
        self._factor: dict[str, float] = {}
        self._raw: dict[str, deque[float]] = {}  # per tier: the last raw ratios, for the median filter
        self._seen: dict[str, int] = {}  # per tier: samples observed

    def observe(self, tier: str, measured_s: float, predicted_s: float, weight: float = 1.0) -> None:
        if not (predicted_s > 1e-9 and measured_s >= 0 and math.isfinite(measured_s) and weight > 0):
            return
        raw = self._raw.setdefault(tier, deque([1.0, 1.0], maxlen=3))
        raw.append(min(self.clip[1], max(self.clip[0], measured_s / predicted_s)))
        self._seen[tier] = seen = self._seen.get(tier, 0) + 1
        ratio = statistics.median(raw)
        old = self._factor.get(tier, 1.0)
        w = min(1.0, weight)
        # while the prior is still in the filter (2 samples), the filtered ratio sets the factor (in proportion to
        # the weight): two agreeing samples are believed at once; later ones move the EWMA
        self._factor[tier] = 1.0 + w * (ratio - 1.0) if seen <= 2 else old + self.alpha * w * (ratio - old)

    def factor(self, tier: str) -> float:
        return self._factor.get(tier, 1.0)

    @property
    def factors(self) -> dict[str, float]:
        return dict(self._factor)


class QueueTracker:
    """Queueing delay each tier reports, smoothed by an EWMA."""

    def __init__(self, alpha: float = 0.3):
        self.alpha = alpha
        self._queue: dict[str, float] = {}

    def observe(self, tier: str, queue_s: float) -> None:
        if queue_s >= 0 and math.isfinite(queue_s):
            old = self._queue.get(tier)
            self._queue[tier] = queue_s if old is None else old + self.alpha * (queue_s - old)

    @property
    def queues(self) -> dict[str, float]:
        return dict(self._queue)


class ConditionsTracker:
    """Everything observed at run time, turned into :class:`Conditions` for the planner.

    Args:
        tiers: the chain's tier names; link ``i`` joins ``tiers[i]`` and ``tiers[i + 1]``.
        links: one estimator per link (default: ``LinkEstimator()`` each).
        fallback: link states used until a link has estimates (e.g. from a scenario); None: none.
    """

    def __init__(
        self,
        tiers: Sequence[str],
        links: Sequence[LinkEstimator] | None = None,
        *,
        fallback: Sequence[LinkState] | None = None,
        correction: ComputeCorrection | None = None,
        queues: QueueTracker | None = None,
    ):
        self.tiers = tuple(tiers)
        n = len(self.tiers) - 1
        self.links = list(links) if links is not None else [LinkEstimator() for _ in range(n)]
        if len(self.links) != n or (fallback is not None and len(fallback) != n):
            raise PlanError(f"{len(self.tiers)} tiers need {n} link estimators and fallbacks")
        self.fallback = tuple(fallback) if fallback is not None else None
        self.correction = correction or ComputeCorrection()
        self.queues = queues or QueueTracker()

    def observe_transfer(self, link: int, nbytes: float, seconds: float, now_s: float, *, includes_rtt: bool = True,
                         message: bool = True, restart: bool = False) -> bool:  # fmt: skip
        return self.links[link].observe_transfer(nbytes, seconds, now_s, includes_rtt=includes_rtt, message=message,
                                                 restart=restart)  # fmt: skip

    def observe_rtt(self, link: int, rtt_s: float, now_s: float) -> None:
        self.links[link].observe_rtt(rtt_s, now_s)

    def observe_stage(self, tier: str, measured_s: float, predicted_s: float, weight: float = 1.0) -> None:
        self.correction.observe(tier, measured_s, predicted_s, weight)

    def observe_queue(self, tier: str, queue_s: float) -> None:
        self.queues.observe(tier, queue_s)

    def stale_links(self, now_s: float) -> list[int]:
        """Links that need an active probe now."""
        return [i for i, est in enumerate(self.links) if est.needs_probe(now_s)]

    def conditions(self, now_s: float) -> Conditions | None:
        """Current conditions, or None while a link has neither estimates nor a fallback."""
        states = []
        for i, est in enumerate(self.links):
            bw, rtt = est.bandwidth_bps(now_s), est.rtt_s(now_s)
            fb: LinkState | None = self.fallback[i] if self.fallback is not None else None
            if bw is None or rtt is None:
                if fb is None:
                    return None
                bw = bw if bw is not None else fb.bandwidth_bps
                rtt = rtt if rtt is not None else fb.rtt_s
            states.append(LinkState(bw, rtt + est.overhead_s))  # what a message pays: see the module doc
        factors: Mapping[str, float] = self.correction.factors
        return Conditions(tuple(states), queue_s=self.queues.queues, compute_factor=factors)
