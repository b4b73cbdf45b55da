"""The device's live planner against real edge/cloud agent processes, through the userspace link emulator."""

from __future__ import annotations

import logging
import time

from edgeflow.agent import DeviceClient
from edgeflow.netem import LinkEmulator, LinkSpec

DELAY_S = 0.001
BULKY_PLAN = "device[0:4]|lossless > edge[4:]"  # ~30 KB per request: timed by the link, not the round trip


def _device(make_device_config, address: str, **overrides: object) -> DeviceClient:  # type: ignore[no-untyped-def]
    cfg = make_device_config(address, plan="auto").with_overrides(**overrides)
    return DeviceClient.from_config(cfg)


def test_estimate_tracks_a_shaped_link(edge, make_device_config, images) -> None:  # type: ignore[no-untyped-def]
    rate = 5e6
    spec = LinkSpec.constant(rate, delay_s=DELAY_S)
    with LinkEmulator(edge.address, uplink=spec, downlink=spec) as emu:
        with _device(make_device_config, emu.address) as device:
            for i in range(10):
                r = device.infer(images[i % 4], plan=BULKY_PLAN)
                assert r.plan == BULKY_PLAN and r.answered_by == "edge"
            est = device.live.estimate_bps(0)
    assert est is not None and abs(est / rate - 1) <= 0.20, est


def test_plan_switches_soon_after_a_10x_drop(edge, make_device_config, images, caplog) -> None:  # type: ignore[no-untyped-def]
    # events, not times: the drop comes once the planner is ready (from_config returns then) and has kept one plan
    # for 10 requests in a row; each request's reply is learned from before the next (settle)
    high = 2e6
    fast = LinkSpec.constant(high, delay_s=DELAY_S)
    caplog.set_level(logging.INFO, logger="edgeflow.agent.live")
    with LinkEmulator(edge.address, uplink=fast, downlink=fast) as emu:
        # a slow device (30x the host) offloads on the fast link; after the drop, computing here wins
        with _device(make_device_config, emu.address, **{"compute.slowdown_factor": 30.0}) as device:
            source = device.agent.source
            before: list = []  # type: ignore[type-arg]
            steady = 0
            while steady < 10:
                before.append(device.infer(images[len(before) % 4]))
                assert source.settle() and len(before) < 500, [r.plan for r in before[-20:]]
                steady = steady + 1 if len(before) > 1 and before[-1].plan == before[-2].plan else 0
            plan_before = before[-1].plan
            assert "edge" in plan_before or "cloud" in plan_before, plan_before
            slow = LinkSpec.constant(high / 10, delay_s=DELAY_S)
            emu.set_specs(uplink=slow, downlink=slow)  # the drop
            after = []
            t0 = time.monotonic()
            while len(after) < 8 and device.plan == plan_before:
                after.append(device.infer(images[len(after) % 4]))
                assert source.settle()
            switched_in = len(after)
            switches = device.plan_switches
    assert device.plan != plan_before, [s.reason for s in switches]
    assert switched_in <= 4, (switched_in, time.monotonic() - t0)
    assert any("plan switch: " in rec.getMessage() for rec in caplog.records)
    # the first switch after the drop leaves plan_before (a loaded machine may see a stalled call go on to a
    # second switch, e.g. cloud suspect -> edge, then edge down -> device-only: each has its reason)
    first = next(i for i, s in enumerate(switches) if s.old == plan_before)
    assert all(s.reason for s in switches[first:]) and switches[-1].new == device.plan
