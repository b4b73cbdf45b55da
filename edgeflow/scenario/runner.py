"""The scenario runner: agents, emulated links, the workload, and every run of a scenario, stopped for certain.

    result = run_scenario(scenario, nodes, scenario_dir=Path("scenarios"), out_dir=Path("reports/x"))

A scenario is a sequence of *runs* (edgeflow's, then the baselines', see :mod:`edgeflow.scenario.baselines`)
through one deployment:

    device (this process) --[device_edge link]--> edge agent --[edge_cloud link]--> cloud agent

- The cloud and edge agents are ``edgeflow agent`` processes (:mod:`edgeflow.scenario.procs`) with ``plan:
  auto``: every request carries its plan and each tier runs what that plan gives it, so one pair serves every
  run. Their node files are written to ``<out>/nodes/``, their logs to ``<out>/logs/``.
- Each link is a userspace emulator on a fixed port (:class:`~edgeflow.scenario.links.RunLink`): warm between
  runs, live during one, with its clock at 0 when the run starts, so every run replays the same trace from the
  start; each device has its own device-edge link.
- The device is in this process, one agent per device sharing the loaded model (:mod:`.drive`). edgeflow's run
  (``plan: auto``) uses the device's live planner (:class:`edgeflow.agent.live.LivePlanner`), started over links
  at the scenario's mean rates and then fed by every reply; the baselines stamp one fixed plan on every request.
- Runs go one after another, so they never share the CPU.
- The scenario's ``faults`` (:mod:`.faults`) are done to the agents in every run, at the same times after its
  start, as the links' outages are: a killed agent comes back on its port (the link in front of it keeps its
  target), and whatever is still down when a run ends is brought back before the next one.

Stopping: everything started is stopped in ``finally`` blocks (links, device agents, agent process groups),
on success, on error and on Ctrl-C; SIGTERM to the runner is turned into the same path while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
import yaml

from edgeflow.agent.agent import Agent
from edgeflow.agent.gcfreeze import freeze_startup_objects, thaw
from edgeflow.agent.loader import load_runtime
from edgeflow.agent.runtime import ModelRuntime
from edgeflow.agent.speed import resolve_device_speeds
from edgeflow.agent.wiring import build_agent, start_live_planning
from edgeflow.config import AUTO_PLAN, NodeConfig
from edgeflow.core.plan import Plan
from edgeflow.errors import ConfigError, EdgeflowError, PlanError, ScenarioError
from edgeflow.scenario import baselines as bl
from edgeflow.scenario.drive import LocalSender, Outcome, RemoteSender, Sender, drive
from edgeflow.scenario.links import LinkPlan, RunLink, link_plan, swap_all
from edgeflow.scenario.planning import PlanningModel, build_planning_model, link_conditions
from edgeflow.scenario.faults import FaultInjector, link_outage_records
from edgeflow.scenario.schema import LINK_NAMES, Scenario
from edgeflow.scenario.workload import Inputs, Workload, build_workload, expected_inputs, reference_predictions, take
from edgeflow.scenario.procs import AgentProcess, stop_all, wait_all
from edgeflow.transport.tracing import Tracer

__all__ = ["RunResult", "ScenarioResult", "RunnerEvents", "ScenarioRunner", "run_scenario"]

log = logging.getLogger(__name__)

AGENT_START_TIMEOUT_S = 120.0
_WARMUP_REQUESTS = 2
_INPUT_CODECS = ["lossless", "png", "jpeg"]  # what the live planner may send the raw input as


@dataclass
class RunResult:
    """One run: an outcome per request, what its links carried, (adaptive runs) the plan switches, and what its
    faults and link outages did when (seconds after the run's start, see :mod:`.faults`)."""

    spec: bl.RunSpec
    outcomes: list[Outcome]
    duration_s: float
    link_stats: dict[str, dict[str, int]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    switches: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)


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
    adaptation: dict[str, Any]
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
                 events: RunnerEvents | None = None, device_process: bool = False):
        self.scenario = scenario
        self.device_process = device_process
        self._devices: list[str] = []  # device agent processes' addresses (device_process)
        self.nodes = dict(nodes)
        self.scenario_dir = scenario_dir
        self.out_dir = out_dir
        self.events = events or RunnerEvents()
        self._procs: list[AgentProcess] = []
        self._agents: dict[str, AgentProcess] = {}
        self._injector: FaultInjector | None = None
        self._links: list[RunLink] = []
        self._senders: list[Sender] = []
        self.timings: dict[str, float] = {}
        self._tracer: Tracer | None = None  # each request's spans, every tier's, in spans.jsonl (requests.jsonl: trace_id)

    @property
    def _spans_path(self) -> Path:
        """Every tier's spans of every request (JSON lines; ``requests.jsonl`` rows carry their ``trace_id``)."""
        return self.out_dir / "spans.jsonl"

    # ------------------------------------------------------------------------------------ top level
    def run(self) -> ScenarioResult:
        """Prepare, start the agents, run each plan in turn, stop everything.

        Raises:
            ScenarioError: an agent did not start, or the scenario cannot run as written.
            ConfigError, PlanError, ArtifactError: invalid nodes, plan or model.
            KeyboardInterrupt: Ctrl-C or SIGTERM (after stopping everything).
        """
        threads = torch.get_num_threads()
        with self._sigterm_as_interrupt(), self._device_log():
            try:
                torch.set_num_threads(self.nodes["device"].compute.threads)  # the in-process device computes as its node says
                return self._run()
            finally:
                self.close()
                torch.set_num_threads(threads)

    @contextlib.contextmanager
    def _device_log(self) -> Iterator[None]:
        """The in-process device agents log to ``<out>/logs/device.log`` (as the edge and cloud agents do to
        theirs), not to the terminal: a fault makes every request log its fallback."""
        log = logging.getLogger("edgeflow")
        (self.out_dir / "logs").mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.out_dir / "logs" / "device.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        propagate, level = log.propagate, log.level
        log.addHandler(handler)
        log.propagate = False
        if level == logging.NOTSET or level > logging.INFO:
            log.setLevel(logging.INFO)
        try:
            yield
        finally:
            log.removeHandler(handler)
            log.propagate = propagate
            log.setLevel(level)
            handler.close()

    def agent_pids(self) -> dict[str, int]:
        """The process id of each running agent by tier (e.g. to sample their memory while a run goes)."""
        return {tier: p.pid for tier, p in self._agents.items() if p.running()}

    def close(self) -> None:
        """Stop whatever is still running. Idempotent."""
        if self._injector is not None:
            self._injector.abort()
            self._injector = None
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
        if self._tracer is not None:
            self._tracer.close()
            self._tracer = None

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
        runtime = load_runtime(self._node("device", None))
        self.nodes = resolve_device_speeds(self.nodes, runtime)
        workload = build_workload(sc.workload, expected_inputs(runtime), base_dir=self.scenario_dir,
                                  artifact=sc.model.artifact)  # fmt: skip
        reference = reference_predictions(runtime.model, workload.inputs)
        links = {name: link_plan(name, getattr(sc.links, name), self.scenario_dir, seed=sc.workload.seed + 10 * i)
                 for i, name in enumerate(LINK_NAMES)}  # fmt: skip
        self.timings["prepare_s"] = time.monotonic() - t_start

        self.events.on_phase("profiling the model for the baselines' planning")
        t = time.monotonic()
        planning = build_planning_model(
            runtime, self.nodes, take(workload.inputs, 0, 1), artifact=sc.model.artifact,
            accuracy_floor_pts=sc.accuracy_floor_pts, privacy=sc.privacy,
        )  # fmt: skip
        truth = workload.labels if workload.labels is not None else reference
        sample = min(64, len(workload))
        if isinstance(workload.inputs, tuple):  # token ids and a mask: no image codec applies, they go lossless
            codec_choice = bl.InputCodecChoice("lossless", sample=0)
        else:
            codec_choice = bl.choose_input_codec(runtime.model, workload.inputs[:sample], truth[:sample])
        specs, planner_info = self._plan_runs(planning, links, codec_choice)
        self.timings["planning_s"] = time.monotonic() - t

        first_of: dict[str, str] = {}  # plan key -> the run that measures it (equal plans are one experiment)
        for spec in specs:
            first_of.setdefault(spec.key, spec.name)
        self.events.on_phase("starting the edge and cloud agents")
        t = time.monotonic()
        edge_cloud, edge_address = self._deploy()
        device_links = [RunLink(edge_address, f"device{d}->edge") for d in range(sc.workload.devices)]
        for link in device_links:
            self._links.append(link)
            link.start()
        if self.device_process:
            self.events.on_phase("starting the device agent processes; each plans live over links at the mean rates")
            warm = [(link, links["device_edge"]) for link in device_links] + [(edge_cloud, links["edge_cloud"])]
            self._devices = self._start_devices(device_links, warm)
        self.timings["agents_start_s"] = time.monotonic() - t

        runs: dict[str, RunResult] = {}
        t = time.monotonic()
        for spec in specs:
            if first_of[spec.key] != spec.name:
                runs[spec.name] = _reused(spec, runs[first_of[spec.key]])
                continue
            live = [(link, links["device_edge"]) for link in device_links] + [(edge_cloud, links["edge_cloud"])]
            runs[spec.name] = self._execute(spec, runtime, workload, live)
        self.timings["runs_s"] = time.monotonic() - t

        best, how = self._pick_best_fixed(runs)
        names = {b: (best if b == "best-fixed" else b) for b in sc.baselines}
        own = runs["edgeflow"]
        adaptation = _adaptation(own)
        self.timings["total_s"] = time.monotonic() - t_start
        return ScenarioResult(sc, workload, reference, runs, links, codec_choice, best, how, adaptation, planner_info,
                              dict(self.timings), {k: v for k, v in names.items() if v is not None})

    # ------------------------------------------------------------------------------------ planning
    def _plan_runs(
        self, planning: PlanningModel, links: Mapping[str, LinkPlan], codec: bl.InputCodecChoice
    ) -> tuple[list[bl.RunSpec], dict[str, Any]]:
        sc = self.scenario
        traces = [links[n].trace for n in LINK_NAMES]
        delays = [links[n].delay_s for n in LINK_NAMES]
        cond = link_conditions(traces, delays, compute_factor=planning.compute_factors or planning.compute_factor)
        slo_s = sc.slo_ms / 1000.0 if sc.slo_ms is not None and sc.objective != "throughput" else None
        info: dict[str, Any] = {
            "exit_model": planning.exit_source,
            "compute_factor": round(planning.compute_factor, 3),
            "compute_factors": {t: round(f, 3) for t, f in (planning.compute_factors or {}).items()},
            "mean_link_mbit": {n: link.bandwidth_bps / 1e6 for n, link in zip(LINK_NAMES, cond.links)},
            "rtt_ms": {n: link.rtt_s * 1e3 for n, link in zip(LINK_NAMES, cond.links)},
            "objective": sc.objective,
            "device": "agent process (--device-process), inputs sent over gRPC" if self.device_process else "in process",
        }
        static = None
        if sc.plan not in (AUTO_PLAN, "static"):
            plan = Plan.parse(sc.plan)
            own = bl.RunSpec("edgeflow", plan, "the scenario's fixed plan", bl.predict_latency(planning, plan, cond))
        else:
            try:
                cands = planning.best(cond, sc.objective, slo_s=slo_s, top_k=3)
            except PlanError as e:
                if slo_s is None:
                    raise
                cands = planning.best(cond, sc.objective, slo_s=None, top_k=3)  # SLO unreachable: best effort
                info["slo_note"] = f"no plan meets the SLO at the mean rates ({e}); planned without it"
            static = bl.RunSpec("edgeflow", cands[0].plan,
                                f"planner's best for {sc.objective} at the mean link rates, chosen once",
                                float(cands[0].breakdown.latency_s))  # fmt: skip
            info["static_plan"] = static.key
            info["static_predicted_latency_ms"] = static.predicted_latency_s * 1e3 if static.predicted_latency_s else None
            info["static_alternatives"] = [{"plan": str(c), "predicted_latency_ms": c.breakdown.latency_s * 1e3} for c in cands[1:]]
            if sc.plan == "static":
                own = static
            else:
                own = bl.RunSpec("edgeflow", Plan.parse("device[0:]"),
                                 "the device's live planner: each request goes by its current plan", None, adaptive=True)
        specs = [own]
        for name in sc.baselines:
            if name in ("device-only", "edge-only", "cloud-only"):
                specs.append(bl.fixed_baseline(name, codec.codec, planning, cond))
            elif name == "neurosurgeon":
                specs.append(bl.neurosurgeon(planning, cond))
            elif name == "a-priori" and static is not None:  # what a user picks once from the mean rates
                specs.append(bl.RunSpec("a-priori", static.plan, static.how, static.predicted_latency_s))
        if "best-fixed" in sc.baselines:
            bf = sc.best_fixed
            conds = [(f, link_conditions(traces, delays, f, compute_factor=planning.compute_factors or planning.compute_factor))
                     for f in [1.0, *bf.bandwidth_factors]]  # fmt: skip
            specs += bl.best_fixed_candidates(
                planning, conds, sc.objective, slo_s=None, top_k=bf.top_k, exclude=[s.key for s in specs if not s.adaptive],
                max_candidates=bf.max_candidates,
            )  # fmt: skip
        return specs, info

    def _pick_best_fixed(self, runs: Mapping[str, RunResult]) -> tuple[str | None, str]:
        if "best-fixed" not in self.scenario.baselines:
            return None, ""
        medians = {}
        for name, r in runs.items():
            if r.spec.adaptive:
                continue
            lat = [o.latency_s for o in r.outcomes if o.latency_s is not None]
            if len(lat) == len(r.outcomes):  # a plan that lost requests is not a candidate
                medians[name] = float(np.median(lat)) * 1e3
        best = bl.pick_best_fixed(medians)
        listed = ", ".join(f"{n} {m:.1f} ms" for n, m in sorted(medians.items(), key=lambda kv: kv[1]))
        how = (f"lowest measured median latency among {len(medians)} fixed plans that answered every request, "
               f"measured on this scenario's trace and schedule (with hindsight): {listed}")
        return best, how

    # ------------------------------------------------------------------------------------ agents
    def _node(self, tier: str, upstream: str | None) -> NodeConfig:
        """A tier's node config for this scenario: ``plan: auto``, port 0, the scenario's model, short grace."""
        data = self.nodes[tier].model_dump(mode="json", exclude_none=True)
        data["plan"] = AUTO_PLAN
        data["listen"] = {"address": "127.0.0.1:0"}
        if data["model"]["artifact"] != self.scenario.model.artifact:
            data["model"].pop("fingerprint", None)  # the node file's pin names its own artifact, not this one
        data["model"]["artifact"] = self.scenario.model.artifact
        data["compute"].pop("device_speed", None)  # resolved into slowdown_factor at start-up
        data["deadlines"]["shutdown_grace_s"] = min(float(data["deadlines"]["shutdown_grace_s"]), 1.0)
        data["tracing"] = {"enabled": True, "exporter": "jsonl", "path": str(self._spans_path)}
        lie = next((f for f in self.scenario.faults if f.lie == tier), None)
        if lie is not None:  # a lying tier (faults: lie): for the device's validate, every run
            data["chaos"] = {"wrong_class": lie.fraction, "choice": lie.choice, "seed": lie.seed}
        if upstream is None:
            data.pop("upstream", None)
        else:
            data["upstream"] = {**data.get("upstream", {}), "address": upstream}
        return NodeConfig.from_mapping(data, source=f"nodes.{tier} (scenario {self.scenario.name})")

    def _start_agent(self, tier: str, upstream: str | None, *, cfg: NodeConfig | None = None) -> AgentProcess:
        cfg = cfg if cfg is not None else self._node(tier, upstream)
        folder = self.out_dir / "nodes"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{tier}.yaml"
        body = yaml.safe_dump(cfg.model_dump(mode="json", exclude_none=True), sort_keys=False)
        path.write_text(f"# written by edgeflow run for scenario {self.scenario.name!r}\n" + body)
        proc = AgentProcess(tier, path, log_path=self.out_dir / "logs" / f"{tier}.log")
        self._procs.append(proc)
        return proc

    def _deploy(self) -> tuple[RunLink, str]:
        """Start the cloud agent, the edge-cloud link in front of it, and the edge agent behind that link."""
        cloud = self._start_agent("cloud", None)
        wait_all([cloud], AGENT_START_TIMEOUT_S)
        assert cloud.address is not None
        self._agents["cloud"] = cloud
        edge_cloud = RunLink(cloud.address, "edge->cloud")
        self._links.append(edge_cloud)
        edge = self._start_agent("edge", edge_cloud.start())
        wait_all([edge], AGENT_START_TIMEOUT_S)
        assert edge.address is not None
        self._agents["edge"] = edge
        return edge_cloud, edge.address

    # ------------------------------------------------------------------------------------ one run
    def _device_agent(self, runtime: ModelRuntime, upstream: str) -> Agent:
        return build_agent(self._node("device", upstream), runtime=runtime)

    def _planner_settings(self) -> Any:
        """The device's ``planner`` section for edgeflow's run: the scenario's objective, SLO, floor and privacy."""
        sc = self.scenario
        return self.nodes["device"].planner.model_copy(update={
            "enabled": True, "objective": sc.objective, "slo_ms": sc.slo_ms if sc.objective != "throughput" else None,
            "max_accuracy_drop_pts": sc.accuracy_floor_pts, "privacy": sc.privacy, "input_codecs": _INPUT_CODECS,
        })  # fmt: skip

    def _start_devices(self, device_links: list[RunLink], warm: list[tuple[RunLink, LinkPlan]]) -> list[str]:
        """``--device-process``: one device agent process per device behind its link, with the scenario's planner
        settings; returns their addresses once each has chosen its first live plan over links at the mean rates."""
        swap_all(warm, live=False, mean=True)
        procs = []
        for d, link in enumerate(device_links):
            cfg = self._node("device", link.address).model_copy(update={"planner": self._planner_settings()})
            procs.append(self._start_agent(f"device{d}", None, cfg=cfg))
        wait_all(procs, AGENT_START_TIMEOUT_S)
        for proc in procs:
            assert proc.address is not None
            _wait_live(proc, AGENT_START_TIMEOUT_S)
        return [str(p.address) for p in procs]

    def _sender(self, spec: bl.RunSpec, runtime: ModelRuntime, device: int, link: RunLink, example: Inputs) -> Sender:
        if self.device_process:
            return RemoteSender(self._devices[device], None if spec.adaptive else spec.plan)
        agent = self._device_agent(runtime, link.address)
        if not spec.adaptive:
            return LocalSender(agent, spec.plan)
        try:
            start_live_planning(agent, wait=True, example=example, settings=self._planner_settings())
        except BaseException:
            agent.close()
            raise
        return LocalSender(agent)

    def _execute(self, spec: bl.RunSpec, runtime: ModelRuntime, workload: Workload,
                 live: list[tuple[RunLink, LinkPlan]]) -> RunResult:
        sc = self.scenario
        self.events.on_phase(f"run {spec.name}: {'live plan' if spec.adaptive else spec.key}")
        device_links = [link for link, _ in live[: sc.workload.devices]]
        # warm links: at the mean rates for a live planner's start-up probes (what a static plan knows), else unshaped
        swap_all(live, live=False, mean=spec.adaptive)
        senders: list[Sender] = []
        notes: list[str] = []
        # a device agent process is sent a sentence workload as text and tokenizes it itself (edgeflow.agent.textin)
        sent = workload.texts if self.device_process and workload.texts is not None else workload.inputs
        try:
            for d, link in enumerate(device_links):
                senders.append(self._sender(spec, runtime, d, link, take(workload.inputs, 0, 1)))
                self._senders.append(senders[-1])
            for s in senders:  # warm-up: handshakes, first runs of ranges; not measured
                for i in range(min(_WARMUP_REQUESTS, len(workload))):
                    try:
                        s.warm_up(f"{spec.name}-warmup-{i}", take(sent, i, i + 1), time.monotonic() + sc.workload.timeout_s)
                    except EdgeflowError as e:
                        notes.append(f"warm-up request failed: {type(e).__name__}: {e}")
            # A collection inside a measured compute would be multiplied by the emulated slowdown (a 10 ms pause
            # on a 16x device reads as 160 ms): collect now, and keep what exists out of later collections.
            freeze_startup_objects()
            t0 = swap_all(live, live=True)
            done_to = [f for f in sc.faults if f.lie is None]  # a lie is the tier's node file (chaos), not an event
            if done_to:
                self._injector = FaultInjector(done_to, self._agents, start=t0, restart_timeout_s=AGENT_START_TIMEOUT_S)
                self._injector.start()
            self.events.on_run_start(spec.name, len(workload))
            if self._tracer is None:
                self._tracer = Tracer.create("edgeflow-device", exporter="jsonl", path=self._spans_path)
            _, outcomes = drive(
                sent, workload.send_s, workload.device_of, senders, run_name=spec.name,
                timeout_s=sc.workload.timeout_s, concurrency=sc.workload.concurrency, start=t0,
                streamed=sc.workload.streamed,
                on_done=lambda o: self.events.on_request(spec.name, o), tracer=self._tracer,
            )  # fmt: skip
            duration = time.monotonic() - t0
            faults = link_outage_records({plan.name: plan for _, plan in live[sc.workload.devices - 1 :]})
            if self._injector is not None:
                self.events.on_phase(f"run {spec.name}: bringing back agents that are down")
                faults = self._injector.finish() + faults
                self._injector = None
            faults.sort(key=lambda f: (f["down_s"] is None, f["down_s"] or 0.0))
            stats = {link.label: link.stats() for link, _ in live}
            switches = [_switch_json(sw, t0) for s in senders for sw in s.switches() if sw.t_s >= t0]
        finally:
            thaw()
            if self._injector is not None:  # the run failed or was interrupted: inject nothing more
                self._injector.abort()
                self._injector = None
            for s in senders:
                with contextlib.suppress(Exception):
                    s.close()
                self._senders.remove(s)
        result = RunResult(spec, outcomes, duration, stats, notes, switches, faults)
        self.events.on_run_end(result)
        return result


