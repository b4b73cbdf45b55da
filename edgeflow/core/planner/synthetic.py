"""Seeded synthetic cost tables: random profiles, exits, drops, caps and conditions.

A test tool that ships with the product (like ``edgeflow.testing``): the oracle tests and the planner benchmark
draw many instances from here. Everything is drawn from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgeflow.core.exits import CalibrationRow, CalibrationTable
from edgeflow.core.plan import TIERS
from edgeflow.core.profile import CodecCost, ModelProfile, PositionProfile

from .costmodel import Conditions, CostModel, LinkState, PowerSpec, TierSpec
from .exitmodel import ExitModel

__all__ = ["synthetic_profile", "synthetic_exits", "synthetic_model", "synthetic_conditions"]


def synthetic_profile(
    rng: np.random.Generator,
    num_positions: int,
    codecs: Sequence[str] = ("lossless", "int8", "int4"),
    input_codecs: Sequence[str] = ("lossless", "jpeg"),
    *,
    cut_fraction: float = 0.8,
    node_s: float = 2e-3,
    nbytes: Sequence[int] | None = None,
    name: str = "synthetic",
) -> ModelProfile:
    """A profile with random per-node seconds (mean ``node_s``), bytes and codec costs."""
    n = num_positions
    sizes = list(nbytes) if nbytes is not None else [int(x) for x in rng.integers(1_000, 400_000, n + 1)]
    cum = np.concatenate([[0.0], np.cumsum(rng.exponential(node_s, n))])
    positions = []
    for k in range(n + 1):
        is_cut = 0 < k < n and bool(rng.random() < cut_fraction)
        costs: dict[str, CodecCost] = {}
        names = input_codecs if k == 0 else codecs if is_cut else ()
        for c in names:
            ratio = 1.0 if c == "lossless" else float(rng.uniform(1.5, 30.0))
            costs[c] = CodecCost(
                nbytes=max(16, int(sizes[k] / ratio)),
                encode_s=float(rng.exponential(sizes[k] * 2e-9 + 1e-4)),
                decode_s=float(rng.exponential(sizes[k] * 1e-9 + 5e-5)),
            )
        positions.append(PositionProfile(k, f"n{k}", float(cum[k]), k * 1000, sizes[k], is_cut, [], costs))
    return ModelProfile(name, n, "synthetic-graph", [1, 3, 32, 32], 1, 1, float(cum[-1]), positions)


def synthetic_exits(
    rng: np.random.Generator,
    positions: Sequence[int],
    grid: Sequence[float] = (0.6, 0.9),
    *,
    source: str = "samples",
    num_samples: int = 60,
    max_enabled: int | None = None,
) -> ExitModel:
    """Exit behaviour from random per-sample confidences (``source="samples"``) or a random table."""
    e = len(positions)
    base = rng.uniform(0.3, 1.0, (num_samples, 1))  # per-sample easiness, shared by heads: correlated exits
    conf = np.clip(base + rng.normal(0.0, 0.15, (num_samples, e)) + np.linspace(0.0, 0.1, e), 0.0, 1.0)
    exit_ok = rng.random((num_samples, e)) < np.clip(conf + 0.1, 0.0, 1.0)
    final_ok = rng.random(num_samples) < 0.95
    if source == "samples":
        return ExitModel.from_samples(positions, conf, exit_ok, final_ok, grid, max_enabled)
    rows = []
    for j, pos in enumerate(positions):
        for t in grid:
            fire = conf[:, j] >= t
            rows.append(
                CalibrationRow(
                    pos, "max_prob", float(t), float(fire.mean()),
                    float(exit_ok[fire, j].mean()) if fire.any() else None,
                    float(np.where(fire, exit_ok[:, j], final_ok).mean()),
                )
            )  # fmt: skip
    table = CalibrationTable(rows, float(final_ok.mean()), {}, num_samples)
    return ExitModel.from_calibration(table, grid, max_enabled=max_enabled)


def synthetic_model(
    rng: np.random.Generator,
    *,
    num_positions: int = 7,
    num_tiers: int = 3,
    codecs: Sequence[str] = ("lossless", "int8", "int4"),
    input_codecs: Sequence[str] = ("lossless", "jpeg"),
    num_exits: int = 2,
    grid: Sequence[float] = (0.6, 0.9),
    exit_source: str = "samples",
    memory_caps: bool = False,
    privacy: bool = False,
    max_accuracy_drop_pts: float | None = None,
) -> CostModel:
    """A random cost model: tiers with their own random profiles (same bytes), exits, drops, caps, power."""
    n = num_positions
    sizes = [int(x) for x in rng.integers(1_000, 400_000, n + 1)]
    cut_seed = int(rng.integers(1 << 30))
    profiles = []
    for t in range(num_tiers):
        sub = np.random.default_rng(cut_seed)  # same cuts and codec bytes on every tier...
        prof = synthetic_profile(sub, n, codecs, input_codecs, nbytes=sizes)
        speed = rng.uniform(0.2, 3.0, n)  # ...but per-node compute differs per tier
        cum = np.concatenate([[0.0], np.cumsum(np.diff([p.cum_compute_s for p in prof.positions]) * speed)])
        for k, p in enumerate(prof.positions):
            p.cum_compute_s = float(cum[k])
            for c in p.codecs.values():
                c.encode_s *= float(rng.uniform(0.5, 2.0))
                c.decode_s *= float(rng.uniform(0.5, 2.0))
        profiles.append(prof)
    cuts = [k for k in range(1, n) if profiles[0].positions[k].is_cut]
    exit_pos = sorted(rng.choice(cuts, size=min(num_exits, len(cuts)), replace=False).tolist()) if cuts else []
    exits = synthetic_exits(rng, exit_pos, grid, source=exit_source) if exit_pos else None
    drops = {(k, c): float(rng.choice([0.0, 0.25, 0.5, 1.0, 1.5])) for k in range(n) for c in (*codecs, *input_codecs)}
    params = [int(x) for x in rng.integers(0, 200_000, n)]
    names = TIERS[-num_tiers:] if num_tiers < 3 else TIERS
    total_mem = sum(params) + max(sizes)
    tiers = [
        TierSpec(
            name,
            profiles[i],
            compute_scale=float(rng.uniform(0.5, 4.0)),
            codec_scale=float(rng.uniform(0.5, 2.0)),
            memory_cap_nbytes=float(rng.uniform(0.2, 1.1) * total_mem) if memory_caps else None,
            power=PowerSpec(*map(float, rng.uniform([0.1, 1.0, 0.5], [1.0, 5.0, 3.0]))),
            exit_head_s={e: float(rng.exponential(2e-4)) for e in exit_pos},
        )
        for i, name in enumerate(names)
    ]
    drop_pts = float(rng.uniform(0.0, 3.0)) if max_accuracy_drop_pts is None else max_accuracy_drop_pts
    return CostModel(
        tiers, exits, codec_accuracy_drop=drops, max_accuracy_drop_pts=drop_pts, privacy=privacy, param_nbytes=params
    )


def synthetic_conditions(rng: np.random.Generator, num_links: int, names: Sequence[str] = TIERS) -> Conditions:
    """Random links (0.1-1000 Mbit/s log-uniform, RTT 0-100 ms), queues (0-5 ms) and corrections (0.5-2)."""
    links = tuple(
        LinkState(float(10 ** rng.uniform(5, 9)), float(rng.uniform(0.0, 0.1))) for _ in range(num_links)
    )
    return Conditions(
        links,
        queue_s={nm: float(rng.uniform(0.0, 5e-3)) for nm in names},
        compute_factor={nm: float(rng.uniform(0.5, 2.0)) for nm in names},
        compute_fixed_s={nm: float(rng.uniform(-5e-4, 3e-3)) for nm in names},
        codec_factor={nm: (float(rng.uniform(0.5, 3.0)), float(rng.uniform(0.5, 3.0))) for nm in names},
    )
