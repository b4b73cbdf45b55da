"""Content-aware hop sizes: how many bytes *this* input's hops will carry, from a cheap look at the input.

The cost model prices a hop at the bytes its codec produced on one profiling input. Compressed sizes follow the
content: over the demo's test images the int4 payload at position 1 varies by 22% (sd / mean) and the lossless
input by 13%, so at a few Mbit/s a request's transfer time swings by as much as the rest of its latency. The
device has the input in hand when it predicts, and a cheap *proxy* of its compressibility — the zstd-1 size of
the input quantised to 8 bits (:func:`content_proxy`) — predicts those sizes well: log-log correlation 0.8-0.9 at
the early cuts (int4@1, int8@1, fp16@1, lossless and png input); at deep cuts sizes barely vary and the relation
vanishes (``benchmarks/results/planner_live.json`` records the cost of the proxy).

:class:`ContentBytes` learns, per hop ``(position, codec)``, the relation between the proxy and the bytes the hop
measured, online, with a least-squares line on the log sizes (exponentially weighted, so it follows a drift such
as a stream's residuals). Until a hop has been measured it predicts the profiled bytes; its intercept starts at
the profiled bytes and its slope at 0, and both move to the measurements as they accumulate (a conjugate prior
worth ``prior_n`` samples), so a few noisy samples neither tilt nor shift a hop much. The prediction is the
expected size (the log-normal mean ``exp(mu + s^2 / 2)``), not the median: it is the planner's honest expectation.

Pure data in, numbers out: no clocks, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import zstandard

from edgeflow.core.plan import Plan

from .costmodel import Choice, Conditions, CostModel

__all__ = ["content_proxy", "ContentBytes", "HopFit", "hop_deltas"]

_ZSTD = zstandard.ZstdCompressor(level=1, write_checksum=False, write_content_size=False)
_MAX_SLOPE = 4.0  # |d log bytes / d log proxy| above this is noise, not a codec (measured slopes: 0..3.4)


def content_proxy(values: Sequence[torch.Tensor]) -> float:
    """Bytes of the input's tensors quantised to 8 bits (min-max per tensor) after zstd level 1: how compressible
    the content is. About 0.1 ms for a 3x64x64 image on one loaded core; non-float tensors are taken as they are.

    Returns:
        The proxy (>= 1).
    """
    total = 0
    for v in values:
        t = v.detach()
        if t.is_floating_point():
            lo, hi = t.aminmax()
            span = float(hi - lo)
            scale = 255.0 / span if span > 0 and math.isfinite(span) else 0.0
            t = torch.nan_to_num((t - lo) * scale).round_().clamp_(0, 255).to(torch.uint8)
        arr = t.contiguous().cpu().numpy()
        total += len(_ZSTD.compress(arr.view(np.uint8).tobytes()))
    return float(max(total, 1))


@dataclass
class HopFit:
    """Exponentially weighted sufficient statistics of ``(u, v) = (log proxy, log bytes)`` for one hop."""

    n: float = 0.0
    mu: float = 0.0  # weighted mean of u
    mv: float = 0.0  # weighted mean of v
    suu: float = 0.0  # weighted sums of centred products
    suv: float = 0.0
    svv: float = 0.0

    def add(self, u: float, v: float, keep: float) -> None:
        """Add one sample, after decaying the old ones by ``keep`` (West's weighted update)."""
        self.n, self.suu, self.suv, self.svv = self.n * keep, self.suu * keep, self.suv * keep, self.svv * keep
        self.n += 1.0
        du, dv = u - self.mu, v - self.mv
        self.mu += du / self.n
        self.mv += dv / self.n
        self.suu += du * (u - self.mu)
        self.suv += du * (v - self.mv)
        self.svv += dv * (v - self.mv)


class ContentBytes:
    """Per hop ``(position, codec)``: the bytes an input's hop will carry, from its :func:`content_proxy`.

    Args:
        prior_n: weight of the prior (the profiled bytes, slope 0) in samples.
        window: the weight of a sample halves after about ``0.7 * window`` newer ones (older content forgotten).
        max_hops: hops tracked at most (a chain has a few hundred ``(position, codec)`` pairs at most).
    """

    def __init__(self, *, prior_n: float = 4.0, window: float = 200.0, max_hops: int = 4096):
        if not (prior_n > 0 and window >= 1 and max_hops >= 1):
            raise ValueError(f"prior_n must be > 0, window >= 1 and max_hops >= 1, got {prior_n}, {window}, {max_hops}")
        self.prior_n, self.keep, self.max_hops = float(prior_n), 1.0 - 1.0 / window, int(max_hops)
        self._fits: dict[tuple[int, str], HopFit] = {}

    def observe(self, position: int, codec: str, proxy: float, nbytes: float) -> None:
        """One measured hop: the input's proxy and the bytes the hop carried. Non-positive values are ignored."""
        if not (proxy > 0 and nbytes > 0 and math.isfinite(proxy) and math.isfinite(nbytes)):
            return
        key = (int(position), codec)
        fit = self._fits.get(key)
        if fit is None:
            if len(self._fits) >= self.max_hops:
                return
            fit = self._fits[key] = HopFit()
        fit.add(math.log(proxy), math.log(nbytes), self.keep)

    def samples(self, position: int, codec: str) -> float:
        """The (decayed) number of samples behind a hop's fit."""
        fit = self._fits.get((int(position), codec))
        return fit.n if fit is not None else 0.0

    def predict(self, position: int, codec: str, proxy: float, profiled_nbytes: float) -> float:
        """Expected bytes of the hop for an input with ``proxy`` (``profiled_nbytes`` where nothing is known).

        The fit is a posterior under a prior worth ``prior_n`` samples at ``(mean proxy, log profiled bytes)`` with
        slope 0: ``mean = (n * mean_v + prior_n * log profiled) / (n + prior_n)``, ``slope = suv / (suu + prior_n *
        var_u)`` (the prior's spread of u is the sample's own), plus half the residual variance.
        """
        fit = self._fits.get((int(position), codec))
        if fit is None or fit.n <= 0 or not (proxy > 0 and math.isfinite(proxy)) or not profiled_nbytes > 0:
            return float(profiled_nbytes)
        n, k = fit.n, self.prior_n
        var_u = fit.suu / n if n > 0 else 0.0
        slope = fit.suv / (fit.suu + k * var_u) if fit.suu > 1e-12 else 0.0
        slope = max(-_MAX_SLOPE, min(_MAX_SLOPE, slope))
        mean = (n * fit.mv + k * math.log(profiled_nbytes)) / (n + k)
        resid = max(0.0, fit.svv - 2 * slope * fit.suv + slope * slope * fit.suu) / max(n, 1.0)  # about the line
        u = math.log(proxy)
        return float(math.exp(mean + slope * (u - fit.mu) + 0.5 * resid))


def hop_deltas(model: CostModel, plan: Plan | Choice, cond: Conditions, proxy: float,
               content: ContentBytes) -> tuple[float, dict[int, float]]:  # fmt: skip
    """How much longer (or shorter) an input with ``proxy`` takes than the cost model's prediction of ``plan``,
    from its hops' expected bytes (:meth:`ContentBytes.predict`) against the bytes the model priced them at: each
    hop's difference crosses every link between its sender and its receiver at the link's estimated rate.

    Returns:
        ``(expected, per_outcome)``: the difference in expected latency (over the plan's exit outcomes, with their
        calibrated probabilities), and per outcome (answering position, N: the model output; the keys of
        ``Breakdown.outcome_latency_s``) the difference for the path it takes: an outcome crosses the hops at
        positions before it.

    Raises:
        PlanError: the plan does not fit the model, or the conditions do not fit the chain.
    """
    ch = plan if isinstance(plan, Choice) else model.choice_of(plan)
    model.check_conditions(cond)
    n = model.num_positions
    positions = ([0] if ch.tiers[0] != 0 else []) + list(ch.cuts)
    ends = ([(0, ch.tiers[0])] if ch.tiers[0] != 0 else []) + list(zip(ch.tiers, ch.tiers[1:]))
    answer, _, _ = model.exit_model.stats(ch.exits)
    enabled = {e.position for e in ch.exits}
    outcomes = [(e, float(answer[j])) for j, e in enumerate(model.exit_positions) if e in enabled]
    outcomes.append((n, float(answer[-1])))
    per_hop: list[tuple[int, float]] = []
    for pos, codec, (s, r) in zip(positions, ch.codecs, ends):
        i, k = int(np.searchsorted(model.hop_pos, pos)), model.codecs.index(codec)
        priced = float(model.nbytes[s, i, k])
        extra = content.predict(pos, codec, proxy, priced) - priced
        per_hop.append((pos, sum(8.0 * extra / cond.links[link].bandwidth_bps for link in range(s, r))))
    paths = {x: sum(d for pos, d in per_hop if x > pos) for x, _ in outcomes}
    return sum(w * paths[x] for x, w in outcomes), paths