def _wait_live(proc: AgentProcess, timeout_s: float) -> None:
    """Wait until a device agent process has its first live plan (its Describe says so); each poll is one Describe.

    Raises:
        ScenarioError: it reports that its live planner did not start, or it does not get ready within ``timeout_s``.
    """
    from edgeflow.transport import PeerClient

    assert proc.address is not None
    end = time.monotonic() + timeout_s
    with PeerClient(proc.address) as peer:
        while True:
            d = peer.describe(timeout_s=10.0)
            if d.live is not None and d.live.error:
                raise ScenarioError(f"{proc.name} agent: live planner did not start: {d.live.error}\n{proc.log}")
            if d.live is not None and d.live.ready:
                return
            if time.monotonic() > end:
                raise ScenarioError(f"{proc.name} agent: no live plan within {timeout_s:g} s\n{proc.log}")
            time.sleep(0.05)


def _switch_json(sw: Any, t0: float) -> dict[str, Any]:
    return {"t_s": round(sw.t_s - t0, 4), "request_index": sw.request_index, "old": sw.old, "new": sw.new,
            "reason": sw.reason}  # fmt: skip


def _adaptation(run: RunResult) -> dict[str, Any]:
    if run.spec.adaptive:
        plans = {o.plan for o in run.outcomes if o.plan}
        return {
            "mode": "adaptive",
            "detail": (f"the device's live planner chose each request's plan ({len(run.switches)} switches, "
                       f"{len(plans)} distinct plans); it started on links at the scenario's mean rates and then "
                       f"learned from every reply and from probes"),
            "switches": run.switches,
        }  # fmt: skip
    how = run.spec.how
    return {"mode": "static", "detail": how + "; every request goes by it (no re-planning)", "switches": []}


def _reused(spec: bl.RunSpec, measured: RunResult) -> RunResult:
    """A run whose plan another run already measured: the same experiment, under this run's name."""
    outcomes = [replace(o, request_id=f"{spec.name}-{o.index}") for o in measured.outcomes]
    note = f"same plan as run {measured.spec.name!r}: its measurement is reported for this run too"
    return RunResult(spec, outcomes, measured.duration_s, measured.link_stats, [note], faults=measured.faults)


def run_scenario(scenario: Scenario, nodes: Mapping[str, NodeConfig], *, scenario_dir: Path, out_dir: Path,
                 events: RunnerEvents | None = None, device_process: bool = False) -> ScenarioResult:
    """Run ``scenario`` (see :class:`ScenarioRunner`)."""
    if set(nodes) != {"device", "edge", "cloud"}:
        raise ConfigError(f"nodes: need device, edge and cloud node configs, got {sorted(nodes)}")
    return ScenarioRunner(scenario, nodes, scenario_dir=scenario_dir, out_dir=out_dir, events=events,
                          device_process=device_process).run()  # fmt: skip
