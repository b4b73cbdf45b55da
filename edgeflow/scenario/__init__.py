"""Scenarios: replay a workload over emulated links through real agents, against baselines, and report.

    edgeflow run scenarios/commute-3g.yaml --out reports/commute      # the CLI (edgeflow/cli/run_cmd.py)

    scenario = Scenario.from_mapping(yaml.safe_load(text), source="commute-3g.yaml")
    result = run_scenario(scenario, nodes, scenario_dir=Path("scenarios"), out_dir=Path("reports/x"))
    summary = write_report(result, Path("reports/x"))

Modules in the order a run uses them: ``schema`` (the file), ``workload`` (requests and schedule),
``planning`` + ``baselines`` (which plans run), ``links`` (emulated links; agent processes come from
:mod:`edgeflow.scenario.procs`), ``drive`` (the device side), ``faults`` (agents killed, restarted, stalled during a
run), ``runner`` (all of it, stopped for certain), ``report`` + ``plots``.
This package sits above the agents: it starts processes and emulators.
"""

from edgeflow.scenario.schema import BASELINES, Scenario

__all__ = ["BASELINES", "Scenario", "run_scenario", "write_report"]


def __getattr__(name: str):  # heavy imports (torch, grpc) only when a run is asked for
    if name == "run_scenario":
        from edgeflow.scenario.runner import run_scenario

        return run_scenario
    if name == "write_report":
        from edgeflow.scenario.report import write_report

        return write_report
    raise AttributeError(f"module 'edgeflow.scenario' has no attribute {name!r}")
