"""Scenario files: every shipped one validates; malformed ones fail naming the field path and allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeflow.cli.run_cmd import read_scenario, resolve_scenario_path
from edgeflow.errors import ConfigError
from edgeflow.scenario.links import link_plan
from edgeflow.scenario.schema import BASELINES, LINK_NAMES, Scenario

REPO = Path(__file__).resolve().parents[3]
SHIPPED = sorted((REPO / "scenarios").glob("*.yaml"))
EXPECTED = {"quickstart", "commute-3g", "lte-drive", "edge-outage", "congested-uplink", "many-devices"}


def test_the_expected_scenarios_ship() -> None:
    assert EXPECTED <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_scenario_validates_with_its_nodes_and_traces(path: Path) -> None:
    scenario, nodes = read_scenario(path)
    assert scenario.name == path.stem
    assert set(nodes) == {"device", "edge", "cloud"}
    for tier, cfg in nodes.items():
        assert cfg.role == tier
    for name in LINK_NAMES:  # traces are built from the package only (no ../shared)
        link_plan(name, getattr(scenario.links, name), path.parent, seed=0)


def test_quickstart_is_the_default_name() -> None:
    assert resolve_scenario_path("quickstart").name == "quickstart.yaml"
    with pytest.raises(ConfigError, match="known: .*quickstart"):
        resolve_scenario_path("no-such-scenario")


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as e:
        Scenario.from_mapping(data, source="bad.yaml")
    return str(e.value)


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"name": "x", "links": {"device_edge": {"trace": {"file": "t.log", "format": "foo"}}}},
         "bad.yaml: links.device_edge.trace.format: 'foo' is not one of auto, cooked, mahimahi, norway_raw, belgium_raw"),
        ({"name": "x", "links": {"edge_cloud": {"trace": {"generator": "markov-5g"}}}},
         "links.edge_cloud.trace.generator: 'markov-5g' is not one of constant, steps, markov-3g, markov-lte"),
        ({"name": "x", "workload": {"arrival": "bursty"}}, "workload.arrival: 'bursty' is not one of poisson, fixed, closed"),
        ({"name": "x", "baselines": ["device-only", "oracle"]}, "baselines.1: 'oracle' is not one of " + ", ".join(BASELINES)),
        ({"name": "x", "objective": "cost"}, "objective: 'cost' is not one of latency, energy, throughput"),
        ({"name": "x", "nodes": {"edge": {"slowdown": 3}}}, "nodes.edge.slowdown: unknown field; known: file, slowdown_factor"),
        ({"name": "x", "workload": {"requests": 0}}, "workload.requests: Input should be greater than or equal to 1"),
        ({"name": "x", "links": {"device_edge": {"loss": 1.5}}}, "links.device_edge.loss: Input should be less than 1"),
        ({"name": "x", "links": {"device_edge": {"rate_mbit": 5, "trace": {"generator": "markov-3g"}}}},
         "links.device_edge: give at most one of 'rate_mbit' or 'trace'"),
        ({"name": "x", "links": {"device_edge": {"trace": {"generator": "steps"}}}}, "links.device_edge.trace: generator 'steps' needs steps"),
        ({"name": "x", "links": {"device_edge": {"outages": [{"start_s": 1, "duration_s": 5}, {"start_s": 2, "duration_s": 1}]}}},
         "links.device_edge: outages overlap"),
        ({"name": "x", "links": {"device_edge": {"outages": [{"start_s": 1, "duration_s": 2, "mode": "drop"}]}}},
         "links.device_edge.outages.0.mode: 'drop' is not one of refuse, stall, reset"),
        ({"name": "x", "plan": "device[0:10] > cloud"}, "bad.yaml: plan: plan 'device[0:10] > cloud'"),
        ({"workload": {}}, "bad.yaml: name: Field required"),
    ],
)
def test_malformed_scenario_names_the_field(data: dict, expected: str) -> None:
    assert expected in _error(data)


def test_not_a_mapping() -> None:
    assert "expected a mapping" in _error(["a", "list"])  # type: ignore[arg-type]


def test_bad_trace_file_names_the_link(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("0 1\n1 x\n")
    sc = Scenario.from_mapping({"name": "x", "links": {"device_edge": {"trace": {"file": "t.txt", "format": "cooked"}}}})
    with pytest.raises(ConfigError, match=r"links.device_edge: .*t.txt:2: rate 'x' is not a number"):
        link_plan("device_edge", sc.links.device_edge, tmp_path, seed=0)


def test_read_scenario_applies_node_overrides_and_cli_overrides(tmp_path: Path) -> None:
    text = (REPO / "scenarios" / "quickstart.yaml").read_text()
    data = yaml.safe_load(text)
    data["nodes"] = {
        "device": {"file": str(REPO / "nodes" / "device.yaml"), "slowdown_factor": 7.0},
        "edge": {"file": str(REPO / "nodes" / "edge.yaml"), "overrides": {"queues.compute": 3}},
        "cloud": {"file": str(REPO / "nodes" / "cloud.yaml")},
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    sc, nodes = read_scenario(path, **{"workload.requests": 5, "baselines": ["cloud-only"]})
    assert sc.workload.requests == 5 and sc.baselines == ["cloud-only"]
    assert nodes["device"].compute.slowdown_factor == 7.0
    assert nodes["edge"].queues.compute == 3


def test_node_file_of_the_wrong_role_is_refused(tmp_path: Path) -> None:
    data = {"name": "x", "nodes": {"edge": {"file": str(REPO / "nodes" / "cloud.yaml")},
                                   "device": {"file": str(REPO / "nodes" / "device.yaml")},
                                   "cloud": {"file": str(REPO / "nodes" / "cloud.yaml")}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="nodes.edge.file: .* is a cloud node, not edge"):
        read_scenario(path)
