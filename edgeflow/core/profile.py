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
    clock: Clock = time.perf_counter,
) -> tuple[list[float], list[int], float]:
    """Median seconds and FLOPs of every compute node, and the whole model's median seconds.

    Args:
        p: the partitioned model.
        inputs: model inputs (a tuple).
        repeats: timed runs; the median per node is kept.
        warmup: untimed runs first (allocator and kernel caches).
        clock: seconds clock.

    Returns:
        ``(node_seconds, node_flops, full_forward_s)``, node lists indexed by compute node.
    """
    names = [p.node_name(i) for i in range(p.num_positions)]
    samples: dict[str, list[float]] = {n: [] for n in names}
    full: list[float] = []
    with torch.no_grad():
        flop_run = _NodeTimer(p.gm, clock, count_flops=True)
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
        for t in tensors:  # warm-up: first calls pay for lazy initialisation
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
        clock: seconds clock.
    """
    node_s, node_flops, full_s = profile_compute(p, inputs, repeats=repeats, clock=clock)
    values = p.activations(*inputs)

    def forward() -> None:
        with torch.no_grad():
            p.model(*inputs)

    disturb = forward if codecs_as_served else None
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
            codecs = _codec_costs(values[0], input_codecs, codec_repeats, clock, disturb)
        elif is_cut and activation_codecs:
            codecs = _codec_costs(values[k], activation_codecs, codec_repeats, clock, disturb)
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
