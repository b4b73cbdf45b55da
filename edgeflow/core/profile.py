"""Per-cut profiles: compute time, FLOPs, bytes and codec times at every position of a partitioned model.

Compute is timed per graph node (Neurosurgeon-style layer profiling: Kang et al., ASPLOS 2017) by running the
traced graph node by node, repeated, and taking the median per node; cumulative time at position k is the sum
over nodes before k, and a range [a:b] costs cum[b] - cum[a]. The whole-model median is measured in the same
run so the per-node sum can be checked against it (interpreter overhead is a few µs per node).

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (counts matmul/conv-like ops; 1 MAC = 2 FLOPs).

The clock is a parameter: core never reads wall time on its own, so tests can pass a fake clock.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx
from torch.utils.flop_counter import FlopCounterMode

from edgeflow.core.partition import Partition

__all__ = ["CodecCost", "PositionProfile", "ModelProfile", "profile_compute", "profile_model"]

Clock = Callable[[], float]


@dataclass
class CodecCost:
    """Cost of carrying every tensor crossing one position with one codec (medians)."""

    nbytes: int
    encode_s: float
    decode_s: float


@dataclass
class PositionProfile:
    """One position of the model.

    Attributes:
        position: the position id (0 = input, N = output).
        label: the node run just before this position (``"input"`` at 0).
        cum_compute_s: median compute time of positions [0:position] on the profiling host.
        cum_flops: FLOPs of [0:position].
        nbytes: bytes of the crossing tensors in their own dtypes.
        is_cut: whether the position is a candidate cut.
        codecs: codec name -> cost, for candidate cuts (and the input for image codecs).
    """

    position: int
    label: str
    cum_compute_s: float
    cum_flops: int
    nbytes: int
    is_cut: bool
    tensors: list[dict[str, Any]] = field(default_factory=list)
    codecs: dict[str, CodecCost] = field(default_factory=dict)


@dataclass
class ModelProfile:
    """A model's profile on one host: what the planner's cost model reads."""

    model: str
    num_positions: int
    signature: str
    input_shape: list[int]
    threads: int
    repeats: int
    full_forward_s: float
    positions: list[PositionProfile]

    def range_compute_s(self, start: int, stop: int) -> float:
        """Median compute seconds of positions [start:stop] on the profiling host."""
        return max(0.0, self.positions[stop].cum_compute_s - self.positions[start].cum_compute_s)

    def range_flops(self, start: int, stop: int) -> int:
        return self.positions[stop].cum_flops - self.positions[start].cum_flops

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelProfile":
        positions = [
            PositionProfile(**{**p, "codecs": {k: CodecCost(**v) for k, v in p.get("codecs", {}).items()}})
            for p in d["positions"]
        ]
        return cls(**{**d, "positions": positions})


class _NodeTimer(fx.Interpreter):
    """Runs the graph and records each compute node's seconds (and optionally FLOPs)."""

    def __init__(self, gm: fx.GraphModule, clock: Clock, count_flops: bool):
        super().__init__(gm)
        self.clock = clock
        self.count_flops = count_flops
        self.seconds: dict[str, float] = {}
        self.flops: dict[str, int] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op not in ("call_function", "call_method", "call_module"):
            return super().run_node(n)
        if self.count_flops:
            with FlopCounterMode(display=False) as counter:
                out = super().run_node(n)
            self.flops[n.name] = int(counter.get_total_flops())
            return out
        t0 = self.clock()
        out = super().run_node(n)
        self.seconds[n.name] = self.clock() - t0
        return out


def _median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else 0.0


def profile_compute(
    p: Partition,
    inputs: tuple[Any, ...],
    *,
    repeats: int = 10,
    warmup: int = 2,
    count_flops: bool = True,
    clock: Clock = time.perf_counter,
) -> tuple[list[float], list[int], float]:
    """Median seconds and FLOPs of every compute node, and the whole model's median seconds.

    Args:
        p: the partitioned model.
        inputs: model inputs (a tuple).
        repeats: timed runs; the median per node is kept.
        warmup: untimed runs first (allocator and kernel caches).
        count_flops: count each node's FLOPs (one more run; its first use in a process costs ~1 s); False: zeros.
        clock: seconds clock.

    Returns:
        ``(node_seconds, node_flops, full_forward_s)``, node lists indexed by compute node.
    """
    names = [p.node_name(i) for i in range(p.num_positions)]
    samples: dict[str, list[float]] = {n: [] for n in names}
    full: list[float] = []
    with torch.no_grad():
        flop_run = _NodeTimer(p.gm, clock, count_flops=True)
        if count_flops:
            flop_run.run(*inputs)
        for i in range(warmup + repeats):
            timer = _NodeTimer(p.gm, clock, count_flops=False)
            timer.run(*inputs)
            t0 = clock()
            p.model(*inputs)
            dt = clock() - t0
            if i >= warmup:
                full.append(dt)
                for n in names:
                    samples[n].append(timer.seconds.get(n, 0.0))
    return [_median(samples[n]) for n in names], [flop_run.flops.get(n, 0) for n in names], _median(full)


