"""Bandwidth traces: a piecewise-constant rate over time, readers for public trace formats, and generators.

A :class:`BandwidthTrace` is data: segment start times, the rate held over each segment, and the period
after which it loops. Its text form is the two-column "cooked" format (``end_time_s Mbit/s`` per line),
which :func:`parse_cooked` reads back.

Readers (``read_trace(path, format=...)``):

- ``cooked``: ``time_s Mbit/s`` per line (Pensieve's Norway 3G and FCC, the Belgium 4G logs). A sample is
  the throughput over the interval that *ends* at its time, as in Pensieve's simulator; the first sample,
  usually at 0.0, has no interval before it and is given the length of the next one. Gaps in the time
  column (Belgium's train log) therefore become long segments at the rate measured over them.
- ``mahimahi``: one integer per line, a ms timestamp at which one 1500-byte packet may be delivered
  (repeated for several packets in a ms). Packets are counted in bins of ``bin_s``; every bin is a full
  segment, so bytes are conserved and the period is rounded up to a whole bin (mm-link's period is the last
  timestamp: at most one bin shorter).
- ``norway_raw`` / ``belgium_raw``: the raw measurement logs, six columns: unix time, ms timestamp,
  latitude, longitude, bytes received since the previous line, ms elapsed. Both datasets' converters read
  the same columns (2: time in ms, 5: bytes, 6: elapsed ms), so one parser serves both. Lines with 0 ms
  elapsed carry no rate and are skipped.

Generators: :func:`constant`, :func:`steps`, and :func:`markov` (a Markov-modulated rate: hidden states
that change once per step with given transition probabilities, each emitting a rate drawn uniformly from its
own range). :data:`MARKOV_3G` and :data:`MARKOV_LTE` were fitted with :func:`fit_markov` to the pooled
Norway HSDPA and Belgium 4G samples; ``docs/NETEM.md`` lists the calibration numbers.

Pure: no clocks, no network; the only I/O is reading the file a caller names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeflow.errors import ConfigError

__all__ = [
    "BandwidthTrace",
    "TRACE_FORMATS",
    "MAHIMAHI_PACKET_BYTES",
    "read_trace",
    "parse_cooked",
    "parse_mahimahi",
    "parse_raw_log",
    "constant",
    "steps",
    "MarkovModel",
    "markov",
    "fit_markov",
    "MARKOV_3G",
    "MARKOV_LTE",
    "builtin_trace_path",
]

TRACE_FORMATS = ("auto", "cooked", "mahimahi", "norway_raw", "belgium_raw")
MAHIMAHI_PACKET_BYTES = 1500
_MBIT = 1e6


@dataclass(frozen=True, eq=False)
class BandwidthTrace:
    """A piecewise-constant link rate that loops with period ``duration_s``.

    Attributes:
        times_s: (n,) segment start times; ``times_s[0] == 0``, strictly increasing.
        rate_bps: (n,) rate held from ``times_s[i]`` to ``times_s[i + 1]`` (the last one to ``duration_s``).
        duration_s: the period; greater than ``times_s[-1]``.

    Raises:
        ConfigError: arrays of different lengths, times not starting at 0 or not increasing, a negative or
            non-finite rate, or a period not after the last start.
    """

    times_s: np.ndarray
    rate_bps: np.ndarray
    duration_s: float
    _cum_bits: np.ndarray = field(init=False, repr=False)  # (n + 1,) bits delivered by each segment start

    def __post_init__(self) -> None:
        t = np.array(self.times_s, dtype=np.float64).reshape(-1)
        r = np.array(self.rate_bps, dtype=np.float64).reshape(-1)
        d = float(self.duration_s)
        if t.size == 0 or t.size != r.size:
            raise ConfigError(f"trace needs equal, non-empty times and rates; got {t.size} and {r.size}")
        if t[0] != 0.0 or (t.size > 1 and not np.all(np.diff(t) > 0)):
            raise ConfigError("trace segment times must start at 0 and strictly increase")
        if not np.all(np.isfinite(r)) or np.any(r < 0):
            raise ConfigError("trace rates must be finite and >= 0 bit/s")
        if not (math.isfinite(d) and d > t[-1]):
            raise ConfigError(f"trace duration_s {d} must be finite and after the last segment start {t[-1]}")
        lengths = np.diff(np.append(t, d))
        cum = np.concatenate(([0.0], np.cumsum(r * lengths)))
        for a in (t, r, cum):
            a.flags.writeable = False
        object.__setattr__(self, "times_s", t)
        object.__setattr__(self, "rate_bps", r)
        object.__setattr__(self, "duration_s", d)
        object.__setattr__(self, "_cum_bits", cum)

    @classmethod
    def from_samples(cls, times_s: Sequence[float], rate_bps: Sequence[float]) -> BandwidthTrace:
        """Builds a trace from samples that each give the rate over the interval ending at their time.

        Sample ``i`` covers ``(times_s[i-1], times_s[i]]``; the first covers ``[0, times_s[0]]`` when
        ``times_s[0] > 0``, else it gets the length of the next interval (1 s when it is alone).
        """
        t = np.asarray(times_s, dtype=np.float64).reshape(-1)
        r = np.asarray(rate_bps, dtype=np.float64).reshape(-1)
        if t.size == 0:
            raise ConfigError("trace has no samples")
        if t.size > 1 and not np.all(np.diff(t) > 0):
            raise ConfigError("sample times must strictly increase")
        if t[0] > 0:
            first = t[0]
        else:
            first = t[1] - t[0] if t.size > 1 else 1.0
        ends = t - t[0] + first
        return cls(np.concatenate(([0.0], ends[:-1])), r, float(ends[-1]))

    def __len__(self) -> int:
        return int(self.times_s.size)

    @property
    def mean_bps(self) -> float:
        """Time-weighted mean rate over one period."""
        return float(self._cum_bits[-1] / self.duration_s)

    def _index(self, r_s: float) -> int:
        return int(np.searchsorted(self.times_s, r_s, side="right")) - 1

    def rate_at(self, t_s: float) -> float:
        """The rate at time ``t_s`` (looping: ``t_s`` is taken modulo ``duration_s``)."""
        return float(self.rate_bps[self._index(t_s % self.duration_s)])

    def _cum(self, t_s: float) -> float:
        k, r_s = divmod(t_s, self.duration_s)
        i = self._index(r_s)
        return k * self._cum_bits[-1] + self._cum_bits[i] + self.rate_bps[i] * (r_s - self.times_s[i])

    def bits_between(self, t0_s: float, t1_s: float) -> float:
        """Bits the link can carry from ``t0_s`` to ``t1_s`` (``t1_s >= t0_s``)."""
        return max(0.0, float(self._cum(t1_s) - self._cum(t0_s)))

    def time_after(self, t0_s: float, nbits: float) -> float:
        """The earliest time at which ``nbits`` sent from ``t0_s`` have gone through; ``inf`` if never."""
        if nbits <= 0:
            return t0_s
        total = float(self._cum_bits[-1])
        if total <= 0:
            return math.inf
        target = self._cum(t0_s) + nbits
        k = math.floor(target / total)
        rem = target - k * total
        i = min(int(np.searchsorted(self._cum_bits[1:], rem, side="left")), len(self) - 1)
        rate = float(self.rate_bps[i])
        offset = (rem - float(self._cum_bits[i])) / rate if rate > 0 else 0.0
        return float(max(t0_s, k * self.duration_s + float(self.times_s[i]) + offset))

    def scaled(self, factor: float) -> BandwidthTrace:
        """The same trace with every rate multiplied by ``factor`` (>= 0)."""
        if not (math.isfinite(factor) and factor >= 0):
            raise ConfigError(f"trace scale factor {factor} must be finite and >= 0")
        return BandwidthTrace(self.times_s, self.rate_bps * factor, self.duration_s)

    def sample_stats(self) -> dict[str, float]:
        """Unweighted statistics over the segments' rates, in Mbit/s (the convention of trace READMEs)."""
        x = self.rate_bps / _MBIT
        p5, p50, p95 = np.percentile(x, [5, 50, 95])
        return {"mean": float(x.mean()), "median": float(p50), "p5": float(p5), "p95": float(p95),
                "min": float(x.min()), "max": float(x.max()), "duration_s": self.duration_s}

    def to_cooked_text(self) -> str:
        """Two-column text, ``end_time_s Mbit/s`` per segment; :func:`parse_cooked` reads it back."""
        ends = np.append(self.times_s[1:], self.duration_s)
        return "".join(f"{e:.6f} {r / _MBIT:.6f}\n" for e, r in zip(ends, self.rate_bps))


