"""Plans per request (the device stamps each request; upstream tiers follow it) and the live planner's loop."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from typing import Callable

import pytest
import torch

from edgeflow.agent import Agent, DeviceClient, LivePlanner, ModelRuntime
from edgeflow.config import NodeConfig, PlannerConfig
from edgeflow.core.codecs import get_codec
from edgeflow.core.plan import ExitPoint, Plan
from edgeflow.errors import ConfigError
from edgeflow.transport import Breakdown, InferCall, LoopbackClient, RemoteError, TierTiming, WireTensor, datatype_of

ChainFactory = Callable[..., list[Agent]]
STATIC = "device[0:13]|lossless > edge[13:36]|lossless > cloud[36:]"
PLANS = (
    "device[0:7]|lossless > edge[7:36]|lossless > cloud[36:]",
    "device[0:20]|lossless > cloud[20:]",
    "edge[0:13]|lossless > cloud[13:]",
    "device[0:]",
    "device[0:4]|lossless > edge[4:]",
)


def _x(batch: int = 1, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def _reference(runtime: ModelRuntime, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return runtime.model(x)


@pytest.mark.parametrize("plan", PLANS)
def test_upstream_tiers_run_the_request_plan(chain: ChainFactory, runtime: ModelRuntime, plan: str) -> None:
    agents = chain(STATIC, roles=("device", "edge", "cloud"))
    x = _x(2)
    ans = agents[0].submit_local([x], request_id="r", deadline=1e12, plan=plan)
    assert ans.plan == plan
    assert torch.equal(ans.values[0], _reference(runtime, x))
    want = Plan.parse(plan).resolved(runtime.num_positions)
    ran = {t.tier: (t.start, t.stop) for t in ans.breakdown.tiers if t.stop > t.start}
    assert ran == {s.tier: (s.start, s.stop) for s in want.stages}
    assert ans.breakdown.answered_by == want.stages[-1].tier


def test_absent_plan_falls_back_to_the_configured_one(chain: ChainFactory, runtime: ModelRuntime) -> None:
    agents = chain(STATIC, roles=("device", "edge", "cloud"))
    x = _x()
    wire = WireTensor("", datatype_of("float32"), tuple(x.shape), "lossless", get_codec("lossless").encode(x))
    reply = LoopbackClient(agents[1]).infer(InferCall("r", runtime.fingerprint, 0, [wire]), timeout_s=10)
    assert [(t.tier, t.start, t.stop) for t in reply.breakdown.tiers] == [("edge", 0, 36), ("cloud", 36, 70)]


@pytest.mark.parametrize(
    "tier, start, plan, message",
    [
        ("edge", 13, "device[0:13] > edge[13:", "request plan"),
        ("edge", 13, "device[0:13]|nope > edge[13:]", "unknown codec"),
        ("edge", 13, "device[0:13]|lossless > edge[13:71]", "past the model output"),
        ("edge", 13, "device[0:13] > edge[13:30] > cloud[30:]  exits@22:0.9", "no exit head"),
        ("cloud", 36, "device[0:13] > edge[13:]", "continues past cloud"),
    ],
)
def test_bad_request_plans_are_invalid_argument(
    chain: ChainFactory, runtime: ModelRuntime, tier: str, start: int, plan: str, message: str
) -> None:
    agents = {a.role: a for a in chain(STATIC, roles=("device", "edge", "cloud"))}
    values = runtime.partition.activations(_x(), positions=[start])[start]
    info = runtime.cut_info(start).tensors
    codec = get_codec("lossless")
    wire = [WireTensor(i.name, datatype_of(i.dtype), tuple(v.shape), "lossless", codec.encode(v)) for i, v in zip(info, values)]
    with pytest.raises(RemoteError) as e:
        LoopbackClient(agents[tier]).infer(InferCall("r", runtime.fingerprint, start, wire, plan=plan), timeout_s=10)
    assert e.value.code == "INVALID_ARGUMENT" and message in e.value.details


class _Flipper:
    """A stand-in live planner: every request gets the next plan of a cycle (a switch per request)."""

    def __init__(self, plans: tuple[str, ...]):
        self._plans = itertools.cycle([Plan.parse(p) for p in plans])
        self._lock = threading.Lock()
        self.observed: list[str] = []
        self.switches: list[object] = []
        self.settings = PlannerConfig()

    def current_breakdown(self) -> tuple[Plan, None]:
        with self._lock:
            return next(self._plans), None

    def predict(self, plan: Plan) -> None:
        return None

    def observe(self, breakdown: Breakdown, plan: str, *, decide: bool = True, proxy: float | None = None) -> None:
        with self._lock:
            self.observed.append(plan)

    def close(self) -> None:
        pass


def test_switching_mid_burst_loses_and_repeats_nothing(chain: ChainFactory, runtime: ModelRuntime) -> None:
    agents = chain(STATIC, roles=("device", "edge", "cloud"))
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    cloud_infer = agents[2].infer

    def counting(call: InferCall, deadline: float):  # type: ignore[no-untyped-def]
        with lock:
            seen[call.request_id] += 1
        return cloud_infer(call, deadline)

    agents[2].infer = counting  # type: ignore[method-assign]
    flipper = _Flipper(PLANS)
    assert agents[0].source is not None
    agents[0].source.attach(flipper)  # type: ignore[arg-type]
    device = DeviceClient(agents[0], max_inflight=4)
    xs = [_x(1, seed=i) for i in range(30)]
    results = list(device.infer_many(xs))
    device._pool.shutdown(wait=True)
    assert agents[0].source.settle()  # every reply learned from
    assert len(results) == len(xs) and len({r.request_id for r in results}) == len(xs)
    for x, r in zip(xs, results):  # in input order, each under its own plan, each correct
        assert torch.equal(r.output, _reference(runtime, x)), r.plan
    assert Counter(r.plan for r in results) == Counter({p: 6 for p in PLANS})
    assert sorted(map(str, flipper.observed)) == sorted(r.plan for r in results)
    to_cloud = [r.request_id for r in results if "cloud" in r.plan]
    assert sorted(seen) == sorted(to_cloud) and set(seen.values()) == {1}


def test_plan_auto_config() -> None:
    cfg = NodeConfig.from_mapping({"role": "device", "plan": "auto"})
    assert cfg.auto and str(cfg.parsed_plan) == "device[0:]"
    edge = NodeConfig.from_mapping({"role": "edge", "plan": "auto", "upstream": {"address": "127.0.0.1:1"}})
    assert str(edge.parsed_plan) == "edge[0:]"
    assert NodeConfig.from_mapping({"role": "device", "plan": "device[0:]", "planner": {"enabled": True}}).auto
    with pytest.raises(ConfigError, match="planner.margin"):
        NodeConfig.from_mapping({"role": "device", "plan": "auto", "planner": {"margin": 2}})


def _live(agents: list[Agent], **settings: object) -> LivePlanner:
    descriptions = [a.describe() for a in agents[1:]]
    return LivePlanner.start(agents[0], PlannerConfig(**settings), descriptions=descriptions, profile_repeats=1)


def _reply(nbytes: int, network_s: float, *, plan: str = "device[0:13]|lossless > cloud[13:]",
           compute_s: tuple[float, float] = (1e-3, 1e-3)) -> tuple[Breakdown, str]:
    tiers = [TierTiming("device", 0, 13, compute_s=compute_s[0], network_s=network_s, bytes_out=nbytes, bytes_back=100),
             TierTiming("cloud", 13, 70, compute_s=compute_s[1])]  # fmt: skip
    return Breakdown(tiers, "cloud"), plan


def test_live_planner_learns_the_link_from_replies_and_switches(chain: ChainFactory) -> None:
    agents = chain("auto", roles=("device", "cloud"))
    clock = [100.0]
    live = _live(agents, hold_s=0.0, min_interval_s=0.0)
    live.clock = lambda: clock[0]
    live.replanner.tracker.observe_rtt(0, 0.001, clock[0])
    # the replies' compute, relative to this host's profile (the cloud has none of its own, so it shares the
    # device's): a device 4x slower than profiled and a cloud 4x faster, so cloud-only wins on the fast link
    md = live.model
    compute = (4 * md.stage_compute_s("device", 0, 13), md.stage_compute_s("cloud", 13, 70) / 4)
    for _ in range(8):  # a fast link: 1 MB in 10 ms + RTT
        clock[0] += 0.05
        live.observe(*_reply(1_000_000, 0.011, compute_s=compute))
    fast = live.estimate_bps(0)
    assert fast is not None and 0.8e9 < fast < 1.2e9
    for _ in range(8):  # 1000x slower
        clock[0] += 0.05
        live.observe(*_reply(1_000_000, 10.001, compute_s=compute))
    slow = live.estimate_bps(0)
    assert slow is not None and 0.6e6 < slow < 1.0e6
    assert [s.request_index for s in live.switches][0] <= 3  # to the cloud on the fast link, within 3 replies
    after = [s for s in live.switches if s.request_index > 8]
    assert after and after[0].request_index <= 8 + 3  # and away from it within 3 replies of the drop
    assert live.plan.tiers[0] == "device" and all(s.new != s.old and s.reason for s in live.switches)
    live.close()


def test_live_planner_builds_the_devices_ranges_before_any_request(
    chain: ChainFactory, runtime: ModelRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from edgeflow.agent.wiring import start_live_planning

    agents = chain("auto", roles=("device", "cloud"))
    start_live_planning(agents[0], wait=True, settings=PlannerConfig(), profile_repeats=1)

    def no_build(a: int, b: int) -> None:
        raise AssertionError(f"range [{a}:{b}] built by a request")

    monkeypatch.setattr(runtime.partition, "_build_range", no_build)
    n = runtime.num_positions
    exits = [ExitPoint(p, 1.0) for p in runtime.exits]  # never confident enough: every segment runs
    for stop in [*runtime.cuts, n]:  # any device[0:c], with its exits or without
        runtime.run(0, stop, [_x()])
        runtime.run(0, stop, [_x()], exits)


class _Peer:
    """A link to probe: 1 ms round trip, 1 Gbit/s; raises PeerUnavailable while ``down``."""

    def __init__(self) -> None:
        self.down = False
        self.probes = 0

    def probe(self, *, send_nbytes: int = 0, reply_nbytes: int = 0, echo: bool = False, timeout_s: float = 10.0) -> float:
        from edgeflow.errors import PeerUnavailable

        self.probes += 1
        if self.down:
            raise PeerUnavailable("peer: connection refused")
        return 1e-3 + 8 * (send_nbytes + reply_nbytes) / 1e9


def _fell_back(plan: Plan, *, sent_s_ago: float = 0.01) -> Breakdown:
    tiers = [TierTiming("device", 0, 13, compute_s=1e-3, total_s=sent_s_ago),
             TierTiming("edge", 13, 70, compute_s=1e-3)]  # fmt: skip
    return Breakdown(tiers, "edge", fallback="edge: upstream cloud at 127.0.0.1:9 unavailable: refused; finished [13:70] locally")


def test_live_planner_plans_without_a_down_tier_and_returns_when_it_answers(chain: ChainFactory) -> None:
    import dataclasses

    agents = chain("auto", roles=("device", "edge", "cloud"), compute={"slowdown_factor": 30.0})
    descriptions = [a.describe() for a in agents[1:]]
    descriptions[-1] = dataclasses.replace(descriptions[-1], slowdown_factor=1.0)  # a fast cloud: worth the hops
    peers = [_Peer(), _Peer()]
    live = LivePlanner.start(agents[0], PlannerConfig(down_probe_s=0.01), descriptions=descriptions, peers=peers,
                             profile_repeats=1)  # fmt: skip
    try:
        assert "cloud" in live.plan.tiers
        peers[1].down = True
        live.observe(_fell_back(live.plan), live.plan)
        assert live.down_tiers() == {"cloud"} and "cloud" not in live.plan.tiers
        assert live.switches[-1].reason.startswith("cloud down: edge: upstream cloud at 127.0.0.1:9 unavailable")
        probes = peers[1].probes
        for _ in range(500):  # the watcher probes it meanwhile
            if peers[1].probes > probes + 2:
                break
            time.sleep(0.01)
        assert live.down_tiers() == {"cloud"}
        peers[1].down = False
        for _ in range(500):
            if not live.down_tiers():
                break
            time.sleep(0.01)
        assert live.down_tiers() == frozenset() and "cloud" in live.plan.tiers
        assert live.switches[-1].reason == "cloud back"
        live.observe(_fell_back(live.plan, sent_s_ago=60.0), live.plan)  # sent before the cloud came back
        assert live.down_tiers() == frozenset()
    finally:
        live.close()


def test_the_device_reaches_the_cloud_only_through_its_edge(chain: ChainFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgeflow.agent.live import RelayedPeer
    from edgeflow.errors import NoUpstream

    agents = chain("auto", roles=("device", "edge", "cloud"))
    device, edge, cloud = agents
    assert edge.describe().upstream == "cloud-loopback"  # an address the device could not dial
    forwarded: list[int] = []
    probe = edge.probe_upstream

    def counted(send_nbytes: int, deadline: float) -> float:
        forwarded.append(send_nbytes)
        return probe(send_nbytes, deadline)

    monkeypatch.setattr(edge, "probe_upstream", counted)
    live = LivePlanner.start(device, PlannerConfig(), profile_repeats=1)
    try:
        assert live.model.names == ("device", "edge", "cloud")  # the cloud, described by the edge
        assert isinstance(live.peers[1], RelayedPeer) and forwarded  # and its link probed by the edge
        assert cloud.describe().role == edge.describe_upstream(time.monotonic() + 5).role == "cloud"
        with pytest.raises(NoUpstream, match="cloud has no upstream"):
            cloud.probe_upstream(0, time.monotonic() + 5)
    finally:
        live.close()


def test_a_relay_that_does_not_forward_is_not_read_as_an_instant_link() -> None:
    from edgeflow.agent.live import RelayedPeer
    from edgeflow.errors import PeerUnavailable

    class OldEdge:  # answers the probe itself: forward_s stays 0
        address = "edge:1"

        def probe_upstream(self, *, send_nbytes: int = 0, timeout_s: float = 10.0) -> float:
            return 0.0

    with pytest.raises(PeerUnavailable, match="did not forward the probe to cloud:2"):
        RelayedPeer(OldEdge(), "cloud:2").probe(send_nbytes=1000)


def test_each_request_is_priced_at_its_own_contents_bytes(chain: ChainFactory, runtime: ModelRuntime) -> None:
    """Through the device's Source (the path both the in-process client and a device agent process take): replies
    teach the hop's bytes against the input's content proxy, and a later input's ticket prices its own bytes."""
    from edgeflow.agent.wiring import start_live_planning
    from edgeflow.core.data import load_demo_dataset
    from edgeflow.core.planner.content import content_proxy

    agents = chain("auto", roles=("device", "cloud"))
    start_live_planning(agents[0], wait=True, settings=PlannerConfig(), profile_repeats=1)
    source = agents[0].source
    assert source is not None and source.planner is not None
    live = source.planner
    device = DeviceClient(agents[0])
    images = list(torch.nn.functional.avg_pool2d(load_demo_dataset("test")[0][:40], 4).split(1))  # (1, 3, 16, 16)
    plan = Plan.parse("device[0:1]|int4 > cloud[1:]")
    sent = [device.infer(x, plan=plan).breakdown.tiers[0].bytes_out for x in images[:30]]
    assert source.settle()
    assert live.content.samples(1, "int4") == pytest.approx(30, abs=3)  # decayed a little
    # on inputs it has not seen, the fit predicts each hop's bytes better than the profiled (one image's) bytes
    md = live.model
    i, k = md.hop_pos.tolist().index(1), md.codecs.index("int4")
    profiled = float(md.nbytes[0, i, k])
    fit_err, flat_err = [], []
    for x in images[30:]:
        got = device.infer(x, plan=plan).breakdown.tiers[0].bytes_out
        fit_err.append(abs(live.content.predict(1, "int4", content_proxy([x]), profiled) - got) / got)
        flat_err.append(abs(profiled - got) / got)
    assert sum(fit_err) < 0.6 * sum(flat_err)
    # a ticket adds what its content's bytes cost on the link, to the paths that cross the hop
    busy = max(images[30:], key=lambda x: content_proxy([x]))
    t = source.ticket(plan, values=[busy])
    assert t.proxy == content_proxy([busy]) and t.content_s
    source.release(t)
    assert source.ticket(Plan.parse("device[0:]"), values=[busy]).proxy is None  # sends nothing: no proxy taken
    assert sent and sum(sent) > 0


