"""The device's live planner against real edge/cloud agent processes, through the userspace link emulator."""

from __future__ import annotations

import logging
import time

from edgeflow.agent import DeviceClient
from edgeflow.core.traces import steps
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
    # the live planner needs ~1-3 s to profile, probe and plan (the link clock runs meanwhile), then a steady
    # stretch before the drop: its last switch must be >= min_interval_s before it, or the test measures that
    high, drop_at_s = 2e6, 6.0
    trace = steps([(drop_at_s, high), (600.0, high / 10)])
    spec = LinkSpec(rate=trace, delay_s=DELAY_S)
    caplog.set_level(logging.INFO, logger="edgeflow.agent.live")
    with LinkEmulator(edge.address, uplink=spec, downlink=spec) as emu:
        # a slow device (30x the host) offloads on the fast link; after the drop, computing here wins
        with _device(make_device_config, emu.address, **{"compute.slowdown_factor": 30.0}) as device:
            before = []
            while emu.now() < drop_at_s:
                before.append(device.infer(images[len(before) % 4]))
                assert len(before) < 2000
            plan_before = before[-1].plan
            assert "edge" in plan_before or "cloud" in plan_before, plan_before
            after = []
            t0 = time.monotonic()
            while len(after) < 8 and device.plan == plan_before:
                after.append(device.infer(images[len(after) % 4]))
            switched_in = len(after)
            switches = device.plan_switches
    assert device.plan != plan_before, [s.reason for s in switches]
    assert switched_in <= 4, (switched_in, time.monotonic() - t0)
    assert any("plan switch: " in rec.getMessage() for rec in caplog.records)
    assert switches[-1].old == plan_before and switches[-1].reason