def _offered_at(codec: Any, position: int) -> bool:
    """False where a codec is bound to another position (a learned bottleneck, ``only_at``, is trained for one cut:
    another cut's tensor of the same shape would encode, and decode to garbage)."""
    only = getattr(codec, "only_at", None)
    return only is None or only == position


def _takes(codec: Any, tensors: Sequence[torch.Tensor]) -> bool:
    """Whether ``codec`` encodes every tensor (an image codec refuses what is not an image batch)."""
    from edgeflow.errors import CodecError

    try:
        for t in tensors:
            codec.encode(t)
    except CodecError:
        return False
    return True


def _codec_costs(
    tensors: Sequence[torch.Tensor],
    codecs: Sequence[Any],
    repeats: int,
    clock: Clock,
    disturb: Callable[[], Any] | None = None,
) -> dict[str, CodecCost]:
    from edgeflow.core.codecs import decode  # codecs are optional for compute-only profiles

    costs: dict[str, CodecCost] = {}
    for codec in codecs:
        if not _takes(codec, tensors):  # warm-up too: first calls pay for lazy initialisation
            continue  # refused (an image codec and token ids, fp16 and a -3.4e38 mask): not offered here
        for t in tensors:
            decode(codec.encode(t))
        enc_t: list[float] = []
        dec_t: list[float] = []
        nbytes = 0
        for _ in range(repeats):
            if disturb is not None:
                disturb()
            t0 = clock()
            payloads = [codec.encode(t) for t in tensors]
            enc_t.append(clock() - t0)
            if disturb is not None:
                disturb()
            t0 = clock()
            for pl in payloads:
                decode(pl)
            dec_t.append(clock() - t0)
            nbytes = sum(len(pl) for pl in payloads)
        costs[codec.name] = CodecCost(nbytes=nbytes, encode_s=_median(enc_t), decode_s=_median(dec_t))
    return costs


class _CacheFlush:
    """Stands in for the compute that comes before an encode or decode when serving: streams through a buffer
    larger than the caches (16 MiB, ~1 ms). A codec timed right after it measured what it measured right after
    a forward pass of the demo model (int8 0.19-0.22 ms vs 0.19-0.21; lossless 0.05-0.10 vs 0.06-0.09), at a
    fraction of a forward pass's cost on a large model."""

    def __init__(self, nbytes: int = 16 << 20):
        self._buf = torch.zeros(nbytes, dtype=torch.uint8)

    def __call__(self) -> None:
        self._buf.add_(1)


def _fitted_codec_costs(
    values: dict[int, list[torch.Tensor]],
    codecs: Sequence[Any],
    repeats: int,
    clock: Clock,
    disturb: Callable[[], Any] | None,
    points: int,
) -> dict[int, dict[str, CodecCost]]:
    """Bytes measured at every position; encode and decode seconds timed at ``points`` positions spread over the
    sizes (as served, after ``disturb``) and fitted as ``fixed + per_element x elements`` per codec (least squares,
    both terms >= 0), then read off the fit at every position. Codec time is a per-call cost plus a per-element
    one; timing every position of a large model takes seconds (MobileNetV2 at 224: 153 cuts x 6 codecs)."""
    from edgeflow.errors import CodecError

    all_sizes = {k: sum(int(t.numel()) for t in ts) for k, ts in values.items()}
    out: dict[int, dict[str, CodecCost]] = {k: {} for k in values}
    for codec in codecs:
        for k, ts in values.items():
            if not _offered_at(codec, k):
                continue
            try:
                payloads = [codec.encode(t) for t in ts]
            except CodecError:  # refused here (fp16 and a -3.4e38 attention mask): not offered at this position
                continue
            out[k][codec.name] = CodecCost(nbytes=sum(len(pl) for pl in payloads), encode_s=0.0, decode_s=0.0)
        sizes = {k: n for k, n in all_sizes.items() if codec.name in out[k]}
        if not sizes:
            continue
        distinct = sorted(set(sizes.values()))
        picks = sorted({distinct[round(i * (len(distinct) - 1) / max(1, points - 1))] for i in range(min(points, len(distinct)))})
        at = {n: next(k for k, v in sizes.items() if v == n) for n in picks}
        timed = {n: _codec_costs(values[k], [codec], repeats, clock, disturb)[codec.name] for n, k in at.items()}
        enc = _affine([(n, c.encode_s) for n, c in timed.items()])
        dec = _affine([(n, c.decode_s) for n, c in timed.items()])
        for k, n in sizes.items():
            cost = out[k][codec.name]
            cost.encode_s, cost.decode_s = enc(n), dec(n)
    return out


