"""A real agent process refuses to start on an artifact other than the one its node file pins.

The shipped node files pin ``model.fingerprint``; an artifact whose weights or calibration were replaced
(with the stored fingerprint recomputed, so the file is self-consistent) must stop the agent at start-up with
an error that names the field, not serve a different model.
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from edgeflow.agent.loader import builtin_artifact_path
from edgeflow.core.artifact import fingerprint
from edgeflow.core.exits import ExitSpec

DEMO = builtin_artifact_path("demo")
pytestmark = pytest.mark.skipif(not DEMO.exists(), reason="demo artifact not built")


def _replaced_demo(dst):
    """The demo artifact with one bias changed and the stored fingerprint recomputed."""
    with safe_open(str(DEMO), framework="pt") as f:
        t = {k: f.get_tensor(k) for k in f.keys()}
        m = dict(f.metadata())
    t["model.fc.bias"] = t["model.fc.bias"] + 1.0
    specs = [ExitSpec.from_json(d) for d in json.loads(m["edgeflow.exits"])]
    m["edgeflow.fingerprint"] = fingerprint(m["edgeflow.arch"], m["edgeflow.config"], t, specs, m["edgeflow.calibration"])
    save_file(t, str(dst), metadata=m)
    return m["edgeflow.fingerprint"]


def test_agent_with_a_replaced_artifact_refuses_to_start(tmp_path, tools):  # type: ignore[no-untyped-def]
    node = yaml.safe_load((tools.NODES / "cloud.yaml").read_text())
    pinned = node["model"]["fingerprint"]
    assert len(pinned) == 64, "the shipped cloud node file pins model.fingerprint"
    other = _replaced_demo(tmp_path / "replaced.safetensors")
    node["model"]["artifact"] = "replaced.safetensors"
    node["listen"] = {"address": "127.0.0.1:0"}
    (tmp_path / "cloud.yaml").write_text(yaml.safe_dump(node))
    r = subprocess.run(tools.edgeflow_cmd("agent", "--node", str(tmp_path / "cloud.yaml")), capture_output=True,
                       text=True, timeout=120, env=tools.env())  # fmt: skip
    assert r.returncode != 0
    err = " ".join(r.stderr.split())  # rich wraps long lines
    assert "pinned model.fingerprint" in err and pinned in err and other in err, r.stderr
    assert "Traceback" not in r.stderr
