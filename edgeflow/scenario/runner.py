"""The scenario runner: agents, emulated links, the workload, and every run of a scenario, stopped for certain.

    result = run_scenario(scenario, nodes, scenario_dir=Path("scenarios"), out_dir=Path("reports/x"))

A scenario is a sequence of *runs*, one plan each (edgeflow's, then the baselines', see
:mod:`edgeflow.scenario.baselines`), through the same kind of deployment:

    device (this process) --[device_edge link]--> edge agent --[edge_cloud link]--> cloud agent

- Cloud and edge agents are ``edgeflow agent`` processes (:mod:`edgeflow.scenario.procs`), one set per run,
  all started up front, with node files written to ``<out>/nodes/<run>/``. A tier the plan skips relays.
- Each link is a userspace emulator (:mod:`edgeflow.scenario.links`) that is unshaped until its run starts,
  then shaped by the scenario with its clock at 0: every run replays the same trace from the start.
- The device runs in this process (:mod:`edgeflow.scenario.drive`), one device agent per device.
- Runs go one after another, so they do not share the CPU; each run's agents stop when it ends.

Planning: the agents take a fixed plan per process and do not re-plan per request yet, so ``plan: auto``
runs the plan the planner chooses once from the links' mean rates (:attr:`ScenarioResult.adaptation` says
so, and the report repeats it). Nothing pretends to adapt.

Stopping: everything started is stopped in ``finally`` blocks (links, device agents, agent process groups),
on success, on error and on Ctrl-C; SIGTERM to the runner is turned into the same path while it runs.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import yaml

from edgeflow.agent.agent import Agent, wire_limits
from edgeflow.agent.client import peer_client
from edgeflow.agent.loader import load_runtime
from edgeflow.agent.runtime import ModelRuntime
from edgeflow.agent.upstream import Upstream
from edgeflow.config import NodeConfig
from edgeflow.core.plan import Plan
from edgeflow.errors import ConfigError, EdgeflowError, PlanError, ScenarioError
from edgeflow.scenario import baselines as bl
from edgeflow.scenario.drive import DeviceSender, Outcome, RawInputSender, Sender, drive
from edgeflow.scenario.links import LinkPlan, RunLink, go_live_all, link_plan
from edgeflow.scenario.planning import PlanningModel, build_planning_model, link_conditions
from edgeflow.scenario.procs import AgentProcess, stop_all, wait_all
from edgeflow.scenario.schema import LINK_NAMES, Scenario
from edgeflow.scenario.workload import Workload, build_workload, reference_predictions
from edgeflow.transport import PeerClient

__all__ = ["RunResult", "ScenarioResult", "RunnerEvents", "ScenarioRunner", "run_scenario"]

AGENT_START_TIMEOUT_S = 120.0
_WARMUP_REQUESTS = 2


@dataclass
class RunResult:
    """One run: its plan, an outcome per request, and what its links carried."""

    spec: bl.RunSpec
    outcomes: list[Outcome]
    duration_s: float
    link_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    agents: dict[str, str] = field(default_factory=dict)  # tier -> address
    notes: list[str] = field(default_factory=list)


@dataclass
class ScenarioResult:
    """Everything a report needs."""

    scenario: Scenario
    workload: Workload
    reference: np.ndarray  # (R,) top-1 of the unsplit fp32 model
    runs: dict[str, RunResult]  # in the order they ran; "edgeflow" first
    links: dict[str, LinkPlan]
    input_codec: bl.InputCodecChoice
    best_fixed: str | None  # name of the run chosen as best fixed split
    best_fixed_how: str
    adaptation: dict[str, str]
    planner: dict[str, Any]
    timings_s: dict[str, float]
    baseline_names: dict[str, str]  # baseline -> run name it refers to (best-fixed -> the chosen run)


@dataclass
class RunnerEvents:
    """Callbacks for progress display (all optional; ``on_request`` runs on worker threads)."""

    on_phase: Callable[[str], None] = lambda text: None
    on_run_start: Callable[[str, int], None] = lambda name, total: None
    on_request: Callable[[str, Outcome], None] = lambda name, outcome: None
    on_run_end: Callable[[RunResult], None] = lambda result: None


@dataclass
class _Deployment:
    """The agent processes and the edge->cloud link of one run."""

    procs: dict[str, AgentProcess] = field(default_factory=dict)  # tier -> process
    edge_cloud: RunLink | None = None

    @property
    def edge_address(self) -> str | None:
        p = self.procs.get("edge")
        return p.address if p is not None else None


class ScenarioRunner:
    """Runs one scenario (see the module doc).

    Args:
        scenario: the validated scenario.
        nodes: the node configs of ``device``, ``edge`` and ``cloud`` (read by the caller, overrides applied).
        scenario_dir: folder of the scenario file (relative trace paths start there).
        out_dir: report folder; node files and agent logs go in it too.
        events: progress callbacks.
    """

    def __init__(self, scenario: Scenario, nodes: Mapping[str, NodeConfig], *, scenario_dir: Path, out_dir: Path,
                 events: RunnerEvents | None = None):
        self.scenario = scenario
        self.nodes = dict(nodes)
        self.scenario_dir = scenario_dir
        self.out_dir = out_dir
        self.events = events or RunnerEvents()
        self._procs: list[AgentProcess] = []
        self._links: list[RunLink] = []
        self._senders: list[Sender] = []
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------------------------ top level
    def run(self) -> ScenarioResult:
        """Prepare, start every agent, run each plan in turn, stop everything.

        Raises:
            ScenarioError: an agent did not start, or the scenario cannot run as written.
            ConfigError, PlanError, ArtifactError: invalid nodes, plan or model.
            KeyboardInterrupt: Ctrl-C or SIGTERM (after stopping everything).
        """
        threads = torch.get_num_threads()
        with self._sigterm_as_interrupt():
            try:
                torch.set_num_threads(self.nodes["device"].compute.threads)  # the in-process device computes as its node says
                return self._run()
            finally:
                self.close()
                torch.set_num_threads(threads)

    def close(self) -> None:
        """Stop whatever is still running. Idempotent."""
        for s in self._senders:
            with contextlib.suppress(Exception):
                s.close()
        self._senders.clear()
        for link in self._links:
            with contextlib.suppress(Exception):
                link.stop()
        self._links.clear()
        stop_all(self._procs, grace_s=3.0)
        self._procs.clear()

    @contextlib.contextmanager
    def _sigterm_as_interrupt(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run(self) -> ScenarioResult:
        sc = self.scenario
        t_start = time.monotonic()
        self.events.on_phase("loading the model and the workload")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        device_cfg = self._node("device", Plan.parse("device[0:]"), upstream=None)
        runtime = load_runtime(device_cfg)
        example = runtime.example_input[0]
        workload = build_workload(sc.workload, tuple(example.shape))
        reference = reference_predictions(runtime.model, workload.inputs)
        links = {name: link_plan(name, getattr(sc.links, name), self.scenario_dir, seed=sc.workload.seed + 10 * i)
                 for i, name in enumerate(LINK_NAMES)}  # fmt: skip
        self.timings["prepare_s"] = time.monotonic() - t_start

        self.events.on_phase("profiling the model for the planner")
        t = time.monotonic()
        planning = build_planning_model(
            runtime, self.nodes, workload.inputs[:1].contiguous(), artifact=sc.model.artifact,
            accuracy_floor_pts=sc.accuracy_floor_pts, privacy=sc.privacy,
        )  # fmt: skip
        truth = workload.labels if workload.labels is not None else reference
        sample = min(64, len(workload))
        codec_choice = bl.choose_input_codec(runtime.model, workload.inputs[:sample], truth[:sample])
        specs, planner_info, adaptation = self._plan_runs(planning, links, codec_choice)
        self.timings["planning_s"] = time.monotonic() - t

        first_of: dict[str, str] = {}  # plan key -> the run that measures it (equal plans are one experiment)
        for spec in specs:
            first_of.setdefault(spec.key, spec.name)
        unique = [s for s in specs if first_of[s.key] == s.name]
        self.events.on_phase(f"starting agents for {len(unique)} runs")
        t = time.monotonic()
        deployments = self._deploy(unique)
        self.timings["agents_start_s"] = time.monotonic() - t

        runs: dict[str, RunResult] = {}
        t = time.monotonic()
        for spec in specs:
            if first_of[spec.key] != spec.name:
                runs[spec.name] = _reused(spec, runs[first_of[spec.key]])
                continue
            runs[spec.name] = self._execute(spec, deployments.pop(spec.name), runtime, workload, links)
        self.timings["runs_s"] = time.monotonic() - t

        best, how = self._pick_best_fixed(runs)
        names = {b: (best if b == "best-fixed" else b) for b in sc.baselines}
        self.timings["total_s"] = time.monotonic() - t_start
        return ScenarioResult(sc, workload, reference, runs, links, codec_choice, best, how, adaptation, planner_info,
                              dict(self.timings), {k: v for k, v in names.items() if v is not None})

    # ------------------------------------------------------------------------------------ planning
    def _plan_runs(
        self, planning: PlanningModel, links: Mapping[str, LinkPlan], codec: bl.InputCodecChoice
    ) -> tuple[list[bl.RunSpec], dict[str, Any], dict[str, str]]:
        sc = self.scenario
        traces = [links[n].trace for n in LINK_NAMES]
        delays = [links[n].delay_s for n in LINK_NAMES]
        cond = link_conditions(traces, delays, compute_factor=planning.compute_factor)
        slo_s = sc.slo_ms / 1000.0 if sc.slo_ms is not None and sc.objective != "throughput" else None
        info: dict[str, Any] = {
            "exit_model": planning.exit_source,
            "compute_factor": round(planning.compute_factor, 3),
            "mean_link_mbit": {n: link.bandwidth_bps / 1e6 for n, link in zip(LINK_NAMES, cond.links)},
            "rtt_ms": {n: link.rtt_s * 1e3 for n, link in zip(LINK_NAMES, cond.links)},
            "objective": sc.objective,
        }
        if sc.fixed_plan is not None:
            plan = sc.fixed_plan
            own = bl.RunSpec("edgeflow", plan, None, "the scenario's fixed plan", bl.predict_latency(planning, plan, None, cond))
        else:
            try:
                cands = planning.best(cond, sc.objective, slo_s=slo_s, top_k=3)
            except PlanError as e:
                if slo_s is None:
                    raise
                cands = planning.best(cond, sc.objective, slo_s=None, top_k=3)  # SLO unreachable: best effort
                info["slo_note"] = f"no plan meets the SLO at the mean rates ({e}); planned without it"
            best = cands[0]
            own = bl.RunSpec("edgeflow", best.plan, best.input_codec,
                             f"planner's best for {sc.objective} at the mean link rates",
                             float(best.breakdown.latency_s))  # fmt: skip
            info["alternatives"] = [{"plan": str(c), "predicted_latency_ms": c.breakdown.latency_s * 1e3} for c in cands[1:]]
        info["plan"] = own.key
        info["predicted_latency_ms"] = None if own.predicted_latency_s is None else own.predicted_latency_s * 1e3
        adaptation = {
            "mode": "static",
            "detail": ("plan chosen once by the planner from the links' mean rates; the agents run one plan per "
                       "process (no per-request plan on the wire yet), so this run does not re-plan")
            if sc.fixed_plan is None else "the scenario fixes the plan",
        }  # fmt: skip
        specs = [own]
        for name in sc.baselines:
            if name in ("device-only", "edge-only", "cloud-only"):
                specs.append(bl.fixed_baseline(name, codec.codec, planning, cond))
            elif name == "neurosurgeon":
                specs.append(bl.neurosurgeon(planning, cond))
        if "best-fixed" in sc.baselines:
            bf = sc.best_fixed
            conds = [(f, link_conditions(traces, delays, f, compute_factor=planning.compute_factor))
                     for f in [1.0, *bf.bandwidth_factors]]
            specs += bl.best_fixed_candidates(
                planning, conds, sc.objective, slo_s=None, top_k=bf.top_k, exclude=[s.key for s in specs],
                max_candidates=bf.max_candidates,
            )  # fmt: skip
        return specs, info, adaptation

    def _pick_best_fixed(self, runs: Mapping[str, RunResult]) -> tuple[str | None, str]:
        if "best-fixed" not in self.scenario.baselines:
            return None, ""
        medians = {}
        for name, r in runs.items():
            lat = [o.latency_s for o in r.outcomes if o.latency_s is not None]
            if len(lat) == len(r.outcomes):  # a plan that lost requests is not a candidate
                medians[name] = float(np.median(lat)) * 1e3
        best = bl.pick_best_fixed(medians)
        listed = ", ".join(f"{n} {m:.1f} ms" for n, m in sorted(medians.items(), key=lambda kv: kv[1]))
        how = (f"lowest measured median latency among {len(medians)} fixed plans that answered every request, "
               f"measured on this scenario's trace and schedule (with hindsight): {listed}")
        return best, how

    # ------------------------------------------------------------------------------------ agents
    def _node(self, tier: str, plan: Plan, upstream: str | None) -> NodeConfig:
        """A tier's node config for one run: its plan, port 0, the scenario's model, short shutdown grace."""
        data = self.nodes[tier].model_dump(mode="json", exclude_none=True)
        data["plan"] = str(plan)
        data["listen"] = {"address": "127.0.0.1:0"}
        data["model"]["artifact"] = self.scenario.model.artifact
        data["deadlines"]["shutdown_grace_s"] = min(float(data["deadlines"]["shutdown_grace_s"]), 1.0)
        if upstream is None:
            data.pop("upstream", None)
        else:
            data["upstream"] = {**data.get("upstream", {}), "address": upstream}
        return NodeConfig.from_mapping(data, source=f"nodes.{tier} for plan {plan}")

    def _start_agent(self, run: str, tier: str, plan: Plan, upstream: str | None) -> AgentProcess:
        cfg = self._node(tier, plan, upstream)
        folder = self.out_dir / "nodes" / run
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{tier}.yaml"
        path.write_text(f"# written by edgeflow run for run {run!r}\n" + yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False))
        proc = AgentProcess(f"{run}/{tier}", path, self.out_dir / "logs" / f"{run}-{tier}.log", ["--profile-repeats", "0"])
        self._procs.append(proc)
        return proc

    def _deploy(self, specs: list[bl.RunSpec]) -> dict[str, _Deployment]:
        """Start every run's agents: clouds (and last-tier edges) first, then edges behind warm links."""
        deps = {s.name: _Deployment() for s in specs}
        for s in specs:
            tiers = s.plan.tiers
            if "cloud" in tiers:
                deps[s.name].procs["cloud"] = self._start_agent(s.name, "cloud", s.plan, None)
            elif "edge" in tiers:
                deps[s.name].procs["edge"] = self._start_agent(s.name, "edge", s.plan, None)
        wait_all(self._procs, AGENT_START_TIMEOUT_S)
        second = []
        for s in specs:
            d = deps[s.name]
            if "cloud" in d.procs:
                cloud = d.procs["cloud"]
                assert cloud.address is not None
                d.edge_cloud = RunLink(cloud.address, f"{s.name}/edge->cloud")
                self._links.append(d.edge_cloud)
                d.procs["edge"] = self._start_agent(s.name, "edge", s.plan, d.edge_cloud.start_warm())
                second.append(d.procs["edge"])
        wait_all(second, AGENT_START_TIMEOUT_S)
        return deps

    # ------------------------------------------------------------------------------------ one run
    def _senders_for(self, spec: bl.RunSpec, dep: _Deployment, runtime: ModelRuntime, n: int) -> tuple[list[Sender], list[RunLink]]:
        senders: list[Sender] = []
        links: list[RunLink] = []
        runs_on_device = spec.plan.stages[0].tier == "device"
        for d in range(n):
            upstream = None
            if dep.edge_address is not None:
                link = RunLink(dep.edge_address, f"{spec.name}/device{d}->edge")
                self._links.append(link)
                links.append(link)
                upstream = link.start_warm()
            if runs_on_device:
                cfg = self._node("device", spec.plan, upstream)
                up = None
                if upstream is not None:
                    up = Upstream(peer_client(cfg), fingerprint=runtime.fingerprint, role="device", connect_s=cfg.deadlines.connect_s)
                agent = Agent(cfg, runtime, upstream=up, profile_repeats=0)
                through = None
                if up is not None and spec.plan.exits:  # warm-up requests that surely reach the edge
                    bare = Plan(spec.plan.stages)
                    through = Agent(self._node("device", bare, upstream), runtime, upstream=up, profile_repeats=0)
                sender: Sender = DeviceSender(agent, through)
            else:
                if upstream is None:
                    raise ScenarioError(f"run {spec.name}: plan {spec.plan} needs an edge agent")
                names = [t.name for t in runtime.cut_info(0).tensors]
                cfg = self.nodes["device"]
                peer = PeerClient(upstream, limits=wire_limits(cfg))
                sender = RawInputSender(peer, fingerprint=runtime.fingerprint, input_names=names,
                                        input_codec=spec.input_codec or "lossless")
            self._senders.append(sender)
            senders.append(sender)
        return senders, links

    def _execute(self, spec: bl.RunSpec, dep: _Deployment, runtime: ModelRuntime, workload: Workload,
                 plans: Mapping[str, LinkPlan]) -> RunResult:
        sc = self.scenario
        self.events.on_phase(f"run {spec.name}: {spec.key}")
        senders, e1 = self._senders_for(spec, dep, runtime, sc.workload.devices)
        notes = []
        try:
            for s in senders:  # warm-up over unshaped links: handshakes, lazy model/codec set-up
                for i in range(min(_WARMUP_REQUESTS, len(workload))):
                    try:
                        s.warm_up(f"{spec.name}-warmup-{i}", workload.inputs[i : i + 1], time.monotonic() + sc.workload.timeout_s)
                    except EdgeflowError as e:
                        notes.append(f"warm-up request failed: {type(e).__name__}: {e}")
            live = [(link, plans["device_edge"]) for link in e1]
            if dep.edge_cloud is not None:
                live.append((dep.edge_cloud, plans["edge_cloud"]))
            # A collection inside a measured compute would be multiplied by the emulated slowdown (a 10 ms pause
            # on a 16x device reads as 160 ms): collect now, and keep what exists out of later collections.
            gc.collect()
            gc.freeze()
            t0 = go_live_all(live)
            self.events.on_run_start(spec.name, len(workload))
            _, outcomes = drive(
                workload.inputs, workload.send_s, workload.device_of, senders, run_name=spec.name,
                timeout_s=sc.workload.timeout_s, concurrency=sc.workload.concurrency, start=t0,
                on_done=lambda o: self.events.on_request(spec.name, o),
            )  # fmt: skip
            duration = time.monotonic() - t0
            stats = {link.label: link.stats() for link, _ in live}
        finally:
            gc.unfreeze()
            for s in senders:
                with contextlib.suppress(Exception):
                    s.close()
                self._senders.remove(s)
            run_links = [*e1, *([dep.edge_cloud] if dep.edge_cloud else [])]
            for link in run_links:
                link.stop()
                self._links.remove(link)
            procs = list(dep.procs.values())
            stop_all(procs, grace_s=3.0)
            for p in procs:
                self._procs.remove(p)
        result = RunResult(spec, outcomes, duration, stats, {t: p.address or "" for t, p in dep.procs.items()}, notes)
        self.events.on_run_end(result)
        return result


def _reused(spec: bl.RunSpec, measured: RunResult) -> RunResult:
    """A run whose plan another run already measured: the same experiment, under this run's name."""
    outcomes = [replace(o, request_id=f"{spec.name}-{o.index}") for o in measured.outcomes]
    note = f"same plan as run {measured.spec.name!r}: its measurement is reported for this run too"
    return RunResult(spec, outcomes, measured.duration_s, measured.link_stats, measured.agents, [note])


def run_scenario(scenario: Scenario, nodes: Mapping[str, NodeConfig], *, scenario_dir: Path, out_dir: Path,
                 events: RunnerEvents | None = None) -> ScenarioResult:
    """Run ``scenario`` (see :class:`ScenarioRunner`)."""
    if set(nodes) != {"device", "edge", "cloud"}:
        raise ConfigError(f"nodes: need device, edge and cloud node configs, got {sorted(nodes)}")
    return ScenarioRunner(scenario, nodes, scenario_dir=scenario_dir, out_dir=out_dir, events=events).run()
