"""``edgeflow plan``: profile a model on this host, then print the best plan for each bandwidth.

    edgeflow plan --bandwidth 2mbit,20mbit --rtt 40ms --device-slowdown 8 --edge-slowdown 2
    edgeflow plan --scenario scenarios/quickstart.yaml --bandwidth 2mbit,20mbit

The CLI is the only place that reads files (profile JSON, cut reports, scenario/node YAML) and the clock;
the planner takes typed objects. Mount with ``register(app)``.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from edgeflow.errors import EdgeflowError

__all__ = ["register", "parse_rate_bps", "parse_duration_s", "parse_size_nbytes", "plan"]

console = Console()
if not console.is_terminal:  # piped or logged: don't squeeze wide tables into 80 columns
    console = Console(width=180)

ACTIVATION_CODECS = ("lossless", "fp16", "bf16", "int8", "int8c", "int4", "int2")
INPUT_CODECS = ("lossless", "png", "jpeg")

_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e([+-]?[0-9]+))?"
_RATE_UNITS = {"bit": 1.0, "bps": 1.0, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}
_SIZE_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


# ------------------------------------------------------------------------------------------ units
def _parse(text: str, units: dict[str, float], option: str, example: str, default_unit: str | None) -> float:
    m = re.fullmatch(_NUMBER + r"\s*([a-z]*)", str(text).strip().lower())
    unit = m.group(3) if m else None
    if m and not unit and default_unit:
        unit = default_unit
    if not m or unit not in units:
        raise ValueError(f"{option}: {text!r} is not a value like {example} (units: {', '.join(units)})")
    value = float(m.group(1)) * 10 ** int(m.group(2) or 0) * units[unit]
    if not value > 0:
        raise ValueError(f"{option}: {text!r} must be > 0")
    return value


def parse_rate_bps(text: str, option: str = "--bandwidth") -> float:
    """``2mbit`` -> 2e6, ``500kbit`` -> 5e5, ``1gbit`` -> 1e9 (bits per second, tc's units; a bare number is bit/s).

    Raises:
        ValueError: naming ``option``.
    """
    return _parse(text, _RATE_UNITS, option, "2mbit, 500kbit or 1gbit", "bit")


def parse_duration_s(text: str, option: str = "--rtt") -> float:
    """``40ms`` -> 0.04, ``0.04s`` -> 0.04, ``500us``; a unit is required. Raises ValueError naming ``option``."""
    return _parse(text, _TIME_UNITS, option, "40ms or 0.04s", None)


def parse_size_nbytes(text: str, option: str) -> float:
    """``64mb`` -> 64e6, ``512kib`` -> 524288, bare number = bytes. Raises ValueError naming ``option``."""
    return _parse(text, _SIZE_UNITS, option, "64mb or 512kib", "b")


def _fail(msg: str) -> None:
    Console(stderr=True).print(f"[bold red]error:[/] {msg}", highlight=False)
    raise typer.Exit(2)


# ------------------------------------------------------------------------------------------ scenario
@dataclass
class _Settings:
    """What the command needs. Precedence: an option given on the command line, then the scenario, then the
    built-in default."""

    model: str = "demo"
    tiers: list[str] = field(default_factory=lambda: ["device", "edge", "cloud"])
    slowdown: dict[str, float] = field(default_factory=dict)
    memory: dict[str, float | None] = field(default_factory=dict)
    power: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    links: list[tuple[float, float]] = field(default_factory=list)  # (bandwidth_bps, rtt_s) from a scenario
    objective: str | None = None
    slo_s: float | None = None
    max_drop_pts: float | None = None
    privacy: bool = False


_UNSHAPED_BPS = 10e9  # a scenario link with neither rate nor trace


def _read_scenario(path: Path, s: _Settings) -> str:
    """Fill ``s`` from a scenario file (``edgeflow.scenario.schema``: nodes, links, model, objective, SLO, floor).

    Returns:
        A note for the header.

    Raises:
        ValueError: unreadable file, or a scenario/node file that does not validate (naming the field path).
    """
    import yaml

    from edgeflow.config import NodeConfig
    from edgeflow.scenario.schema import Scenario, node_file_of

    def load(p: Path, what: str):
        try:
            return yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"--scenario: cannot read {what} {str(p)!r}: {e}") from None
        except RecursionError:
            raise ValueError(f"--scenario: cannot read {what} {str(p)!r}: YAML nested too deeply") from None

    try:
        sc = Scenario.from_mapping(load(path, "scenario"), source=str(path))
        for tier in ("device", "edge", "cloud"):
            ref = getattr(sc.nodes, tier)
            node_path = node_file_of(path.parent, tier, ref)
            node = NodeConfig.from_mapping(load(node_path, f"{tier} node file"), source=str(node_path))
            factor = ref.overrides.get("compute.slowdown_factor", ref.slowdown_factor or node.compute.slowdown_factor)
            s.slowdown[tier] = float(factor)
            cap_mb = ref.overrides.get("compute.memory_cap_mb", node.compute.memory_cap_mb)
            s.memory[tier] = float(cap_mb) * 1e6 if cap_mb else None
            s.power[tier] = (node.power.idle_w, node.power.active_w, node.power.transmit_w)
    except EdgeflowError as e:
        raise ValueError(f"--scenario: {e}") from None
    notes = []
    for name in ("device_edge", "edge_cloud"):
        lk = getattr(sc.links, name)
        rate = lk.rate_mbit
        if rate is None and lk.trace is not None:
            rate = lk.trace.rate_mbit if lk.trace.generator == "constant" else None
            if rate is None:
                notes.append(f"{name} follows a trace: planned at the --bandwidth values" if name == "device_edge"
                             else f"{name} follows a trace: planned at --backhaul")  # fmt: skip
        bps = _UNSHAPED_BPS if lk.rate_mbit is None and lk.trace is None else (rate * 1e6 if rate else None)
        s.links.append((bps if bps is not None else math.nan, 2e-3 * lk.delay_ms))
    artifact = sc.model.artifact
    if artifact.startswith("builtin:"):
        s.model = artifact.removeprefix("builtin:")
    elif artifact.startswith("zoo:"):
        s.model = artifact.removeprefix("zoo:").split("?")[0]
    elif artifact.startswith("text:"):
        s.model = artifact  # the pretrained text model of edgeflow[text], by name
    else:
        s.model = str((path.parent / artifact).resolve())
    s.objective, s.privacy = sc.objective, sc.privacy
    s.slo_s = sc.slo_ms / 1e3 if sc.slo_ms is not None else None
    s.max_drop_pts = sc.accuracy_floor_pts
    return f"scenario {sc.name}" + (f" ({'; '.join(notes)})" if notes else "")


# ------------------------------------------------------------------------------------------ command
def plan(
    model: Optional[str] = typer.Option(
        None, "--model", help="'demo' (default), a zoo name (resnet18, mobilenet_v2, vit) or an artifact path"
    ),
    scenario: Optional[Path] = typer.Option(None, "--scenario", help="scenario YAML: nodes, links, model, objective"),
    bandwidth: Optional[str] = typer.Option(
        None, "--bandwidth", help="device uplink rates, e.g. 2mbit,500kbit,1gbit [default: the scenario's, else 2mbit,20mbit]"
    ),
    rtt: Optional[str] = typer.Option(None, "--rtt", help="device uplink round trip, e.g. 40ms or 0.04s [default: 40ms]"),
    backhaul: Optional[str] = typer.Option(None, "--backhaul", help="edge-cloud link rate [default: 1gbit]"),
    backhaul_rtt: Optional[str] = typer.Option(None, "--backhaul-rtt", help="edge-cloud round trip [default: 10ms]"),
    tiers: str = typer.Option("device,edge,cloud", "--tiers", help="tiers in the chain, source first"),
    device_slowdown: Optional[float] = typer.Option(None, "--device-slowdown", min=0.001, help="compute = host x this"),
    edge_slowdown: Optional[float] = typer.Option(None, "--edge-slowdown", min=0.001),
    cloud_slowdown: Optional[float] = typer.Option(None, "--cloud-slowdown", min=0.001),
    device_memory: Optional[str] = typer.Option(None, "--device-memory", help="cap on params + activations, e.g. 64mb"),
    edge_memory: Optional[str] = typer.Option(None, "--edge-memory"),
    cloud_memory: Optional[str] = typer.Option(None, "--cloud-memory"),
    device_power: Optional[str] = typer.Option(None, "--device-power", help="idle,active,transmit W [default: 0.5,3,1.2]"),
    objective: Optional[str] = typer.Option(None, "--objective", help="latency (default) | energy | throughput"),
    slo: Optional[str] = typer.Option(None, "--slo", help="expected-latency bound, e.g. 50ms"),
    max_drop: Optional[float] = typer.Option(
        None, "--max-drop", min=0.0, help="accuracy floor: points below the full model [default: 1]"
    ),
    privacy: bool = typer.Option(False, "--privacy", help="the raw input never leaves the device"),
    exits: str = typer.Option("joint", "--exits", help="joint (measured per sample) | calibration (table) | off"),
    grid: str = typer.Option("0.8,0.9,0.95,0.99", "--grid", help="exit thresholds tried (besides off)"),
    input_codecs: str = typer.Option(",".join(INPUT_CODECS), "--input-codecs", help="codecs for the raw input"),
    codec_drops: Optional[Path] = typer.Option(None, "--codec-drops", help="bench_cuts.py report with measured drops"),
    profile_path: Optional[Path] = typer.Option(None, "--profile", help="saved profile JSON (edgeflow profile --json)"),
    repeats: int = typer.Option(5, "--repeats", min=1, help="profiling repeats (median kept)"),
    alternatives: int = typer.Option(3, "--alternatives", min=0, max=6, help="alternatives shown"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the plans as JSON here"),
) -> None:
    """Print the best plan (and the next best) for each bandwidth, with its predicted breakdown."""
    s = _Settings()
    note = ""
    try:
        if scenario is not None:
            note = _read_scenario(scenario, s)
        if model is not None:
            s.model = model
        s.tiers = [t.strip() for t in tiers.split(",") if t.strip()]
        for role, factor in (("device", device_slowdown), ("edge", edge_slowdown), ("cloud", cloud_slowdown)):
            if factor is not None:
                s.slowdown[role] = factor
        for role, text in (("device", device_memory), ("edge", edge_memory), ("cloud", cloud_memory)):
            if text is not None:
                s.memory[role] = parse_size_nbytes(text, f"--{role}-memory")
        if device_power is not None or "device" not in s.power:
            text = device_power if device_power is not None else "0.5,3.0,1.2"  # nodes/device.yaml
            try:
                watts = [float(w) for w in text.split(",")]
            except ValueError:
                watts = []
            if len(watts) != 3 or any(w < 0 for w in watts):
                raise ValueError(f"--device-power: expected three watts idle,active,transmit, got {text!r}")
            s.power["device"] = (watts[0], watts[1], watts[2])
        if bandwidth is None:
            scenario_bps = s.links[0][0] if s.links and not math.isnan(s.links[0][0]) else None
            bandwidth = f"{scenario_bps:g}bit" if scenario_bps else "2mbit,20mbit"
        rates = [parse_rate_bps(b, "--bandwidth") for b in bandwidth.split(",") if b.strip()]
        if not rates:
            raise ValueError("--bandwidth: give at least one rate, e.g. 2mbit,20mbit")
        first_rtt = parse_duration_s(rtt, "--rtt") if rtt is not None else (s.links[0][1] if s.links else 0.04)
        back_bps = parse_rate_bps(backhaul, "--backhaul") if backhaul is not None else (
            s.links[1][0] if len(s.links) > 1 and not math.isnan(s.links[1][0]) else 1e9)
        back_rtt = parse_duration_s(backhaul_rtt, "--backhaul-rtt") if backhaul_rtt is not None else (
            s.links[1][1] if len(s.links) > 1 else 0.01)
        slo_s = parse_duration_s(slo, "--slo") if slo is not None else s.slo_s
        thresholds = tuple(float(t) for t in grid.split(",") if t.strip())
    except ValueError as e:
        _fail(str(e))
    bad = [t for t in s.tiers if t not in ("device", "edge", "cloud")]
    if bad or not s.tiers:
        _fail(f"--tiers: {bad or tiers!r} is not a list of device, edge, cloud")
    objective = objective or s.objective or "latency"
    if objective not in ("latency", "energy", "throughput"):
        _fail(f"--objective: expected latency, energy or throughput, got {objective!r}")
    max_drop = max_drop if max_drop is not None else (s.max_drop_pts if s.max_drop_pts is not None else 1.0)
    if exits not in ("joint", "calibration", "off"):
        _fail(f"--exits: expected joint, calibration or off, got {exits!r}")
    try:
        built = _build(s, exits, thresholds, input_codecs, codec_drops, profile_path, repeats, max_drop,
                       privacy or s.privacy)  # fmt: skip
    except (EdgeflowError, ValueError) as e:
        _fail(str(e))

    from edgeflow.core.planner import Conditions, LinkState, Planner

    planner = Planner(built.model)
    out = []
    console.print(built.header(objective, slo_s) + (f"; {note}" if note else ""))
    for rate in rates:
        links = [(rate, first_rtt), (back_bps, back_rtt)][: len(built.model.tiers) - 1]  # the first link is swept
        cond = Conditions(tuple(LinkState(b, r) for b, r in links))
        t0 = time.perf_counter()
        try:
            res = planner.search(cond, objective, latency_slo_s=slo_s, top_k=alternatives)
        except EdgeflowError as e:
            _fail(str(e))
        dt = time.perf_counter() - t0
        _print_result(res, rate, links, built.model.names, dt)
        out.append({"bandwidth_bps": rate, "links": links, "search_s": dt,
                    "best": _cand_json(res.best), "alternatives": [_cand_json(c) for c in res.alternatives]})
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"model": s.model, "objective": objective, "plans": out}, indent=1))
        console.print(f"plans written to {json_out}")


def register(app: typer.Typer) -> None:
    """Add the ``plan`` command to ``app``."""
    app.command("plan")(plan)


# ------------------------------------------------------------------------------------------ building
@dataclass
class _Built:
    model: Any
    note: str

    def header(self, objective: str, slo_s: float | None) -> str:
        slo = f", SLO {slo_s * 1e3:.1f} ms" if slo_s is not None else ""
        return f"{self.note}\nobjective: {objective}{slo}"


def _build(s: _Settings, exits: str, grid: tuple[float, ...], input_codecs: str, codec_drops: Path | None,
           profile_path: Path | None, repeats: int, max_drop: float, privacy: bool) -> _Built:
    import torch

    from edgeflow.core.artifact import load_artifact
    from edgeflow.core.codecs import get_codec
    from edgeflow.core.data import DEMO_WEIGHTS, load_demo_dataset
    from edgeflow.core.partition import partition
    from edgeflow.core.planner import CostModel, ExitModel, PowerSpec, TierSpec, codec_drops_from_cuts, node_param_nbytes
    from edgeflow.core.planner.build import exit_head_seconds, exit_model_from_heads
    from edgeflow.core.profile import ModelProfile, profile_model
    from edgeflow.core.zoo import ZOO_NAMES, build_model

    art = None
    if s.model in ZOO_NAMES:
        torch.manual_seed(0)  # untrained: timings are real, activation statistics are not
        net = build_model(s.model).eval()
        side = int(getattr(getattr(net, "config", None), "image_size", 224))
        from edgeflow.core.data import photo_batch

        x = photo_batch(1, side)
    elif s.model.startswith("text:"):
        from edgeflow.core.text import load_text_model

        net, tokenizer = load_text_model(s.model.removeprefix("text:"))
        x = tokenizer.encode(["A sentence to profile the model on."])  # (input_ids, attention_mask), (1, T) int64
    elif s.model == "demo" or Path(s.model).exists():
        art = load_artifact(DEMO_WEIGHTS if s.model == "demo" else s.model)
        net = art.model
        x = art.example_input()  # a tuple for a model with several inputs (edgeflow export)
        if s.model == "demo":
            x = load_demo_dataset("test")[0][:1].contiguous()
    else:
        raise ValueError(f"--model: {s.model!r} is not 'demo', a zoo model ({', '.join(ZOO_NAMES)}) nor an artifact file")
    p = partition(net, x)
    if profile_path is not None:
        try:
            prof = ModelProfile.from_json(json.loads(profile_path.read_text()))
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise ValueError(f"--profile: cannot read {str(profile_path)!r}: {e}") from None
        if prof.signature != p.signature:
            raise ValueError(f"--profile: {str(profile_path)!r} profiles a different graph than model {s.model!r}")
        how = f"profile {profile_path}"
    else:
        t0 = time.perf_counter()
        image = isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] in (1, 3)
        inp = [get_codec(c) for c in INPUT_CODECS] if image else []
        act = [get_codec(c) for c in ACTIVATION_CODECS]
        prof = profile_model(p, x if isinstance(x, tuple) else (x,), name=s.model, activation_codecs=act, input_codecs=inp, repeats=repeats)
        how = f"profiled on this host in {time.perf_counter() - t0:.1f} s"
    heads = list(art.exits) if art is not None else []
    exit_model, exit_note, head_s = None, "no exits", {}
    if heads and exits != "off":
        head_s = exit_head_seconds(p, heads, x if isinstance(x, torch.Tensor) else x[0])
        if exits == "joint" and s.model == "demo":
            images, labels = load_demo_dataset("calibration")[:2]
            exit_model = exit_model_from_heads(p, heads, images, labels, grid)
            exit_note = f"exits at {list(exit_model.positions)} measured jointly on {len(labels)} calibration images"
        elif art is not None and art.calibration is not None:
            exit_model = ExitModel.from_calibration(art.calibration, grid)
            exit_note = f"exits at {list(exit_model.positions)} from the calibration table (conservative joint)"
    drops = {}
    if codec_drops is not None:
        try:
            drops = codec_drops_from_cuts(json.loads(codec_drops.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"--codec-drops: cannot read {str(codec_drops)!r}: {e}") from None
    chain = []
    for name in s.tiers:
        power = PowerSpec(*s.power.get(name, (0.0, 0.0, 0.0)))
        chain.append(TierSpec(name, prof, compute_scale=s.slowdown.get(name, 1.0), memory_cap_nbytes=s.memory.get(name),
                              power=power, exit_head_s=head_s))
    wanted_inputs = [c.strip() for c in input_codecs.split(",") if c.strip()]
    have_inputs = [c for c in wanted_inputs if c in prof.positions[0].codecs]
    model = CostModel(
        chain, exit_model, input_codecs=have_inputs or None, codec_accuracy_drop=drops,
        max_accuracy_drop_pts=max_drop, privacy=privacy, param_nbytes=node_param_nbytes(p),
    )  # fmt: skip
    scale = ", ".join(f"{t.name} x{t.compute_scale:g}" for t in chain)
    acc = model.exit_model.final_accuracy
    floor = f"accuracy floor {max_drop:g} pts below the full model" + (f" ({acc:.2%})" if exit_model is not None else "")
    note = (f"{s.model}: {prof.num_positions} positions, {len(model.cuts)} cuts, {how}; compute {scale}; "
            f"{exit_note}; {floor}; codecs {', '.join(model.activation_codecs)} | input {', '.join(model.input_codecs)}")
    return _Built(model, note)


# ------------------------------------------------------------------------------------------ output
def _rate_text(bps: float) -> str:
    for unit, f in (("Gbit/s", 1e9), ("Mbit/s", 1e6), ("kbit/s", 1e3)):
        if bps >= f:
            return f"{bps / f:g} {unit}"
    return f"{bps:g} bit/s"


def _print_result(res, rate: float, links, names, dt: float) -> None:
    link_text = ", ".join(f"{names[i]}-{names[i + 1]} {_rate_text(b)} rtt {r * 1e3:g} ms" for i, (b, r) in enumerate(links))
    best = res.best
    console.print(
        f"\n[bold]{_rate_text(rate)}[/] ({link_text or 'no links'}): [bold green]{best}[/]  "
        f"{best.breakdown.latency_s * 1e3:.2f} ms, accuracy {best.breakdown.accuracy:.2%}  "
        f"[dim]({res.num_plans:,} plans searched in {dt * 1e3:.1f} ms)[/]"
    )
    table = Table(show_edge=False)
    cols = ["", "plan", "latency ms", *[f"{t} ms" for t in names], "enc ms", "dec ms", "xfer ms", "rtt ms",
            "queue ms", "exit %", "acc %", "KB up", "mJ", "req/s"]  # fmt: skip
    for c in cols:
        table.add_column(c, justify="left" if c == "plan" else "right", overflow="fold")
    for i, c in enumerate([best, *res.alternatives]):
        b = c.breakdown
        table.add_row(
            "best" if i == 0 else f"alt {i}", str(c), f"{b.latency_s * 1e3:.2f}",
            *[f"{b.compute_s[t] * 1e3:.2f}" if t in b.compute_s else "" for t in names],
            f"{b.encode_s * 1e3:.2f}", f"{b.decode_s * 1e3:.2f}", f"{b.transfer_s * 1e3:.2f}", f"{b.rtt_s * 1e3:.1f}",
            f"{b.queue_s * 1e3:.2f}", f"{b.exit_prob:.0%}", f"{b.accuracy:.2%}", f"{b.uplink_nbytes / 1e3:.1f}",
            f"{b.energy_j * 1e3:.2f}", f"{b.throughput_rps:.0f}",
        )  # fmt: skip
    console.print(table)


def _cand_json(c) -> dict[str, Any]:
    return {"plan": str(c.plan), "value": c.value, "breakdown": asdict(c.breakdown)}
