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
seconds``) carry no rate information and are rejected, except as a lower bound on the rate: one far above the
estimate restarts it at that bound (a link back from near zero; a message counts only if it is mostly round trip
with its overhead left on). When no sample has been accepted for ``stale_after_s`` the link :meth:`LinkEstimator.needs_probe` and :meth:`LinkEstimator.probe_nbytes` says how big a probe makes a
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
from typing import Sequence

from edgeflow.errors import PlanError

from .costmodel import Conditions, LinkState

__all__ = ["LinkEstimator", "ComputeCorrection", "CodecCorrection", "QueueTracker", "ConditionsTracker"]

_FRESH_RTTS = 3  # round trips kept when a link's level restarts from a lower bound (one probe's worth)


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
        self.bounded_s: float | None = None  # when the estimate last restarted from a lower bound
        self._quick: float | None = None  # the bound of the last message too quick to time, if no sample since

    # ------------------------------------------------------------------------------------ samples
    def observe_rtt(self, rtt_s: float, now_s: float) -> None:
        """A round-trip time sample (e.g. an empty call, or a health check)."""
        if rtt_s >= 0 and math.isfinite(rtt_s):
            self._rtts.append((now_s, rtt_s))

    def observe_transfer(self, nbytes: float, seconds: float, now_s: float, *, includes_rtt: bool = True,
                         message: bool = True, restart: bool = False) -> bool:  # fmt: skip
        """A transfer of ``nbytes`` that took ``seconds`` (send start to reply, when ``includes_rtt``); a
        ``message`` (not a probe) also pays ``overhead_s``. ``restart``: if the sample is usable, the estimate
        starts again from it alone, and the round trips from the last few (the level is unknown again, e.g. after
        an outage or a stall, where the requests given up left no sample of the rate that stalled them).

        Returns:
            Whether it was used as a rate sample.
        """
        if not (nbytes >= self.min_nbytes and seconds > 0 and math.isfinite(seconds)):
            return False
        rtt = (self.rtt_s(now_s) or 0.0) if includes_rtt else 0.0
        transfer = seconds - rtt - (self.overhead_s if message else 0.0)
        if transfer < self.min_transfer_fraction * seconds:
            if message and seconds - rtt >= self.min_transfer_fraction * seconds:
                return False  # mostly round trip only once the overhead estimate is off: no evidence either way
            return self._faster_than_known(nbytes, seconds, now_s, message=message)
        self._quick = None
        rate = 8.0 * nbytes / transfer
        if restart:
            self._forget(rtts=True)  # the round trips probed while it was down (or stalled) were its queue
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

    def _faster_than_known(self, nbytes: float, seconds: float, now_s: float, *, message: bool = False) -> bool:
        """A probe too quick to time still bounds the rate from below: it moved ``nbytes`` in less than
        ``min_transfer_fraction`` of ``seconds``. When that bound is ``shift_ratio`` times the estimate (or the last
        one, expired), the estimate is stale (a link back from near zero, probed with a probe sized for near zero,
        which the link then carries in no time): it restarts from the bound, the safe side. Without this, a link
        estimated at 0.05 Mbit/s was probed with 2 KB every 2 s after it came back at 30 Mbit/s, every probe was
        'mostly round trip' and rejected, and the planner kept the device-only plan for 20 s.

        A message (a request's hop) counts too, but only when it is mostly round trip *before* the per-message
        overhead is taken off: an overhead estimate a little high must not make a quick message read as an
        impossibly fast link; and only the second such message in a row (the smaller bound of the two): one quick
        message is an outlier (a round-trip estimate a little high), two are a link that has changed. Without this,
        requests of 2 KB on a link back at 30 Mbit/s were predicted 60-140 ms (the estimate left by the outage)
        while they took 35 ms, until the next probe 1-2 s later."""
        last = self._last_accept_s
        known = self.bandwidth_bps(now_s) or (self.bandwidth_bps(last) if last is not None else None)
        bound = 8.0 * nbytes / (self.min_transfer_fraction * seconds)
        if known is None or self.shift_ratio is None or bound <= known * self.shift_ratio:
            return False
        if message:
            first, self._quick = self._quick, bound
            if first is None:
                return False
            bound = min(first, bound)
        self._quick = None
        self._forget(rtts=True)
        self._raw.append(bound)
        self._samples.append(_Sample(now_s, float(nbytes), bound))
        self._last_accept_s = self.bounded_s = now_s
        return True

    def _forget(self, *, rtts: bool = False) -> None:
        """Drop the rate samples and filter state; ``rtts``: also the round trips but the last few (a link back
        from near zero: the round trips probed while it was down were its queue, not its propagation)."""
        self._samples.clear()
        self._raw.clear()
        self._timed.clear()
        if rtts:
            recent = list(self._rtts)[-_FRESH_RTTS:]
            self._rtts.clear()
            self._rtts.extend(recent)

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
    """Per-tier affine correction of predicted compute: ``measured = fixed + factor x predicted``, per stage.

    A tier's per-node profile misses what a range costs as the agent runs it: a fixed cost per stage (the compute
    unit's hand-off, the range call) and a proportional error (the profile times each node through an interpreter,
    which overstates small late layers: on the demo the profile put ``[20:70]`` at 3.6 ms and ``[0:20]`` at 1.8 ms,
    the agent ran them in 1.7 and 1.0). One multiplicative factor cannot serve both a short stage and a long one,
    so each tier's stages are fitted as ``y = a + b u`` (``u``, ``y``: predicted and measured seconds over the
    tier's whole-model prediction, ``scale_s``) by weighted least squares over its last ``window`` stages, recent
    ones weighing more (``decay`` per stage), with a prior ``a = 0, b = 1`` (``prior_fixed``, ``prior_factor``: its
    standard deviations, against ``noise``, a measurement's: the fixed part is held near 0 unless stages of
    different lengths show it, the factor is vague): a tier that only ever runs one range moves ``b``, like a
    single factor. Each ratio measured/predicted
    is clipped to ``clip`` and passes a causal median-of-3 filter seeded with the profile's own ratio, 1, before it
    becomes a sample: a single outlier (a cold first run that took 5x, a GC pause) never moves the fit, two agreeing
    ratios do. Samples whose residual is over 3 median absolute deviations are then dropped and the fit redone.

    A tier that runs nothing for a while learns nothing from requests; after ``idle_s`` its samples fade (time
    constant ``fade_s``) and its correction returns to the prior, the profile its handshake reported, instead of
    keeping, frozen, a correction learned under other conditions.

    Feed it ``predicted_s`` from :meth:`CostModel.stage_compute_s` (uncorrected), so the fit does not feed back on
    itself.
    """

    def __init__(self, *, window: int = 24, decay: float = 0.85, prior_fixed: float = 0.05, prior_factor: float = 100.0,
                 noise: float = 0.01, clip: tuple[float, float] = (0.2, 5.0), idle_s: float = 10.0,
                 fade_s: float = 30.0):  # fmt: skip
        if window < 1 or not 0 < decay <= 1 or not prior_fixed > 0 or not prior_factor > 0 or not 0 < clip[0] <= 1 <= clip[1]:
            raise PlanError("compute correction: window >= 1, decay in (0, 1], positive priors and clip around 1 required")
        self.window, self.decay, self.clip = window, decay, clip
        self.prior_fixed, self.prior_factor, self.noise = prior_fixed, prior_factor, noise
        self.idle_s, self.fade_s = idle_s, fade_s
        self._samples: dict[str, deque[tuple[float, float]]] = {}  # tier -> (u, y)
        self._raw: dict[str, deque[float]] = {}  # tier -> the last raw ratios, for the median filter
        self._scale: dict[str, float] = {}
        self._last: dict[str, float] = {}  # tier -> when it last reported a stage
        self._fit: dict[str, tuple[float, float, float]] = {}  # tier -> (a, b, unused) fitted to the samples as they are

    def observe(self, tier: str, measured_s: float, predicted_s: float, scale_s: float, now_s: float) -> None:
        """One stage of ``tier``: it measured ``measured_s`` where the profile predicted ``predicted_s``; ``scale_s``
        is the tier's whole-model prediction (the unit of the fit)."""
        if not (predicted_s > 1e-9 and scale_s > 1e-9 and measured_s >= 0 and math.isfinite(measured_s)):
            return
        raw = self._raw.setdefault(tier, deque([1.0, 1.0], maxlen=3))
        first = len(self._samples.get(tier, ())) == 0 and list(raw) == [1.0, 1.0]
        raw.append(min(self.clip[1], max(self.clip[0], measured_s / predicted_s)))
        if first:  # the filter still holds only the prior: this ratio waits for a second one to agree
            self._last[tier] = now_s
            return
        ratio = statistics.median(raw)
        self._scale[tier] = scale_s
        self._samples.setdefault(tier, deque(maxlen=self.window)).append((predicted_s / scale_s, ratio * predicted_s / scale_s))
        self._last[tier] = now_s
        self._fit.pop(tier, None)

    def params(self, tier: str, now_s: float) -> tuple[float, float]:
        """``(fixed seconds per stage, factor)`` for ``tier`` now; ``(0, 1)`` before any sample."""
        samples = self._samples.get(tier)
        if not samples:
            return 0.0, 1.0
        fade = 1.0
        idle = now_s - self._last[tier] - self.idle_s
        if idle > 0:
            fade = math.exp(-idle / self.fade_s)
        cached = self._fit.get(tier)
        if cached is None:
            a, b = self._solve(list(samples))
            self._fit[tier] = cached = (a, b, 0.0)
        a, b = fade * cached[0], 1.0 + fade * (cached[1] - 1.0)  # an idle tier's correction fades to its prior
        return a * self._scale[tier], b

    def factor(self, tier: str, now_s: float = 0.0) -> float:
        return self.params(tier, now_s)[1]

    def factors(self, now_s: float) -> dict[str, float]:
        return {t: self.params(t, now_s)[1] for t in self._samples}

    def fixed_s(self, now_s: float) -> dict[str, float]:
        return {t: self.params(t, now_s)[0] for t in self._samples}

    def _solve(self, samples: list[tuple[float, float]]) -> tuple[float, float]:
        n = len(samples)
        weights = [self.decay ** (n - 1 - i) for i in range(n)]
        a, b = self._least_squares(samples, weights)
        residuals = [abs(y - a - b * u) for u, y in samples]
        mad = statistics.median(residuals)
        if n >= 4 and mad > 0:
            keep = [w if r <= 3.0 * 1.4826 * mad else 0.0 for w, r in zip(weights, residuals)]
            if sum(1 for w in keep if w > 0) >= 2:
                a, b = self._least_squares(samples, keep)
        b = min(self.clip[1], max(self.clip[0], b))
        return max(a, -self.prior_fixed), b

    def _least_squares(self, samples: list[tuple[float, float]], weights: list[float]) -> tuple[float, float]:
        """Minimise sum w (y - a - b u)^2 / noise^2 + (a / sa)^2 + ((b - 1) / sb)^2: a 2x2 solve."""
        ia, ib = 1.0 / self.prior_fixed**2, 1.0 / self.prior_factor**2
        s00, s01, s11, r0, r1 = ia, 0.0, ib, 0.0, ib * 1.0
        for (u, y), w in zip(samples, weights):
            w /= self.noise**2
            s00 += w
            s01 += w * u
            s11 += w * u * u
            r0 += w * y
            r1 += w * u * y
        det = s00 * s11 - s01 * s01
        return (r0 * s11 - r1 * s01) / det, (s00 * r1 - s01 * r0) / det