# --- readers ---------------------------------------------------------------------------------------------


def _rows(text: str, source: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) for each line that is neither blank nor a ``#`` comment."""
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if s and not s.startswith("#"):
            rows.append((n, s.split()))
    if not rows:
        raise ConfigError(f"{source}: trace has no data lines")
    return rows


def _number(tok: str, source: str, line: int, what: str) -> float:
    try:
        v = float(tok)
    except ValueError:
        raise ConfigError(f"{source}:{line}: {what} {tok!r} is not a number") from None
    if not math.isfinite(v):
        raise ConfigError(f"{source}:{line}: {what} {tok!r} is not finite")
    return v


def _increasing(times: list[float], lines: list[int], source: str, strict: bool = True) -> None:
    for k in range(1, len(times)):
        if times[k] < times[k - 1] or (strict and times[k] == times[k - 1]):
            raise ConfigError(
                f"{source}:{lines[k]}: time {times[k]} does not come after {times[k - 1]} (line {lines[k - 1]})"
            )


def parse_cooked(text: str, source: str = "<text>") -> BandwidthTrace:
    """Reads ``time_s Mbit/s`` lines (see the module doc for what a sample means)."""
    times, rates, lines = [], [], []
    for n, f in _rows(text, source):
        if len(f) != 2:
            raise ConfigError(f"{source}:{n}: expected 2 columns (time_s Mbit/s), got {len(f)}")
        t, r = _number(f[0], source, n, "time"), _number(f[1], source, n, "rate")
        if r < 0:
            raise ConfigError(f"{source}:{n}: rate {r} Mbit/s is negative")
        times.append(t)
        rates.append(r * _MBIT)
        lines.append(n)
    _increasing(times, lines, source)
    return BandwidthTrace.from_samples(times, rates)