def test_a_message_quicker_than_the_estimate_allows_gets_the_link_probed(chain: ChainFactory) -> None:
    """A small message cannot time a fast link, but one far quicker than the estimate prices it says the estimate
    is stale (a link back from an outage): the link is probed at once, not when the estimate expires."""
    agents = chain("auto", roles=("device", "cloud"))
    clock = [100.0]
    peer = _Peer()
    live = LivePlanner.start(agents[0], PlannerConfig(hold_s=0.0, min_interval_s=0.0, idle_probe_s=3600),
                             descriptions=[agents[1].describe()], peers=[peer], profile_repeats=1)  # fmt: skip
    live.clock = lambda: clock[0]
    try:
        est = live.replanner.tracker.links[0]
        est.overhead_s, est.stale_after_s = 0.0, 60.0  # no stale probe meanwhile

        def settle() -> None:
            if live._probe is not None:
                live._probe.join(timeout=5.0)

        live.replanner.tracker.observe_rtt(0, 0.02, clock[0])
        live.observe(*_reply(1_000_000, 4.02))  # a link the current plan does not use is probed once now: let it end
        settle()
        for _ in range(4):  # 1 MB in 4 s over a 20 ms round trip: a 2 Mbit/s link
            clock[0] += 0.05
            live.replanner.tracker.observe_rtt(0, 0.02, clock[0])
            live.observe(*_reply(1_000_000, 4.02))
        settle()
        assert 1.5e6 < (live.estimate_bps(0) or 0) < 2.5e6

        def probed_after(nbytes: int, network_s: float) -> bool:
            before = peer.probes
            clock[0] += 0.3
            live.observe(*_reply(nbytes, network_s))
            for _ in range(200):  # the probe runs on a thread of its own
                if peer.probes > before or (live._probe is not None and not live._probe.is_alive()):
                    break
                time.sleep(0.01)
            settle()
            return peer.probes > before

        assert not probed_after(5000, 0.04)  # 5 KB in 40 ms: the 2 Mbit/s estimate says 40 ms, as it took
        assert probed_after(5000, 0.021)  # the same in 21 ms: the link is faster than the estimate says
        assert (live.estimate_bps(0) or 0) > 1e7  # the probe (1 Gbit/s) moved it
    finally:
        live.close()
