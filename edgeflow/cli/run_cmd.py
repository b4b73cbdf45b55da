"""``edgeflow run``: replay a scenario through real agents over emulated links, against baselines.

    edgeflow run                                   # scenarios/quickstart.yaml
    edgeflow run commute-3g                        # a shipped scenario by name
    edgeflow run scenarios/lte-drive.yaml --out reports/lte --requests 50 --baselines cloud-only,best-fixed
    edgeflow run chaos-kill-edge --device-process  # the device as its own agent process, sent inputs over gRPC

A progress bar while it runs, a summary table at the end, and a report folder (default
``reports/<scenario>-<timestamp>``): ``summary.json``, ``requests.jsonl``, ``report.md``, PNG plots, plus the
node files and agent logs of every run. Exit status: 0 done, 2 invalid scenario or nodes, 1 the run failed,
130 interrupted (everything it started is stopped first).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from edgeflow.errors import ConfigError, EdgeflowError, ScenarioError

__all__ = ["register", "read_scenario", "resolve_scenario_path", "scenario_dirs"]

_err = Console(stderr=True)
_out = Console()
if not _out.is_terminal:
    _out = Console(width=150)


def scenario_dirs() -> list[Path]:
    """Where shipped scenarios are looked up by name: ``./scenarios``, then the repository's ``scenarios/`` (a clone
    or an editable install), then the copy an installed wheel ships (``edgeflow/_shipped/scenarios``, with its node
    files beside it in ``_shipped/nodes``, where the scenarios' ``../nodes/`` finds them)."""
    import edgeflow

    package = Path(edgeflow.__file__).resolve().parent
    dirs = [Path.cwd() / "scenarios", package.parent / "scenarios", package / "_shipped" / "scenarios"]
    return list(dict.fromkeys(dirs))


def resolve_scenario_path(name_or_path: str) -> Path:
    """A scenario file path, or a shipped scenario's name (``commute-3g``).

    Raises:
        ConfigError: neither a file nor a known name (listing the known names).
    """
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix in ("", ".yaml", ".yml") and len(p.parts) == 1:
        for d in scenario_dirs():
            for cand in (d / f"{p.stem}.yaml", d / f"{p.stem}.yml"):
                if cand.is_file():
                    return cand
    known = sorted({f.stem for d in scenario_dirs() if d.is_dir() for f in d.glob("*.yaml")})
    raise ConfigError(f"scenario {name_or_path!r}: no such file or shipped scenario; known: {', '.join(known) or 'none'}")


def read_scenario(path: Path, **overrides: Any) -> tuple[Any, dict[str, Any]]:
    """Read and validate a scenario file and the node files it names (overrides applied).

    Args:
        path: the scenario file.
        overrides: dotted scenario fields to replace, e.g. ``{"workload.requests": 20}``.

    Returns:
        (Scenario, {"device": NodeConfig, "edge": ..., "cloud": ...})

    Raises:
        ConfigError: unreadable file, bad YAML, or invalid fields (named by their path).
    """
    import yaml

    from edgeflow.cli.agent_cmds import read_node_file
    from edgeflow.scenario.schema import Scenario, node_file_of

    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read scenario: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)  # plain data only
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    scenario = Scenario.from_mapping(data, source=str(path))
    base = path.resolve().parent
    scenario = _resolve_artifact(path, base, scenario)  # the file's own path; an override's is the caller's
    if overrides:
        scenario = scenario.with_overrides(**overrides)
    nodes = {}
    for tier in ("device", "edge", "cloud"):
        ref = getattr(scenario.nodes, tier)
        node_path = node_file_of(base, tier, ref)
        cfg = read_node_file(node_path)
        if cfg.role != tier:
            raise ConfigError(f"{path}: nodes.{tier}.file: {node_path} is a {cfg.role} node, not {tier}")
        fields: dict[str, Any] = dict(ref.overrides)
        if ref.slowdown_factor is not None:
            fields["compute.slowdown_factor"] = ref.slowdown_factor
        if ref.threads is not None:
            fields["compute.threads"] = ref.threads
        if fields:
            try:
                cfg = cfg.with_overrides(**fields)
            except ConfigError as e:
                raise ConfigError(f"{path}: nodes.{tier}.overrides: {e}") from None
        nodes[tier] = cfg
    return scenario, nodes


def _check_workload(sc: Any, device: Any, scenario_dir: Path) -> str:
    """``--check``: the workload fits the scenario's model (loaded for its inputs; not for ``synthetic``, which
    generates whatever the model takes); its data is listed, not read. Returns a description of the data."""
    from edgeflow.scenario.workload import check_workload, expected_inputs

    if sc.workload.source == "synthetic":
        return "synthetic: inputs generated to match the model's (no labels: fidelity is agreement)"
    from edgeflow.agent.loader import load_runtime

    cfg = device if device.model.artifact == sc.model.artifact else device.with_overrides(
        **{"model.artifact": sc.model.artifact, "model.fingerprint": None})  # fmt: skip
    return check_workload(sc.workload, expected_inputs(load_runtime(cfg)), base_dir=scenario_dir)