def parse_mahimahi(text: str, source: str = "<text>", bin_s: float = 1.0) -> BandwidthTrace:
    """Reads a Mahimahi packet-delivery file into rates over ``bin_s`` bins (see the module doc)."""
    if not (math.isfinite(bin_s) and bin_s > 0):
        raise ConfigError(f"mahimahi bin_s {bin_s} must be > 0")
    stamps, lines = [], []
    for n, f in _rows(text, source):
        if len(f) != 1 or not f[0].isdigit():
            raise ConfigError(f"{source}:{n}: expected one non-negative integer (ms), got {' '.join(f)!r}")
        stamps.append(int(f[0]))
        lines.append(n)
    _increasing(stamps, lines, source, strict=False)
    bins = np.floor(np.asarray(stamps, dtype=np.float64) / 1000.0 / bin_s).astype(np.int64)
    counts = np.bincount(bins)  # (nbins,) packets per bin
    rates = counts * (MAHIMAHI_PACKET_BYTES * 8 / bin_s)
    return BandwidthTrace(np.arange(counts.size) * bin_s, rates, counts.size * bin_s)


def parse_raw_log(text: str, source: str = "<text>") -> BandwidthTrace:
    """Reads a raw six-column Norway HSDPA or Belgium 4G measurement log (see the module doc)."""
    times, rates, lines = [], [], []
    for n, f in _rows(text, source):
        if len(f) != 6:
            raise ConfigError(
                f"{source}:{n}: expected 6 columns (unix_time ms lat lon bytes elapsed_ms), got {len(f)}"
            )
        t_ms = _number(f[1], source, n, "timestamp (ms)")
        nbytes = _number(f[4], source, n, "bytes")
        elapsed_ms = _number(f[5], source, n, "elapsed (ms)")
        if nbytes < 0 or elapsed_ms < 0:
            raise ConfigError(f"{source}:{n}: bytes {nbytes} and elapsed {elapsed_ms} ms must be >= 0")
        if elapsed_ms == 0:
            continue  # no interval, no rate (the first line of a log)
        times.append(t_ms / 1000.0)
        rates.append(nbytes * 8 / (elapsed_ms / 1000.0))
        lines.append(n)
    if not times:
        raise ConfigError(f"{source}: no line with elapsed time > 0")
    _increasing(times, lines, source)
    return BandwidthTrace.from_samples(np.asarray(times) - times[0], rates)


