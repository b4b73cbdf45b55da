"""`edgeflow plan` on a local typer app (the lead mounts it in edgeflow.cli.main): units, output, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from edgeflow.cli.plan_cmd import parse_duration_s, parse_rate_bps, parse_size_nbytes, register

ROOT = Path(__file__).resolve().parents[3]
runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _main() -> None:  # a group, so the command is invoked by name as under edgeflow's app
        pass

    register(app)
    return app


def test_units():
    assert parse_rate_bps("2mbit") == 2e6 and parse_rate_bps("500kbit") == 5e5 and parse_rate_bps("1gbit") == 1e9
    assert parse_rate_bps("1.5Mbit") == 1.5e6 and parse_rate_bps("100") == 100.0
    assert parse_duration_s("40ms") == pytest.approx(0.04) and parse_duration_s("0.04s") == 0.04
    assert parse_duration_s("250us") == pytest.approx(2.5e-4)
    assert parse_size_nbytes("64mb", "--x") == 64e6 and parse_size_nbytes("1kib", "--x") == 1024
    for bad, fn in [("2mb", parse_rate_bps), ("fast", parse_rate_bps), ("0mbit", parse_rate_bps), ("40", parse_duration_s)]:
        with pytest.raises(ValueError, match="--"):
            fn(bad)


def test_plan_demo_prints_best_and_alternatives(app, tmp_path):
    out = tmp_path / "plans.json"
    args = ["plan", "--bandwidth", "2mbit,1gbit", "--rtt", "1ms", "--backhaul-rtt", "1ms", "--device-slowdown", "50",
            "--edge-slowdown", "2", "--repeats", "1", "--codec-drops", str(ROOT / "benchmarks/results/cuts.json"),
            "--json", str(out)]  # fmt: skip
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "2 Mbit/s" in r.output and "1 Gbit/s" in r.output and "alt 3" in r.output
    data = json.loads(out.read_text())
    assert [p["bandwidth_bps"] for p in data["plans"]] == [2e6, 1e9]
    fast = data["plans"][1]
    assert len(fast["alternatives"]) == 3
    assert fast["best"]["breakdown"]["latency_s"] <= min(a["breakdown"]["latency_s"] for a in fast["alternatives"])
    assert not fast["best"]["plan"].startswith("device[0:]")  # a 50x slower device offloads on a fast link


def _scenario(tmp_path, links: str) -> Path:
    sc = tmp_path / "s.yaml"
    sc.write_text(
        "name: t\n"
        f"nodes: {{device: {{file: {ROOT / 'nodes/device.yaml'}}}, edge: {{file: {ROOT / 'nodes/edge.yaml'}, "
        f"slowdown_factor: 3}}, cloud: {{file: {ROOT / 'nodes/cloud.yaml'}}}}}\n"
        f"links: {links}\nobjective: energy\nslo_ms: 100\n"
    )
    return sc


def test_plan_with_a_scenario_reads_nodes_and_links(app, tmp_path):
    sc = _scenario(tmp_path, "{device_edge: {rate_mbit: 20, delay_ms: 20}, edge_cloud: {rate_mbit: 50, delay_ms: 5}}")
    r = runner.invoke(app, ["plan", "--scenario", str(sc), "--repeats", "1", "--exits", "off"])
    assert r.exit_code == 0, r.output
    assert "device x4" in r.output and "edge x3" in r.output and "cloud x1" in r.output  # node file, override
    assert "objective: energy, SLO 100.0 ms" in r.output
    assert "20 Mbit/s (device-edge 20 Mbit/s rtt 40 ms, edge-cloud 50 Mbit/s rtt 10 ms)" in r.output
    r = runner.invoke(app, ["plan", "--scenario", str(sc), "--repeats", "1", "--exits", "off", "--objective", "latency",
                            "--bandwidth", "1mbit", "--rtt", "1ms"])  # fmt: skip
    assert r.exit_code == 0 and "objective: latency" in r.output and "1 Mbit/s (device-edge 1 Mbit/s rtt 1 ms" in r.output


def test_bad_scenario_names_the_field(app, tmp_path):
    sc = _scenario(tmp_path, "{device_edge: {rate_mbit: -1}}")
    r = runner.invoke(app, ["plan", "--scenario", str(sc)])
    assert r.exit_code == 2 and "--scenario" in r.output and "links.device_edge.rate_mbit" in r.output, r.output


@pytest.mark.parametrize(
    "args, option",
    [
        (["--bandwidth", "2mb"], "--bandwidth"),
        (["--rtt", "40"], "--rtt"),
        (["--slo", "soon"], "--slo"),
        (["--device-memory", "lots"], "--device-memory"),
        (["--tiers", "device,fog"], "--tiers"),
        (["--exits", "maybe"], "--exits"),
        (["--model", "nosuchmodel"], "--model"),
        (["--device-power", "1,2"], "--device-power"),
    ],
)
def test_bad_values_name_the_option(app, args, option):
    r = runner.invoke(app, ["plan", *args])
    assert r.exit_code == 2 and option in r.output, r.output
