"""A node's stated machine speed (``compute.device_speed``) turned into the emulated ``slowdown_factor``.

One code path for every agent: ``edgeflow agent`` resolves it when it builds its agent
(:func:`edgeflow.agent.wiring.build_agent`), and ``edgeflow run`` resolves every tier's once before it starts them
(:func:`resolve_device_speeds`, one host timing shared by the tiers), then writes the factor into the node files
its agent processes read.

- ``ms_per_model: X``: the emulated machine runs one whole-model forward pass (batch 1) in X ms.
- ``gflops: G``: it sustains G GFLOP/s, so one pass takes ``model FLOPs / G``; the FLOPs are counted as the
  planner's profile counts them (:func:`edgeflow.core.profile.profile_compute`: ``FlopCounterMode``, matmul/conv
  ops, 1 MAC = 2 FLOPs).

The host's own ms per model is measured at start-up: the fastest of 7 single-thread passes, after one warm-up (the
uncontended speed: a shared host only ever adds time). ``slowdown_factor = target ms / host ms``, clamped to
1..1000 (a machine faster than this host is not emulated: the factor stays 1 and the log says so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

import torch

from edgeflow.agent.compute import thread_cpu_s
from edgeflow.agent.runtime import ModelRuntime
from edgeflow.config import NodeConfig

__all__ = ["SpeedResolution", "host_ms_per_model", "model_flops", "resolve_device_speed", "resolve_device_speeds"]

log = logging.getLogger(__name__)

MAX_SLOWDOWN = 1000.0  # ComputeConfig.slowdown_factor's bound


@dataclass(frozen=True)
class SpeedResolution:
    """How a stated speed became a slowdown: the stated figure, the target and host ms per model, the factor."""

    stated: str  # "120.0 ms per model" or "5 GFLOP/s x 0.601 GFLOPs = 120.2 ms per model"
    target_ms: float
    host_ms: float
    slowdown_factor: float

    def describe(self) -> str:
        note = " (the stated machine is not slower than this host: not emulated)" if self.target_ms <= self.host_ms else ""
        return f"device_speed {self.stated}, host {self.host_ms:.2f} ms: slowdown_factor {self.slowdown_factor:.2f}{note}"


def _batch1(runtime: ModelRuntime) -> tuple[torch.Tensor, ...]:
    return tuple(a[:1] for a in runtime.example_input)


def host_ms_per_model(runtime: ModelRuntime, repeats: int = 7) -> float:
    """This host's fastest whole-model forward time (batch 1, one torch thread, as the agents run), in ms of the
    computing thread's CPU time: the work the emulated slowdown multiplies (``edgeflow.agent.compute``). Wall time
    includes what a busy host adds (waiting for a core): on a loaded 2-core host the same MobileNetV2 timed
    16.6-35.6 ms by wall clock, which made the "120 ms phone" a 55-120 ms one from run to run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = _batch1(runtime)
        times = []
        with torch.inference_mode():
            runtime.model(*x)  # warm-up
            for _ in range(repeats):
                t = thread_cpu_s()
                runtime.model(*x)
                times.append(thread_cpu_s() - t)
    finally:
        torch.set_num_threads(threads)
    return 1e3 * max(min(times), 1e-6)  # the fastest: caches warm, as a steady stream of requests finds them


def model_flops(runtime: ModelRuntime) -> int:
    """FLOPs of one whole-model forward pass (batch 1), counted node by node as the planner's profile counts them."""
    from edgeflow.core.profile import profile_compute

    _, node_flops, _ = profile_compute(runtime.partition, _batch1(runtime), repeats=0, warmup=0, count_flops=True)
    return int(sum(node_flops))


def resolve_device_speed(
    config: NodeConfig, runtime: ModelRuntime, *, host_ms: float | None = None
) -> tuple[NodeConfig, SpeedResolution | None]:
    """``config`` with its ``compute.device_speed`` replaced by the ``slowdown_factor`` that emulates it.

    Args:
        config: the node; returned unchanged (with None) when it states no ``device_speed``.
        runtime: its loaded model, timed (and, for ``gflops``, its FLOPs counted) here.
        host_ms: this host's ms per model if already measured (several tiers, one model); else measured now.

    Returns:
        ``(config, resolution)``.
    """
    speed = config.compute.device_speed
    if speed is None:
        return config, None
    if speed.ms_per_model is not None:
        target_ms, stated = speed.ms_per_model, f"{speed.ms_per_model:.1f} ms per model"
    else:
        assert speed.gflops is not None  # DeviceSpeedConfig: exactly one of the two
        flops = model_flops(runtime)
        target_ms = 1e3 * flops / (speed.gflops * 1e9)
        stated = f"{speed.gflops:g} GFLOP/s x {flops / 1e9:.3f} GFLOPs = {target_ms:.1f} ms per model"
    host_ms = host_ms_per_model(runtime) if host_ms is None else host_ms
    factor = min(MAX_SLOWDOWN, max(1.0, target_ms / host_ms))
    compute = config.compute.model_copy(update={"slowdown_factor": factor, "device_speed": None})
    return config.model_copy(update={"compute": compute}), SpeedResolution(stated, target_ms, host_ms, factor)


def resolve_device_speeds(nodes: Mapping[str, NodeConfig], runtime: ModelRuntime) -> dict[str, NodeConfig]:
    """Every node of ``nodes`` (by tier) with its ``device_speed`` resolved (:func:`resolve_device_speed`), the host
    timed once for all of them; each resolution is logged."""
    out = dict(nodes)
    host_ms: float | None = None
    for tier, cfg in nodes.items():
        if cfg.compute.device_speed is None:
            continue
        out[tier], res = resolve_device_speed(cfg, runtime, host_ms=host_ms)
        assert res is not None
        host_ms = res.host_ms
        log.info("%s: %s", tier, res.describe())
    return out