def _affine(points: Sequence[tuple[int, float]]) -> Callable[[int], float]:
    """``n -> a + b n`` fitted to ``(n, seconds)`` by least squares with ``a, b >= 0``."""
    ns = [float(n) for n, _ in points]
    ts = [t for _, t in points]
    mean_n, mean_t = sum(ns) / len(ns), sum(ts) / len(ts)
    var = sum((n - mean_n) ** 2 for n in ns)
    b = max(0.0, sum((n - mean_n) * (t - mean_t) for n, t in zip(ns, ts)) / var) if var > 0 else 0.0
    a = mean_t - b * mean_n
    if a < 0:  # through the origin
        a, b = 0.0, max(0.0, sum(n * t for n, t in zip(ns, ts)) / max(sum(n * n for n in ns), 1e-12))
    return lambda n: a + b * n


def profile_model(
    p: Partition,
    inputs: tuple[Any, ...],
    *,
    name: str = "model",
    activation_codecs: Sequence[Any] = (),
    input_codecs: Sequence[Any] = (),
    repeats: int = 10,
    codec_repeats: int = 3,
    codecs_as_served: bool = True,
    codec_fit_points: int | None = None,
    count_flops: bool = True,
    clock: Clock = time.perf_counter,
) -> ModelProfile:
    """Profile every position of ``p``: compute, FLOPs, bytes, and per-codec bytes/encode/decode times.

    Args:
        p: the partitioned model (eval mode).
        inputs: model inputs (a tuple).
        name: model name for the report.
        activation_codecs: codec objects tried at every candidate cut.
        input_codecs: codec objects tried on the raw input (position 0), e.g. png/jpeg + lossless.
        repeats: compute timing repeats (median).
        codec_repeats: codec timing repeats (median).
        codecs_as_served: time each encode and decode right after a forward pass of the model, as they run when
            serving (a range's compute, or the wait for a message, comes before each). In a tight loop a codec's
            working set stays in cache: an int8 encode measured 0.1 ms there, 0.4-0.5 ms right after the model
            ran and 0.6-0.7 ms after a 10-30 ms sleep, and agents measured 4x the tight-loop profile in service.
            False: tight loop (the codec's own cost, as ``benchmarks/bench_codecs.py`` reports it).
        codec_fit_points: time the activation codecs at this many positions only and fit the rest (bytes are
            measured everywhere; see ``_fitted_codec_costs``), with a cache flush instead of a forward pass before
            each call: seconds instead of tens on a large model (the live planner's start-up, which corrects
            codec times online afterwards). None: time every cut after a forward pass.
        count_flops: FLOPs per position (``cum_flops``); False leaves them 0 (see :func:`profile_compute`).
        clock: seconds clock.
    """
    node_s, node_flops, full_s = profile_compute(p, inputs, repeats=repeats, count_flops=count_flops, clock=clock)
    values = p.activations(*inputs)

    def forward() -> None:
        with torch.no_grad():
            p.model(*inputs)

    disturb: Callable[[], Any] | None = forward if codecs_as_served else None
    fitted: dict[int, dict[str, CodecCost]] = {}
    if codec_fit_points is not None and activation_codecs:
        flush = _CacheFlush() if codecs_as_served else None
        disturb = flush
        fitted = _fitted_codec_costs({k: values[k] for k in p.cuts}, activation_codecs, codec_repeats, clock, flush,
                                     codec_fit_points)  # fmt: skip
    positions: list[PositionProfile] = []
    cum_s, cum_f = 0.0, 0
    for k in range(p.num_positions + 1):
        if k > 0:
            cum_s += node_s[k - 1]
            cum_f += node_flops[k - 1]
        info = p.cut_info(k)
        is_cut = k in p.cuts
        codecs: dict[str, CodecCost] = {}
        if k == 0 and input_codecs:
            codecs = _codec_costs(values[0], input_codecs, codec_repeats, clock, disturb)  # those that take the input
        elif is_cut and activation_codecs:
            here = [c for c in activation_codecs if _offered_at(c, k)]
            codecs = fitted.get(k) or _codec_costs(values[k], here, codec_repeats, clock, disturb)
        positions.append(
            PositionProfile(
                position=k,
                label="input" if k == 0 else p.node_label(k - 1),
                cum_compute_s=cum_s,
                cum_flops=cum_f,
                nbytes=info.nbytes,
                is_cut=is_cut,
                tensors=[t.to_json() for t in info.tensors],
                codecs=codecs,
            )
        )
    shape = list(inputs[0].shape) if inputs and isinstance(inputs[0], torch.Tensor) else []
    return ModelProfile(
        model=name,
        num_positions=p.num_positions,
        signature=p.signature,
        input_shape=shape,
        threads=torch.get_num_threads(),
        repeats=repeats,
        full_forward_s=full_s,
        positions=positions,
    )
