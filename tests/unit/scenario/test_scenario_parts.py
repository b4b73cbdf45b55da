"""Scenario building blocks without processes: traces, workload, baselines, the driver and the metrics."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeflow.core.planner.oracle import all_choices
from edgeflow.core.planner.search import Planner
from edgeflow.core.planner.synthetic import synthetic_conditions, synthetic_model
from edgeflow.core.traces import steps
from edgeflow.errors import DeadlineExceeded
from edgeflow.scenario import baselines as bl
from edgeflow.scenario.drive import Answer, drive
from edgeflow.scenario.links import _shifted, build_trace, link_plan
from edgeflow.scenario.planning import PlanningModel, link_conditions
from edgeflow.scenario.report import run_metrics
from edgeflow.scenario.schema import LinkConfig, TraceSpec, WorkloadSpec
from edgeflow.scenario.workload import build_workload
from edgeflow.transport import Breakdown, TierTiming


# ------------------------------------------------------------------------------------------------ traces
@pytest.mark.parametrize("offset", [0.5, 1.0, 2.5, 3.0, 5.9, 6.0, 7.25])
def test_shifted_trace_replays_from_the_offset(offset: float) -> None:
    trace = steps([(1.0, 1e6), (2.0, 2e6), (3.0, 3e6)])
    shifted = _shifted(trace, offset)
    assert shifted.duration_s == trace.duration_s
    for t in np.linspace(0, 12, 97):
        assert shifted.rate_at(t) == trace.rate_at(t + offset)


def test_generated_traces_are_seeded_and_packaged_ones_load(tmp_path: Path) -> None:
    a = build_trace(TraceSpec(generator="markov-3g", seed=1, duration_s=120), tmp_path)
    b = build_trace(TraceSpec(generator="markov-3g", seed=1, duration_s=120), tmp_path)
    c = build_trace(TraceSpec(generator="markov-3g", seed=2, duration_s=120), tmp_path)
    assert np.array_equal(a.rate_bps, b.rate_bps) and not np.array_equal(a.rate_bps, c.rate_bps)
    lte = build_trace(TraceSpec(file="builtin:markov-lte", format="cooked", scale=0.5), tmp_path)
    assert 5e6 < lte.mean_bps < 25e6
    s = build_trace(TraceSpec(generator="steps", steps=[(2, 10), (1, 0.5)]), tmp_path)
    assert s.rate_at(1.0) == 10e6 and s.rate_at(2.5) == 0.5e6


def test_link_plan_outages_and_directions(tmp_path: Path) -> None:
    cfg = LinkConfig(rate_mbit=3, down_rate_mbit=20, delay_ms=30, loss=0.01,
                     outages=[{"start_s": 2, "duration_s": 1, "mode": "reset"}])
    lp = link_plan("device_edge", cfg, tmp_path, seed=4)
    assert lp.uplink.rate is not None and lp.uplink.rate.mean_bps == 3e6
    assert lp.downlink.rate is not None and lp.downlink.rate.mean_bps == 20e6
    assert lp.uplink.delay_s == 0.03 and lp.uplink.loss == 0.01
    assert lp.outages[0].refuse_new and lp.outages[0].reset_existing
    assert lp.rate_bps_at(2.5) == 0.0 and lp.rate_bps_at(1.0) == 3e6
    assert link_plan("edge_cloud", LinkConfig(), tmp_path, seed=0).rate_bps_at(1.0) is None


# ------------------------------------------------------------------------------------------------ workload
def test_workload_is_deterministic_and_round_robin() -> None:
    spec = WorkloadSpec(requests=30, seed=7, rate_hz=10, devices=3)
    a, b = build_workload(spec, (1, 3, 64, 64)), build_workload(spec, (1, 3, 64, 64))
    assert torch.equal(a.inputs, b.inputs) and np.array_equal(a.send_s, b.send_s)
    assert a.labels is not None and a.labels.shape == (30,)
    assert a.send_s[0] == 0.0 and np.all(np.diff(a.send_s) >= 0)
    assert list(a.device_of[:6]) == [0, 1, 2, 0, 1, 2]
    fixed = build_workload(WorkloadSpec(requests=5, arrival="fixed", rate_hz=4), (1, 3, 64, 64))
    assert np.allclose(fixed.send_s, [0, 0.25, 0.5, 0.75, 1.0])
    closed = build_workload(WorkloadSpec(requests=5, arrival="closed", source="synthetic"), (1, 3, 32, 32))
    assert closed.send_s is None and closed.labels is None and closed.inputs.shape == (5, 3, 32, 32)


# ------------------------------------------------------------------------------------------------ baselines
def _planning(seed: int = 0) -> tuple[PlanningModel, object]:
    rng = np.random.default_rng(seed)
    cost = synthetic_model(rng, num_positions=7)
    return PlanningModel(cost, Planner(cost), None, "samples"), synthetic_conditions(rng, 2)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_neurosurgeon_is_the_best_lossless_single_cut(seed: int) -> None:
    planning, cond = _planning(seed)
    spec = bl.neurosurgeon(planning, cond)
    cost = planning.cost
    dev, cloud = cost.names.index("device"), cost.names.index("cloud")
    single = [ch for ch in all_choices(cost) if not ch.exits and set(ch.codecs) <= {"lossless"}
              and set(ch.tiers) <= {dev, cloud}]  # fmt: skip
    best = min(cost.evaluate(ch, cond).latency_s for ch in single)
    assert spec.predicted_latency_s == pytest.approx(best)
    assert not spec.plan.exits and all(s.codec in (None, "lossless") for s in spec.plan.stages)
    assert spec.plan.tiers in (("device",), ("cloud",), ("device", "cloud"))


def test_fixed_baselines_and_best_fixed_candidates() -> None:
    planning, cond = _planning(1)
    dev = bl.fixed_baseline("device-only", "jpeg", planning, cond)
    cloud = bl.fixed_baseline("cloud-only", "jpeg", planning, cond)
    assert str(dev.plan) == "device[0:]" and dev.plan.input_codec is None
    assert str(cloud.plan) == "input|jpeg > cloud[0:]" and cloud.plan.input_codec == "jpeg" and cloud.key == str(cloud.plan)
    cands = bl.best_fixed_candidates(planning, [(1.0, cond)], "latency", slo_s=None, top_k=2, exclude=[dev.key],
                                     max_candidates=2)
    assert 1 <= len(cands) <= 2 and len({c.key for c in cands}) == len(cands) and dev.key not in {c.key for c in cands}
    assert bl.pick_best_fixed({"a": 12.0, "b": 9.5, "c": 30.0}) == "b"
    assert bl.pick_best_fixed({}) is None


def test_input_codec_is_the_smaller_one_at_equal_accuracy() -> None:
    from edgeflow.core.data import load_demo_dataset

    images, labels = load_demo_dataset("test")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 10))
    truth = model(images[:16]).argmax(-1).numpy()
    choice = bl.choose_input_codec(model, images[:16], truth)
    assert set(choice.nbytes) == {"png", "jpeg"}
    assert choice.accuracy["png"] == 1.0  # png is lossless for 8-bit images
    if choice.codec == "jpeg":
        assert choice.accuracy["jpeg"] >= choice.accuracy["png"] and choice.nbytes["jpeg"] < choice.nbytes["png"]


def test_link_conditions_use_mean_rates_and_twice_the_delay() -> None:
    cond = link_conditions([steps([(1, 2e6), (1, 4e6)]), None], [0.02, 0.0], factor=0.5, compute_factor=1.5)
    assert cond.links[0].bandwidth_bps == pytest.approx(1.5e6) and cond.links[0].rtt_s == pytest.approx(0.04)
    assert cond.links[1].bandwidth_bps >= 1e9 and cond.compute_factor["edge"] == 1.5


# ------------------------------------------------------------------------------------------------ driver
class _FakeSender:
    """Answers after ``delay_s``; fails requests whose index is in ``fail``; counts concurrency."""

    def __init__(self, delay_s: float = 0.01, fail: set[int] = frozenset()):
        self.delay_s, self.fail = delay_s, fail
        self.active = self.peak = 0
        self.lock = threading.Lock()
        self.sent: list[str] = []

    def plan_text(self) -> str:
        return "device[0:]"

    def warm_up(self, request_id: str, x: torch.Tensor, deadline: float) -> None:
        pass

    def send(self, request_id: str, x: torch.Tensor, deadline: float) -> Answer:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.sent.append(request_id)
        try:
            time.sleep(self.delay_s)
            if int(request_id.rsplit("-", 1)[1]) in self.fail:
                raise DeadlineExceeded("too slow")
            t = TierTiming("device", 0, 4, compute_s=self.delay_s)
            return Answer(torch.tensor([[0.1, 0.9]]), 4, Breakdown([t], "device"), "device[0:]")
        finally:
            with self.lock:
                self.active -= 1

    def close(self) -> None:
        pass


def test_open_loop_follows_the_schedule_and_records_failures() -> None:
    sender = _FakeSender(delay_s=0.05, fail={3})
    send_s = np.array([0.0, 0.02, 0.04, 0.06, 0.2])
    t0, out = drive(torch.zeros(5, 1), send_s, [0] * 5, [sender], run_name="r", timeout_s=2.0)
    assert [o.request_id for o in out] == [f"r-{i}" for i in range(5)]
    assert sender.peak >= 2  # open loop: requests overlap when the schedule says so
    for o, s in zip(out, send_s):
        assert o.start_s >= s - 1e-3
    assert out[3].answer is None and "DeadlineExceeded" in (out[3].error or "")
    assert all(o.plan == "device[0:]" for o in out)  # a lost request still records the plan it was sent with
    assert all(o.answer is not None and o.latency_s is not None and o.latency_s >= 0.05 for i, o in enumerate(out) if i != 3)
    assert sorted(sender.sent) == sorted(f"r-{i}" for i in range(5))  # each sent once


def test_closed_loop_keeps_concurrency_outstanding() -> None:
    senders = [_FakeSender(0.02), _FakeSender(0.02)]
    _, out = drive(torch.zeros(8, 1), None, [0, 1] * 4, senders, run_name="c", timeout_s=2.0, concurrency=2)
    assert all(o.answer is not None for o in out)
    assert max(s.peak for s in senders) <= 2 and len(senders[0].sent) == len(senders[1].sent) == 4


# ------------------------------------------------------------------------------------------------ metrics
def _rec(i: int, status: str = "answered", lat: float = 10.0, plan: str = "p", **kw: object) -> dict:
    r = {"id": f"r-{i}", "send_s": i * 0.1, "plan": plan, "status": status, "answers": 1 if status == "answered" else 0}
    if status == "answered":
        r.update(latency_ms=lat, correct=True, agree=True, exit_position=-1, answered_by="cloud",
                 bytes={"device_edge": {"up": 100, "down": 10}, "edge_cloud": {"up": 50, "down": 10}})
    r.update(kw)
    return r


def test_run_metrics_invariants() -> None:
    recs = [_rec(0, lat=10), _rec(1, lat=20, plan="q"), _rec(2, "lost"), _rec(3, lat=300, correct=False, agree=False),
            _rec(4, lat=40, answers=2)]
    m = run_metrics(recs, slo_ms=100)
    assert m["requests"] == 5 and m["answered"] == 4 and m["lost"] == 1 and m["answered"] + m["lost"] == m["requests"]
    assert m["duplicated"] == 1
    assert m["latency_ms"]["p50"] == pytest.approx(30.0) and m["latency_ms"]["mean"] == pytest.approx(92.5)
    assert m["accuracy"] == 0.75 and m["agreement"] == 0.75
    assert m["bytes_per_request"] == 170 and m["bytes_per_hop"]["device_edge"] == 110
    assert m["plan_switches"] == 2  # p -> q -> p
    assert m["deadline_miss_rate"] == pytest.approx(2 / 5)  # one lost, one over the SLO
    assert run_metrics([_rec(0, "lost")], None)["latency_ms"]["p50"] is None


def test_link_conditions_take_a_compute_factor_per_tier() -> None:
    cond = link_conditions([None, None], [0.0, 0.0], compute_factor={"device": 1.1, "edge": 1.2, "cloud": 1.5})
    assert cond.compute_factor == {"device": 1.1, "edge": 1.2, "cloud": 1.5}


def test_compute_factors_measure_each_tier_with_its_own_slowdown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulation multiplies CPU time, so each tier's correction is measured under that tier's slowdown (one
    calibration per distinct slowdown and thread count), not one wall-clock ratio scaled by every tier's factor."""
    from types import SimpleNamespace

    import edgeflow.agent.agent as agent_mod
    from edgeflow.agent.loader import load_runtime
    from edgeflow.config import NodeConfig
    from edgeflow.scenario.planning import _compute_factors

    def node(role: str, slowdown: float) -> NodeConfig:
        return NodeConfig.from_mapping({"role": role, "plan": f"{role}[0:]", "compute": {"slowdown_factor": slowdown}})

    nodes = {"device": node("device", 3.0), "edge": node("edge", 1.0), "cloud": node("cloud", 1.0)}
    runtime = load_runtime(nodes["device"])
    built: list[float] = []
    real = agent_mod.Agent

    def spy(config: NodeConfig, *args: object, **kw: object) -> object:
        built.append(config.compute.slowdown_factor)
        return real(config, *args, **kw)

    monkeypatch.setattr(agent_mod, "Agent", spy)
    prof = SimpleNamespace(num_positions=runtime.num_positions, range_compute_s=lambda a, b: 1e-3)
    factors = _compute_factors(runtime, nodes, runtime.example_input, prof, repeats=2)
    assert sorted(built) == [1.0, 3.0]  # the device under its slowdown; edge and cloud (equal nodes) once
    assert set(factors) == {"device", "edge", "cloud"} and factors["edge"] == factors["cloud"]
    assert all(0.5 <= f <= 10.0 for f in factors.values())
