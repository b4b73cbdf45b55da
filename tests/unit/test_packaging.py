"""The package outside a clone: a wheel built from the repository ships the node files and scenarios, so
``edgeflow run`` finds them from any folder; ``--version``; CLI errors go to stderr with a non-zero status."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgeflow.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
_SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "edgeflow", "nodes", "scenarios", "proto")


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the repository's sources, unpacked as a site folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in _SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(p, src / name)
    try:
        import setuptools  # noqa: F401  (the build backend, without build isolation: no index needed)
    except ImportError:
        pytest.skip("setuptools is not installed in this environment: cannot build the wheel offline")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True)  # fmt: skip
    (whl,) = (tmp / "dist").glob("edgeflow-*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(whl) as z:
        z.extractall(site)
    return site


def test_the_wheel_ships_nodes_and_scenarios(wheel_site: Path) -> None:
    shipped = wheel_site / "edgeflow" / "_shipped"
    assert {p.name for p in (shipped / "nodes").glob("*.yaml")} == {p.name for p in (ROOT / "nodes").glob("*.yaml")}
    assert {p.name for p in (shipped / "scenarios").glob("*.yaml")} == {p.name for p in (ROOT / "scenarios").glob("*.yaml")}
    # the workloads scenarios name (minilm-text's sentences) travel with them
    assert {p.name for p in (shipped / "scenarios" / "data").glob("*.txt")} == {p.name for p in (ROOT / "scenarios" / "data").glob("*.txt")}
    assert (wheel_site / "edgeflow" / "weights" / "demo.safetensors").is_file()


def test_an_installed_wheel_runs_a_shipped_scenario_by_name_from_any_folder(wheel_site: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(wheel_site)}  # the unpacked wheel first, not this clone
    cmd = [sys.executable, "-m", "edgeflow"]
    where = subprocess.run([sys.executable, "-c", "import edgeflow; print(edgeflow.__file__)"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert where.stdout.strip().startswith(str(wheel_site))
    ok = subprocess.run([*cmd, "run", "--check", "quickstart"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "_shipped/scenarios/quickstart.yaml" in ok.stdout and "is valid" in ok.stdout
    bad = subprocess.run([*cmd, "run", "--check", "no-such-scenario"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 2 and "no-such-scenario" in bad.stderr and "quickstart" in bad.stderr and not bad.stdout
    version = subprocess.run([*cmd, "--version"], env=env, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert version.stdout.strip() == "edgeflow 0.1.0"


@pytest.mark.parametrize(
    "args, names",
    [
        (["plan", "--bandwidth", "fast"], "--bandwidth"),
        (["profile", "no-such-model"], "no-such-model"),
        (["run", "--check", "no-such-scenario"], "no-such-scenario"),
    ],
)
def test_cli_errors_go_to_stderr_with_a_non_zero_status(args: list[str], names: str) -> None:
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "error:" in r.stderr and names in r.stderr
    assert "error:" not in r.stdout


def test_version() -> None:
    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("edgeflow ")