def _resolve_artifact(path: Path, base: Path, scenario: Any) -> Any:
    """``model.artifact`` as a file: relative to the scenario's folder, and it must exist."""
    from edgeflow.config import BUILTIN_PREFIX, TEXT_PREFIX, ZOO_PREFIX

    artifact = scenario.model.artifact
    if artifact.startswith((BUILTIN_PREFIX, ZOO_PREFIX, TEXT_PREFIX)):
        return scenario
    file = Path(artifact) if Path(artifact).is_absolute() else (base / artifact).resolve()
    if not file.is_file():
        raise ConfigError(f"{path}: model.artifact: no file {artifact!r} (a path is relative to the scenario's folder)")
    return scenario.with_overrides(**{"model.artifact": str(file)})


def _parse_baselines(text: str) -> list[str]:
    from edgeflow.scenario.schema import BASELINES

    if text.strip() in ("none", ""):
        return []
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in BASELINES]
    if bad:
        raise ConfigError(f"--baselines: {', '.join(map(repr, bad))} is not one of {', '.join(BASELINES)} (or 'none')")
    return names


class _Progress:
    """Rich progress display driven by the runner's events."""

    def __init__(self, console: Console, enabled: bool):
        self.console = console
        self.enabled = enabled
        self.bar = Progress(
            TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), console=console, disable=not enabled, transient=False,
        )  # fmt: skip
        self._tasks: dict[str, Any] = {}
        self._lost: dict[str, int] = {}
        self._lock = threading.Lock()  # requests finish on worker threads

    def events(self) -> Any:
        from edgeflow.scenario.runner import RunnerEvents

        return RunnerEvents(on_phase=self.phase, on_run_start=self.start, on_request=self.request, on_run_end=self.end)

    def phase(self, text: str) -> None:
        if self.enabled:
            self.bar.console.print(f"[dim]{text}[/]", highlight=False)

    def start(self, name: str, total: int) -> None:
        self._tasks[name] = self.bar.add_task(name, total=total, info="")
        self._lost[name] = 0

    def request(self, name: str, outcome: Any) -> None:
        with self._lock:
            if outcome.answer is None:
                self._lost[name] += 1
            lost = self._lost[name]
        self.bar.update(self._tasks[name], advance=1, info=f"lost {lost}" if lost else "")

    def end(self, result: Any) -> None:
        lat = sorted(o.latency_s for o in result.outcomes if o.latency_s is not None)
        p50 = f"p50 {lat[len(lat) // 2] * 1e3:.1f} ms" if lat else "no answers"
        self.bar.update(self._tasks[result.spec.name], info=p50)


def _summary_table(summary: dict[str, Any]) -> Table:
    fidelity = summary.get("fidelity") or {}
    table = Table(title=f"{summary['scenario']}: edgeflow vs baselines ({summary['adaptation']['mode']} plan)",
                  caption="no labels: accuracy not measured; agreement = top-1 agreement with the unsplit model"
                  if fidelity.get("metric") == "agreement" else None)  # fmt: skip
    for col in ("run", "plan", "answered", "p50 ms", "p95 ms", "p99 ms", "accuracy", "agreement", "kB/req", "p50 ratio", "p95 ratio"):
        table.add_column(col, justify="left" if col in ("run", "plan") else "right", overflow="fold")

    def f(x: Any, fmt: str = ".1f") -> str:
        return "–" if x is None else format(x, fmt)

    rows = [("edgeflow", summary, None)] + [(n, m, summary["ratios"][n]) for n, m in summary["baselines"].items()]
    for name, m, r in rows:
        lat = m["latency_ms"]
        table.add_row(
            f"[bold]{name}[/]" if name == "edgeflow" else name, m["plan"], f"{m['answered']}/{m['requests']}",
            f(lat["p50"]), f(lat["p95"]), f(lat["p99"]), f(m["accuracy"], ".3f"), f(m["agreement"], ".3f"),
            f(m["bytes_per_request"] / 1e3, ".2f"), "" if r is None else f(r["latency_p50"], ".2f") + "x",
            "" if r is None else f(r["latency_p95"], ".2f") + "x",
        )  # fmt: skip
    return table