def _detect(text: str, source: str) -> str:
    n, f = _rows(text, source)[0]
    by_columns = {1: "mahimahi", 2: "cooked", 6: "norway_raw"}
    if len(f) not in by_columns:
        raise ConfigError(
            f"{source}:{n}: cannot tell the trace format from {len(f)} columns; pass format= one of {TRACE_FORMATS[1:]}"
        )
    return by_columns[len(f)]


def read_trace(path: str | Path, format: str = "auto", *, bin_s: float = 1.0) -> BandwidthTrace:
    """Reads a bandwidth trace file.

    Args:
        path: the file.
        format: one of :data:`TRACE_FORMATS`; ``auto`` goes by the column count of the first data line
            (1: mahimahi, 2: cooked, 6: raw log).
        bin_s: bin width for Mahimahi files.

    Raises:
        ConfigError: unknown format, unreadable file, or a malformed line (the message names ``file:line``).
    """
    if format not in TRACE_FORMATS:
        raise ConfigError(f"trace format {format!r} is not one of {TRACE_FORMATS}")
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: cannot read trace: {e}") from None
    fmt = _detect(text, source) if format == "auto" else format
    if fmt == "cooked":
        return parse_cooked(text, source)
    if fmt == "mahimahi":
        return parse_mahimahi(text, source, bin_s)
    return parse_raw_log(text, source)


def builtin_trace_path(name: str) -> Path:
    """Path of a trace shipped in ``edgeflow/traces/`` (e.g. ``"markov-3g"``); see its README."""
    root = Path(__file__).resolve().parents[1] / "traces"
    path = root / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in root.glob("*.txt"))
        raise ConfigError(f"no built-in trace {name!r}; known: {known}")
    return path


# --- generators ------------------------------------------------------------------------------------------


def constant(rate_bps: float, duration_s: float = 1.0) -> BandwidthTrace:
    """A constant rate (loops trivially)."""
    return BandwidthTrace([0.0], [rate_bps], duration_s)


def steps(segments: Sequence[tuple[float, float]]) -> BandwidthTrace:
    """Rates held for given durations: ``[(duration_s, rate_bps), ...]``, looping after the last."""
    if not segments or any(d <= 0 for d, _ in segments):
        raise ConfigError(f"steps need at least one (duration_s > 0, rate_bps) pair; got {list(segments)}")
    durations = np.array([d for d, _ in segments], dtype=np.float64)
    ends = np.cumsum(durations)
    return BandwidthTrace(np.concatenate(([0.0], ends[:-1])), [r for _, r in segments], float(ends[-1]))


