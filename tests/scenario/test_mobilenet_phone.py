"""The shipped MobileNetV2 phone scenarios: CI-sized end to end, ``--check``, and the phone's ``device_speed``."""

from __future__ import annotations

import pytest
import yaml

from conftest import REPO, load_report, processes_mentioning, run_cli

from edgeflow.config import NodeConfig
from edgeflow.errors import ConfigError


@pytest.mark.parametrize("name", ["mobilenet-phone-lte", "mobilenet-phone-3g"])
def test_check_validates_the_shipped_scenarios(name: str) -> None:
    proc = run_cli(f"scenarios/{name}.yaml", "--check", timeout_s=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "is valid" in proc.stdout and "device_edge: trace" in proc.stdout


def test_phone_node_states_a_speed_not_a_factor() -> None:
    data = yaml.safe_load((REPO / "nodes" / "phone.yaml").read_text())
    cfg = NodeConfig.from_mapping(data, source="phone.yaml")
    assert cfg.compute.device_speed is not None and cfg.compute.device_speed.ms_per_model > 0
    assert cfg.model.artifact.startswith("zoo:mobilenet_v2")
    data["compute"]["slowdown_factor"] = 4.0
    with pytest.raises(ConfigError, match=r"compute: device_speed: give either slowdown_factor or device_speed"):
        NodeConfig.from_mapping(data, source="phone.yaml")
    data["compute"].pop("slowdown_factor")
    data["compute"]["device_speed"] = {"ms_per_model": 0}
    with pytest.raises(ConfigError, match=r"compute\.device_speed\.ms_per_model"):
        NodeConfig.from_mapping(data, source="phone.yaml")


def test_mobilenet_phone_lte_end_to_end(tmp_path) -> None:
    """MobileNetV2 at 224x224 on the phone over the packaged LTE trace, CI-sized: every request answered once,
    the report written, agreement (not accuracy: synthetic inputs, untrained weights) reported."""
    out = tmp_path / "mbv2"
    proc = run_cli("scenarios/mobilenet-phone-lte.yaml", "--out", str(out), "--requests", "4", "--baselines",
                   "device-only", "--no-plots", "--no-progress", timeout_s=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary, records = load_report(out)
    assert sorted(summary["baselines"]) == ["device-only"]
    by_run: dict[str, list[dict]] = {}
    for r in records:
        by_run.setdefault(r["run"], []).append(r)
    assert set(by_run) == {"edgeflow", "device-only"}
    for run, recs in by_run.items():
        assert len(recs) == 4 and len({r["id"] for r in recs}) == 4, run  # each request once, none duplicated
        for r in recs:
            assert r["status"] == "answered" and r["plan"] and r["latency_ms"] > 0, r
            assert r["correct"] is None  # no labels: no per-request correctness
    for m in [summary, *summary["baselines"].values()]:
        assert m["lost"] == 0 and m["answered"] == 4 and m["duplicated"] == 0
        assert m["agreement"] is not None and m["accuracy"] is None  # no labels: agreement, said so
    assert summary["full_model_accuracy"] is None
    assert (out / "report.md").is_file()
    log = (out / "logs" / "device.log").read_text()
    assert "device_speed 120.0 ms per model" in log and "slowdown_factor" in log  # the stated speed was emulated
    assert not processes_mentioning(str(out)), "agent processes left behind"
