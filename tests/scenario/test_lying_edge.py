"""scenarios/lying-edge.yaml end to end: an edge agent process started lying (faults: lie -> its node's ``chaos``),
a device that validates with recompute-locally, and the report's detection rate and false alarms (issue 17, item 3).

The liar chooses by request id and seed and the workload is the fixed test split: the flipped answers are the same in
every run of this test, whatever the machine's speed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, check_invariants, load_report, run_cli


@pytest.mark.parametrize("device_process", [False, True])
def test_a_lying_edge_is_caught_and_its_answers_recomputed(tmp_path: Path, device_process: bool) -> None:
    out = tmp_path / "lying"
    args = ["lying-edge", "--out", str(out), "--requests", "40", "--no-plots", "--baselines", "cloud-only"]
    proc = run_cli(*args, *(["--device-process"] if device_process else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    check_invariants(summary, records, 40, ["cloud-only"])
    v = summary["validation"]
    mine = [r for r in records if r["run"] == "edgeflow" and r["status"] == "answered"]
    assert v["checked"] == len(mine) == 40 and v["unchecked"] == 0
    flipped = [r for r in mine if r["flipped"]]
    assert v["flipped"] == len(flipped) >= 3  # 20% of 40 lied about (by request id)
    assert v["detection_rate"] >= 0.9 and v["false_alarm_rate"] <= 0.1
    for r in mine:  # a flagged answer was recomputed by the device: the unsplit model's answer
        if r["validation"] == "recomputed":
            assert r["answered_by"] == "device" and r["agree"]
    assert summary["agreement"] >= 1 - (v["flipped"] - v["flipped_flagged"]) / 40
    cloud_only = summary["baselines"]["cloud-only"]["validation"]  # the device runs nothing: no head to check with
    assert cloud_only["unchecked"] == 40 and cloud_only["checked"] == 0
    assert "validation (edgeflow): 40 upstream answers checked" in proc.stdout
    assert "## Validated upstream answers" in (out / "report.md").read_text()


def test_a_lie_fault_is_checked_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "scenarios" / "lying-edge.yaml").read_text().replace("at_s: 0, lie", "at_s: 3, lie"))
    proc = run_cli(str(bad), "--check")
    assert proc.returncode == 2 and "faults.0: 'lie' lasts every whole run" in proc.stderr, proc.stderr