class CodecCorrection:
    """Per-tier multiplicative correction of codec times, one for encoding and one for decoding: EWMA of clipped,
    median-of-3 filtered measured/predicted ratios (a profile times codecs after a cache flush, once; served, they
    run after a forward pass or a network wait, with the caches of other requests' work)."""

    def __init__(self, alpha: float = 0.2, clip: tuple[float, float] = (0.2, 5.0)):
        if not 0 < alpha <= 1 or not 0 < clip[0] <= 1 <= clip[1]:
            raise PlanError(f"codec correction: alpha in (0, 1] and clip around 1 required, got {alpha}, {clip}")
        self.alpha, self.clip = alpha, clip
        self._factor: dict[tuple[str, int], float] = {}
        self._raw: dict[tuple[str, int], deque[float]] = {}

    def observe(self, tier: str, *, encode: tuple[float, float] | None = None, decode: tuple[float, float] | None = None) -> None:
        """``(measured, predicted)`` seconds of a hop's encoding at ``tier`` and/or of a hop's decoding there."""
        for side, pair in ((0, encode), (1, decode)):
            if pair is None:
                continue
            measured, predicted = pair
            if not (predicted > 1e-9 and measured >= 0 and math.isfinite(measured)):
                continue
            key = (tier, side)
            raw = self._raw.setdefault(key, deque([1.0, 1.0], maxlen=3))
            raw.append(min(self.clip[1], max(self.clip[0], measured / predicted)))
            old = self._factor.get(key, 1.0)
            self._factor[key] = old + self.alpha * (statistics.median(raw) - old)

    @property
    def factors(self) -> dict[str, tuple[float, float]]:
        tiers = {t for t, _ in self._factor}
        return {t: (self._factor.get((t, 0), 1.0), self._factor.get((t, 1), 1.0)) for t in tiers}


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
        codecs: CodecCorrection | None = None,
    ):
        self.tiers = tuple(tiers)
        n = len(self.tiers) - 1
        self.links = list(links) if links is not None else [LinkEstimator() for _ in range(n)]
        if len(self.links) != n or (fallback is not None and len(fallback) != n):
            raise PlanError(f"{len(self.tiers)} tiers need {n} link estimators and fallbacks")
        self.fallback = tuple(fallback) if fallback is not None else None
        self.correction = correction or ComputeCorrection()
        self.codecs = codecs or CodecCorrection()
        self.queues = queues or QueueTracker()

    def observe_transfer(self, link: int, nbytes: float, seconds: float, now_s: float, *, includes_rtt: bool = True,
                         message: bool = True, restart: bool = False) -> bool:  # fmt: skip
        return self.links[link].observe_transfer(nbytes, seconds, now_s, includes_rtt=includes_rtt, message=message,
                                                 restart=restart)  # fmt: skip

    def observe_rtt(self, link: int, rtt_s: float, now_s: float) -> None:
        self.links[link].observe_rtt(rtt_s, now_s)

    def observe_stage(self, tier: str, measured_s: float, predicted_s: float, scale_s: float, now_s: float) -> None:
        self.correction.observe(tier, measured_s, predicted_s, scale_s, now_s)

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
        return Conditions(tuple(states), queue_s=self.queues.queues, compute_factor=self.correction.factors(now_s),
                          compute_fixed_s=self.correction.fixed_s(now_s), codec_factor=self.codecs.factors)  # fmt: skip
