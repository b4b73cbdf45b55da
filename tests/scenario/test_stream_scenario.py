"""``scenarios/stream.yaml`` and the stream workloads: frames sent as a stream, bytes per frame in the summary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, load_report, run_cli
from edgeflow.errors import ScenarioError
from edgeflow.scenario.frames import folder_frames, moving_object_video
from edgeflow.scenario.schema import Scenario

SPLIT = "device[0:8]|int8 > edge[8:]"


def test_the_synthetic_video_is_mostly_static_or_moving() -> None:
    still, pan = moving_object_video(12, 64, "static"), moving_object_video(12, 64, "moving")
    assert still.shape == pan.shape == (12, 3, 64, 64) and 0 <= float(still.min()) and float(still.max()) <= 1
    assert torch.equal(still, (still * 255).round() / 255)  # 8-bit frames

    def changed(v: torch.Tensor) -> float:
        return float((v[1:] != v[:-1]).float().mean())

    assert changed(still) < 0.02 < 0.5 < changed(pan)
    with pytest.raises(ScenarioError, match="motion"):
        moving_object_video(2, 64, "shaky")


def test_a_folder_of_frames_is_read_in_name_order_and_cycled(tmp_path: Path) -> None:
    for i, shade in enumerate([10, 200, 90]):
        Image.new("RGB", (40, 30), (shade, 0, 0)).save(tmp_path / f"f{i:02d}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    frames = folder_frames(tmp_path, 5, 16)
    assert frames.shape == (5, 3, 16, 16)
    assert [round(float(f[0, 0, 0]) * 255) for f in frames] == [10, 200, 90, 10, 200]
    (tmp_path / "f03.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ScenarioError, match="f03.png is not a readable image"):
        folder_frames(tmp_path, 5, 16)
    with pytest.raises(ScenarioError, match="not a folder"):
        folder_frames(tmp_path / "none", 1, 16)


def test_stream_settings_are_checked_by_field() -> None:
    base = yaml.safe_load((REPO / "scenarios" / "stream.yaml").read_text())
    with pytest.raises(Exception, match="frames_dir"):
        Scenario.from_mapping({**base, "workload": {"source": "frames"}})
    with pytest.raises(Exception, match="stream"):
        Scenario.from_mapping({**base, "workload": {"source": "demo-test", "stream": True}})


def _scenario(tmp: Path, **workload: object) -> Path:
    data = yaml.safe_load((REPO / "scenarios" / "stream.yaml").read_text())
    for tier, ref in data["nodes"].items():
        ref["file"] = str(REPO / "nodes" / f"{tier}.yaml")
    data["plan"] = SPLIT
    data["workload"].update(workload)
    path = tmp / "stream.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_stream_scenario_reports_bytes_per_frame_against_independent_coding(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli(str(_scenario(tmp_path)), "--out", str(out), "--requests", "10", "--baselines", "none",
                   "--no-plots", "--no-progress")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    assert summary["lost"] == 0 and summary["answered"] == 10
    s = summary["stream"]
    assert s["frames"] == 10 and s["bytes_per_frame"] > 0
    # the same frames coded on their own, measured in the same run: a still scene costs several times more
    assert s["bytes_per_frame_independent"] > 2 * s["bytes_per_frame"]
    assert all(r["streamed"] and r["stream_delta_hops"] in (0, 1) for r in records)
    assert sum(r["stream_delta_hops"] for r in records) >= 8  # after the key frame, residuals


def test_the_shipped_stream_scenario_checks(tmp_path: Path) -> None:
    proc = run_cli("stream", "--check")
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_live_planner_finds_a_delta_coded_plan_from_the_devices_samples(tmp_path: Path) -> None:
    """``scenarios/stream-auto.yaml``, the device as its own agent process: every independent way to send a frame
    costs more than the stream's residuals, which only the device's samples tell the planner (agent/streamcost.py)."""
    data = yaml.safe_load((REPO / "scenarios" / "stream-auto.yaml").read_text())
    for tier, ref in data["nodes"].items():
        ref["file"] = str(REPO / "nodes" / f"{tier}.yaml")
    path, out = tmp_path / "stream-auto.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(data))
    proc = run_cli(str(path), "--out", str(out), "--requests", "40", "--baselines", "none", "--no-plots",
                   "--no-progress", "--device-process")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, _ = load_report(out)
    assert summary["lost"] == 0
    by_plan = summary["stream"]["by_plan"]
    delta = {plan: s for plan, s in by_plan.items() if s["delta_hops_per_frame"] > 0.5}
    assert delta, by_plan  # the planner took a plan whose frames went up as residuals
    assert all(s["bytes_per_frame"] * 3 < s["bytes_per_frame_independent"] for s in delta.values())
    log = (out / "logs" / "device0.log").read_text()
    assert "live planner: stream sample 1 " in log  # what the device sampled is what it planned with
    assert "suspect" not in log  # a delta-coded plan's key frames are predicted at their full bytes


def test_near_duplicate_frames_are_answered_from_the_devices_memory(tmp_path: Path) -> None:
    """A still camera's frames are near-duplicates: with ``memory.near`` the device (its own agent process) answers
    them from an earlier frame's answer, counted apart from exact hits (agent/nearmemory.py)."""
    path = _scenario(tmp_path)
    data = yaml.safe_load(path.read_text())
    data["nodes"]["device"]["overrides"] = {"memory.enabled": True, "memory.near": True}
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    proc = run_cli(str(path), "--out", str(out), "--requests", "12", "--baselines", "none", "--no-plots",
                   "--no-progress", "--device-process")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    m = summary["memory"]
    assert summary["lost"] == 0 and m["near_hits"] > 0 and m["hits"] + m["near_hits"] + m["misses"] == 12
    near = [r for r in records if r["memory"] == "near"]
    assert len(near) == m["near_hits"] and all(r["bytes"]["device_edge"]["up"] == 0 for r in near)
    assert m["near_agreement"] is not None and summary["agreement"] >= 0.9