def run(
    scenario: str = typer.Argument("quickstart", help="scenario file, or a shipped scenario's name"),
    out: Optional[Path] = typer.Option(None, "--out", help="report folder (default: reports/<scenario>-<timestamp>)"),
    requests: Optional[int] = typer.Option(None, "--requests", min=1, help="override workload.requests"),
    baselines: Optional[str] = typer.Option(None, "--baselines", help="comma-separated baselines to run, or 'none'"),
    seed: Optional[int] = typer.Option(None, "--seed", help="override workload.seed"),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="write PNG plots"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show the progress bar"),
    json_out: bool = typer.Option(False, "--json", help="print summary.json instead of the table"),
    check: bool = typer.Option(False, "--check", help="only validate the scenario and its node files"),
    device_process: bool = typer.Option(False, "--device-process", help="run each device as its own agent process "
                                        "(edgeflow agent) and send it the inputs over gRPC, as deployed"),
) -> None:
    """Run a scenario: agents as processes, emulated links, edgeflow and baselines on the same trace."""
    try:
        path = resolve_scenario_path(scenario)
        overrides: dict[str, Any] = {}
        if requests is not None:
            overrides["workload.requests"] = requests
        if seed is not None:
            overrides["workload.seed"] = seed
        if baselines is not None:
            overrides["baselines"] = _parse_baselines(baselines)
        sc, nodes = read_scenario(path, **overrides)
    except ConfigError as e:
        _err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2)
    if check:
        from edgeflow.scenario.links import link_plan
        from edgeflow.scenario.schema import LINK_NAMES

        from edgeflow.scenario.text_workload import is_text_source, read_text_source

        try:
            plans = [link_plan(n, getattr(sc.links, n), path.resolve().parent, seed=0) for n in LINK_NAMES]
            if is_text_source(sc.workload.source):  # the sentences fit the text model (no model is built)
                read_text_source(sc.workload, sc.model.artifact, path.resolve().parent)
        except (ConfigError, ScenarioError) as e:
            _err.print(f"[bold red]error:[/] {path}: {e}", highlight=False)
            raise typer.Exit(2)
        try:
            data = _check_workload(sc, nodes["device"], path.resolve().parent)
        except EdgeflowError as e:  # the message names the field (workload.source: x.npy: shape ...)
            _err.print(f"[bold red]error:[/] {path}: {e}", highlight=False)
            raise typer.Exit(2)
        faults = [f"faults: {', '.join(f.describe() for f in sc.faults)}"] if sc.faults else []
        _out.print(f"{path}: scenario {sc.name!r} is valid; " + "; ".join([*(f"{p.name}: {p.describe()}" for p in plans), *faults,
                   f"workload: {data}"]), highlight=False)  # fmt: skip
        return
    out_dir = out if out is not None else Path("reports") / f"{sc.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    show = progress and not json_out
    display = _Progress(_err if json_out else _out, show)
    from edgeflow.scenario.report import write_report
    from edgeflow.scenario.runner import run_scenario

    try:
        with display.bar:
            result = run_scenario(sc, nodes, scenario_dir=path.resolve().parent, out_dir=out_dir, events=display.events(),
                                  device_process=device_process)  # fmt: skip
        summary = write_report(result, out_dir, plots=plots)
    except KeyboardInterrupt:
        _err.print("[yellow]interrupted[/]: agents and links stopped", highlight=False)
        raise typer.Exit(130)
    except ConfigError as e:
        _err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(2)
    except EdgeflowError as e:
        _err.print(f"[bold red]error:[/] {type(e).__name__}: {e}", highlight=False)
        raise typer.Exit(1)
    if json_out:
        print(json.dumps(summary, indent=1))
        return
    _out.print(_summary_table(summary))
    for name, m in [("edgeflow", summary), *summary["baselines"].items()]:
        v = m.get("validation")
        if v:  # the device's check of upstream answers (validate)
            rate = "–" if v["detection_rate"] is None else f"{v['detection_rate']:.3f}"
            fa = "–" if v["false_alarm_rate"] is None else f"{v['false_alarm_rate']:.3f}"
            _out.print(f"validation ({name}): {v['checked']} upstream answers checked, {v['flipped']} flipped, "
                       f"detection {rate}, false alarms {fa} ({v['not_flipped_flagged']} of "
                       f"{v['checked'] - v['flipped']}), recomputed {v['recomputed']}, unchecked {v['unchecked']}",
                       highlight=False)  # fmt: skip
    _out.print(f"adaptation: {summary['adaptation']['detail']}", highlight=False)
    if "cosine" in summary:  # embeddings, no labels: how close each run came to the unsplit model
        runs = [("edgeflow", summary), *summary["baselines"].items()]
        _out.print("cosine vs the unsplit model (mean/min, bit-exact share): " + "; ".join(
            f"{n} {m['cosine']['mean']:.6f}/{m['cosine']['min']:.6f}, {m['bit_exact']:.2f}" for n, m in runs if "cosine" in m),
            highlight=False)  # fmt: skip
    _out.print(f"report: {out_dir}/report.md  ({summary['timings_s'].get('total_s', 0):.1f} s)", highlight=False)


def register(app: typer.Typer) -> None:
    """Mount ``run`` on the main ``edgeflow`` app."""
    app.command("run")(run)


def _standalone() -> typer.Typer:
    """``python -m edgeflow.cli.run_cmd ...``: the command on its own (tests, and before it is mounted)."""
    app = typer.Typer(add_completion=False, help="edgeflow run")

    @app.callback()
    def _main() -> None:
        """Scenario runner."""

    register(app)
    return app


if __name__ == "__main__":
    _standalone()()