@dataclass(frozen=True)
class MarkovModel:
    """A Markov-modulated rate.

    Attributes:
        levels_bps: per state, the ``(low, high)`` range its rate is drawn from, once per step.
        transition: row-stochastic matrix, ``transition[i][j]`` = P(next state j | state i) per step.
        shapes: per state, the draw is ``low + (high - low) * u ** shape`` with ``u`` uniform in [0, 1), so
            its mean is ``low + (high - low) / (1 + shape)``; 1 (the default) is uniform. A fit picks the shape
            that matches each bin's empirical mean without moving its edges (the quantiles).
        step_s: how long a state (and its drawn rate) holds before the next transition.
    """

    levels_bps: tuple[tuple[float, float], ...]
    transition: tuple[tuple[float, ...], ...]
    shapes: tuple[float, ...] | None = None
    step_s: float = 1.0

    def __post_init__(self) -> None:
        k = len(self.levels_bps)
        p = np.asarray(self.transition, dtype=np.float64)
        if k == 0 or p.shape != (k, k):
            raise ConfigError(f"markov transition must be {k}x{k} for {k} states; got shape {p.shape}")
        if np.any(p < 0) or not np.allclose(p.sum(axis=1), 1.0, atol=1e-2):
            raise ConfigError("markov transition rows must be probabilities summing to 1")
        if any(not (0 <= lo <= hi) for lo, hi in self.levels_bps) or self.step_s <= 0:
            raise ConfigError("markov levels need 0 <= low <= high and step_s > 0")
        if self.shapes is not None and (len(self.shapes) != k or any(not a > 0 for a in self.shapes)):
            raise ConfigError(f"markov shapes must be {k} numbers > 0")

    def matrix(self) -> np.ndarray:
        """The transition matrix, rows renormalised (presets are rounded)."""
        p = np.asarray(self.transition, dtype=np.float64)
        return p / p.sum(axis=1, keepdims=True)

    def stationary(self) -> np.ndarray:
        """The stationary state distribution (solves pi P = pi, sum pi = 1)."""
        p = self.matrix()
        k = p.shape[0]
        a = np.vstack([p.T - np.eye(k), np.ones(k)])
        pi, *_ = np.linalg.lstsq(a, np.append(np.zeros(k), 1.0), rcond=None)
        pi = np.clip(pi, 0, None)
        return pi / pi.sum()

    def _shapes(self) -> np.ndarray:
        return np.ones(len(self.levels_bps)) if self.shapes is None else np.asarray(self.shapes, dtype=np.float64)

    def mean_bps(self) -> float:
        """The long-run mean rate."""
        lo, hi = np.asarray(self.levels_bps, dtype=np.float64).T
        return float(self.stationary() @ (lo + (hi - lo) / (1 + self._shapes())))


def markov(model: MarkovModel, duration_s: float, *, seed: int) -> BandwidthTrace:
    """A seeded sample path of ``model``, ``ceil(duration_s / step_s)`` steps long."""
    n = max(1, math.ceil(duration_s / model.step_s))
    rng = np.random.default_rng(seed)
    k = len(model.levels_bps)
    cdf = np.cumsum(model.matrix(), axis=1)
    u = rng.random(n)
    states = np.empty(n, dtype=np.int64)
    states[0] = min(int(np.searchsorted(np.cumsum(model.stationary()), u[0])), k - 1)
    for i in range(1, n):
        states[i] = min(int(np.searchsorted(cdf[states[i - 1]], u[i])), k - 1)
    lo, hi = np.asarray(model.levels_bps, dtype=np.float64)[states].T
    rates = lo + (hi - lo) * rng.random(n) ** model._shapes()[states]
    return BandwidthTrace(np.arange(n) * model.step_s, rates, n * model.step_s)


