"""The scenario's links: bandwidth traces from the scenario file, and emulated links whose clock starts with a run.

Every run replays its links from t = 0. Agents need their upstream address when they start, before any run,
so each link is a :class:`RunLink` that keeps one port for the whole scenario: between runs a *warm* emulator
listens there (unshaped, or at the mean rates), carrying handshakes, planner start-up probes and warm-up
requests; when a run starts it is replaced, on the same port, by an emulator shaped by the scenario (*live*),
whose link time starts then. Replacing it closes the open connections (gracefully), and gRPC reconnects on the
next call through the live emulator, so the first request of every run pays the same connection setup over the
emulated link.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgeflow.core.traces import MARKOV_3G, MARKOV_LTE, BandwidthTrace, builtin_trace_path, constant, markov, read_trace, steps
from edgeflow.errors import ConfigError, ScenarioError
from edgeflow.netem.link import LinkSpec, Outage
from edgeflow.netem.userspace import LinkEmulator
from edgeflow.scenario.schema import LinkConfig, TraceSpec

__all__ = ["build_trace", "LinkPlan", "link_plan", "RunLink", "swap_all"]

_MBIT = 1e6
_OUTAGE_MODES = {"refuse": (True, False), "stall": (False, False), "reset": (True, True)}
_SWAP_PAUSE_S = 0.1  # lets clients see the warm link close before the live one listens


def build_trace(spec: TraceSpec, base_dir: Path) -> BandwidthTrace:
    """The trace a scenario names, scaled and shifted by ``offset_s`` (so replay starts there).

    Raises:
        ConfigError: an unreadable or malformed trace file (naming file and line), or an unknown builtin.
    """
    if spec.generator == "constant":
        assert spec.rate_mbit is not None
        trace = constant(spec.rate_mbit * _MBIT, spec.duration_s)
    elif spec.generator == "steps":
        trace = steps([(d, r * _MBIT) for d, r in spec.steps or []])
    elif spec.generator in ("markov-3g", "markov-lte"):
        model = MARKOV_3G if spec.generator == "markov-3g" else MARKOV_LTE
        trace = markov(model, spec.duration_s, seed=spec.seed)
    else:
        assert spec.file is not None
        if spec.file.startswith("builtin:"):
            path = builtin_trace_path(spec.file.removeprefix("builtin:"))
        else:
            path = Path(spec.file) if Path(spec.file).is_absolute() else base_dir / spec.file
        trace = read_trace(path, spec.format, bin_s=spec.bin_s)
    if spec.scale != 1.0:
        trace = trace.scaled(spec.scale)
    return _shifted(trace, spec.offset_s) if spec.offset_s else trace


def _shifted(trace: BandwidthTrace, offset_s: float) -> BandwidthTrace:
    """The same looping trace, starting ``offset_s`` in: the segment holding ``offset_s`` is split in two."""
    import numpy as np

    t, r, d = trace.times_s, trace.rate_bps, trace.duration_s
    off = offset_s % d
    if off == 0:
        return trace
    i = int(np.searchsorted(t, off, side="right")) - 1  # segment holding off
    times = [0.0, *(t[i + 1 :] - off), *(t[:i] + (d - off))]
    rates = [r[i], *r[i + 1 :], *r[:i]]
    if t[i] < off:  # the part of segment i before off comes last
        times.append(t[i] + (d - off))
        rates.append(r[i])
    return BandwidthTrace(np.array(times), np.array(rates), d)


class LinkPlan:
    """One scenario link as the emulator takes it: both directions and the outages.

    Attributes:
        name: ``device_edge`` or ``edge_cloud``.
        trace: the uplink's rate (None: unshaped).
        uplink, downlink: the two directions (client -> target is up).
        outages: scheduled outages.
        delay_s: one-way delay.
    """

    def __init__(self, name: str, config: LinkConfig, base_dir: Path, seed: int):
        self.name = name
        self.config = config
        if config.trace is not None:
            self.trace: BandwidthTrace | None = build_trace(config.trace, base_dir)
        elif config.rate_mbit is not None:
            self.trace = constant(config.rate_mbit * _MBIT)
        else:
            self.trace = None
        if config.down_trace is not None:
            down = build_trace(config.down_trace, base_dir)
        elif config.down_rate_mbit is not None:
            down = constant(config.down_rate_mbit * _MBIT)
        else:
            down = self.trace
        self.delay_s = config.delay_ms / 1000.0
        self.uplink = LinkSpec(rate=self.trace, delay_s=self.delay_s, loss=config.loss, seed=seed)
        self.downlink = LinkSpec(rate=down, delay_s=self.delay_s, loss=config.loss, seed=seed + 1)
        self.outages = tuple(
            Outage(o.start_s, o.duration_s, refuse_new=_OUTAGE_MODES[o.mode][0], reset_existing=_OUTAGE_MODES[o.mode][1])
            for o in config.outages
        )

    def mean_specs(self) -> tuple[LinkSpec, LinkSpec]:
        """Both directions at their traces' mean rates, same delay, no loss: the link as a planner that knows only
        its averages sees it."""
        up = None if self.uplink.rate is None else constant(self.uplink.rate.mean_bps)
        down = None if self.downlink.rate is None else constant(self.downlink.rate.mean_bps)
        return LinkSpec(rate=up, delay_s=self.delay_s), LinkSpec(rate=down, delay_s=self.delay_s)

    def rate_bps_at(self, t_s: float) -> float | None:
        """The uplink rate set at link time ``t_s`` (0 in an outage; None when unshaped)."""
        if any(o.start_s <= t_s < o.end_s for o in self.outages):
            return 0.0
        return None if self.trace is None else self.trace.rate_at(t_s)

    def describe(self) -> str:
        if self.trace is None:
            rate = "unshaped"
        elif len(self.trace) == 1:
            rate = f"{self.trace.mean_bps / _MBIT:g} Mbit/s"
        else:
            rate = f"trace, mean {self.trace.mean_bps / _MBIT:.2f} Mbit/s over {self.trace.duration_s:g} s"
        extra = [f"delay {self.config.delay_ms:g} ms"]
        if self.config.loss:
            extra.append(f"loss {self.config.loss:g}")
        if self.outages:
            extra.append("outages " + ", ".join(f"{o.start_s:g}+{o.duration_s:g}s" for o in self.outages))
        return f"{rate}, " + ", ".join(extra)


def link_plan(name: str, config: LinkConfig, base_dir: Path, seed: int) -> LinkPlan:
    """Build a :class:`LinkPlan`, turning trace and emulator errors into a ConfigError naming the link."""
    try:
        return LinkPlan(name, config, base_dir, seed)
    except ConfigError as e:
        raise ConfigError(f"links.{name}: {e}") from None


class RunLink:
    """An emulated link on one port for the whole scenario: *warm* between runs, *live* during a run.

    Warm: unshaped, or at the scenario's mean rates (``mean=True``: what a planner starting up should measure),
    without loss or outages; it carries handshakes and warm-up requests. Live: shaped as the scenario says, link
    time 0 when it starts. Each change replaces the emulator on the same port (closing its connections, which
    clients re-open on their next call). Use :func:`swap_all` to change several links at once.

    Args:
        target: ``host:port`` connections are forwarded to.
        label: for messages.
    """

    def __init__(self, target: str, label: str):
        self.target = target
        self.label = label
        self.port: int | None = None
        self._emu: LinkEmulator | None = None
        self.live = False

    @property
    def address(self) -> str:
        if self.port is None:
            raise ScenarioError(f"link {self.label} is not started")
        return f"127.0.0.1:{self.port}"

    def start(self) -> str:
        """Listen, unshaped, on a free port; returns the address (fixed from now on)."""
        self._listen(LinkSpec(), LinkSpec(), ())
        return self.address

    def close_emulator(self) -> None:
        """Stop the current emulator (and its connections); the port stays this link's."""
        if self._emu is not None:
            self._emu.stop()
            self._emu = None

    def warm(self, plan: LinkPlan | None) -> None:
        """Listen warm: unshaped (``plan`` None) or at ``plan``'s mean rates and delay."""
        if plan is None:
            self._listen(LinkSpec(), LinkSpec(), ())
        else:
            self._listen(*plan.mean_specs(), ())
        self.live = False

    def go_live(self, plan: LinkPlan) -> None:
        """Listen shaped as ``plan``; link time starts now."""
        self._listen(plan.uplink, plan.downlink, plan.outages)
        self.live = True

    def _listen(self, up: LinkSpec, down: LinkSpec, outages: tuple[Outage, ...]) -> None:
        self.close_emulator()
        emu = LinkEmulator(self.target, up, down, outages=outages, listen=("127.0.0.1", self.port or 0))
        try:
            self.port = emu.start()
        except OSError as e:
            raise ScenarioError(f"link {self.label}: cannot listen on port {self.port or 0}: {e}") from None
        self._emu = emu

    def stats(self) -> dict[str, int]:
        from dataclasses import asdict

        return asdict(self._emu.stats()) if self._emu is not None else {}

    def stop(self) -> None:
        self.close_emulator()


def swap_all(links: list[tuple[RunLink, LinkPlan | None]], *, live: bool, mean: bool = False) -> float:
    """Move every link to live (shaped by its plan) or warm (``mean``: at its plan's mean rates, else unshaped)
    at (nearly) the same moment; returns ``time.monotonic()`` when the new emulators start.

    All current emulators close first, then one short pause lets the clients see their connections close (a
    call sent on a connection it has not yet seen closed would fail instead of reconnecting), then the new ones
    listen.
    """
    for link, _ in links:
        link.close_emulator()
    if links:
        time.sleep(_SWAP_PAUSE_S)
    t0 = time.monotonic()
    for link, plan in links:
        if live:
            assert plan is not None
            link.go_live(plan)
        else:
            link.warm(plan if mean else None)
    return t0
