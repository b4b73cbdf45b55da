"""The package's layers point inward (import-linter contracts in pyproject.toml), and every part of the package
is in a layer."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import edgeflow

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    assert Path(exe).exists(), "import-linter is a test dependency: pip install -e '.[test]'"
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout and "KEPT" in r.stdout, r.stdout


def test_every_package_and_module_is_in_a_layer():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layered = {name.strip() for c in config if c["type"] == "layers" for layer in c["layers"] for name in layer.split("|")}
    package = Path(edgeflow.__file__).parent
    parts = {f"edgeflow.{p.name}" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    parts |= {f"edgeflow.{p.stem}" for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert parts - layered == set(), f"not in any layer of pyproject.toml: {sorted(parts - layered)}"