def fit_markov(samples_bps: Sequence[Sequence[float]], quantiles: Sequence[float] = (0.05, 0.25, 0.5, 0.75, 0.95),
               step_s: float = 1.0, *, edges_bps: Sequence[float] | None = None) -> MarkovModel:
    """Fits a :class:`MarkovModel` to rate series sampled every ``step_s``.

    States are the bins between the pooled min, ``quantiles`` and max (or fixed interior ``edges_bps``), so
    a generated path has the same quantiles at the bin edges; each bin's shape matches its empirical mean;
    transitions are counted between consecutive samples of each series.
    """
    series = [np.asarray(s, dtype=np.float64) for s in samples_bps if len(s) > 0]
    if not series:
        raise ConfigError("fit_markov needs at least one non-empty series")
    pooled = np.concatenate(series)
    inner = np.quantile(pooled, quantiles) if edges_bps is None else np.asarray(edges_bps, dtype=np.float64)
    edges = np.concatenate(([pooled.min()], inner, [pooled.max()]))
    k = edges.size - 1
    state_of = lambda x: np.clip(np.searchsorted(edges[1:-1], x, side="right"), 0, k - 1)  # noqa: E731
    pooled_states = state_of(pooled)
    levels, shapes = [], []
    for i in range(k):
        lo, hi = float(edges[i]), float(edges[i + 1])
        inside = pooled[pooled_states == i]
        mean = float(inside.mean()) if inside.size else (lo + hi) / 2
        shapes.append(float(np.clip((hi - lo) / (mean - lo) - 1, 0.05, 20)) if hi > lo and mean > lo else 1.0)
        levels.append((lo, hi))
    counts = np.zeros((k, k))
    for s in series:
        st = state_of(s)
        np.add.at(counts, (st[:-1], st[1:]), 1)
    counts[counts.sum(axis=1) == 0] = 1.0  # a state never left: uniform rather than undefined
    p = counts / counts.sum(axis=1, keepdims=True)
    return MarkovModel(tuple(levels), tuple(tuple(float(x) for x in row) for row in p), tuple(shapes), step_s)


def _preset(levels_mbit: Sequence[tuple[float, float]], shapes: Sequence[float],
            transition: Sequence[Sequence[float]]) -> MarkovModel:
    return MarkovModel(tuple((lo * _MBIT, hi * _MBIT) for lo, hi in levels_mbit),
                       tuple(tuple(row) for row in transition), tuple(shapes))


# Fitted with fit_markov() (default quantiles) to every sample of the six Norway HSDPA logs in
# ../shared/traces/norway_hsdpa (4883 samples; pooled mean 1.43, median 1.18, p5 0.17, p95 3.36 Mbit/s;
# lag-1 autocorrelation 0.69-0.92 per log). A 200 000 s path: mean 1.43, p5 0.17, p95 3.36, lag-1 0.77.
# tests/unit/test_traces.py re-fits the logs and checks these numbers.
MARKOV_3G = _preset(
    levels_mbit=[
        (0.1004, 0.1742),
        (0.1742, 0.6788),
        (0.6788, 1.178),
        (1.178, 2.02),
        (2.02, 3.356),
        (3.356, 7.266),
    ],
    shapes=[0.892, 1.070, 0.975, 1.227, 1.699, 3.326],
    transition=[
        [0.633, 0.298, 0.049, 0.016, 0.004, 0.000],
        [0.086, 0.688, 0.198, 0.021, 0.004, 0.003],
        [0.005, 0.165, 0.611, 0.207, 0.011, 0.002],
        [0.000, 0.024, 0.210, 0.590, 0.174, 0.002],
        [0.000, 0.002, 0.013, 0.222, 0.715, 0.048],
        [0.000, 0.004, 0.000, 0.025, 0.189, 0.783],
    ],
)

# Fitted the same way to the four Belgium 4G logs in ../shared/traces/belgium_4g_lte (2277 samples; pooled
# mean 25.1, median 24.7, p5 4.0, p95 48.3 Mbit/s; without the train log's near-outage p5 is 5.6).
# A 200 000 s path: mean 25.2, p5 3.8, p95 48.3, lag-1 0.72.
MARKOV_LTE = _preset(
    levels_mbit=[
        (0, 4.014),
        (4.014, 13.44),
        (13.44, 24.73),
        (24.73, 35.36),
        (35.36, 48.25),
        (48.25, 71.12),
    ],
    shapes=[2.014, 0.938, 1.017, 1.064, 1.043, 2.898],
    transition=[
        [0.688, 0.134, 0.054, 0.116, 0.009, 0.000],
        [0.051, 0.681, 0.218, 0.035, 0.011, 0.004],
        [0.014, 0.195, 0.548, 0.188, 0.042, 0.012],
        [0.007, 0.021, 0.221, 0.525, 0.176, 0.049],
        [0.004, 0.007, 0.042, 0.262, 0.602, 0.084],
        [0.000, 0.018, 0.053, 0.133, 0.451, 0.345],
    ],
)
