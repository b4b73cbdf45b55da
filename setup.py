"""Build hook: the wheel ships the repository's ``nodes/`` and ``scenarios/`` as package data
(``edgeflow/_shipped/``), so ``edgeflow run`` finds the shipped scenarios and their node files from any folder.
Everything else is in ``pyproject.toml``."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

_ROOT = Path(__file__).resolve().parent
_SHIPPED = ("nodes", "scenarios")


class BuildPyWithShipped(build_py):
    """``build_py`` that also copies ``nodes/*.yaml``, ``scenarios/*.yaml`` and ``scenarios/data/*.txt`` into
    ``edgeflow/_shipped/``."""

    def run(self) -> None:
        super().run()
        for name in _SHIPPED:
            src = _ROOT / name
            if not src.is_dir():  # an sdist without them (MANIFEST.in includes them): nothing to ship
                continue
            dst = Path(self.build_lib) / "edgeflow" / "_shipped" / name
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted(src.glob("*.yaml")):
                shutil.copy2(f, dst / f.name)
            for f in sorted(src.glob("data/*.txt")):  # workloads the scenarios name (scenarios/data/sentences.txt)
                (dst / "data").mkdir(exist_ok=True)
                shutil.copy2(f, dst / "data" / f.name)


setup(cmdclass={"build_py": BuildPyWithShipped})
