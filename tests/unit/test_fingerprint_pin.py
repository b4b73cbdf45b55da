"""Node files pin ``model.fingerprint``: the shipped ones do, ``edgeflow certs`` prints the pin, and an
``--artifact`` override (another model) does not inherit the file's pin."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgeflow.agent.loader import builtin_artifact_path, load_runtime
from edgeflow.cli.agent_cmds import read_node_file
from edgeflow.cli.certs_cmd import _artifact_fingerprint, node_snippets
from edgeflow.config import NodeConfig
from edgeflow.core.artifact import load_artifact
from edgeflow.errors import ArtifactError

NODES = Path(__file__).resolve().parents[2] / "nodes"
DEMO = builtin_artifact_path("demo")
pytestmark = pytest.mark.skipif(not DEMO.exists(), reason="demo artifact not built")


@pytest.mark.parametrize("tier", ["device", "edge", "cloud"])
def test_shipped_node_files_pin_the_demo_fingerprint(tier):
    cfg = read_node_file(NODES / f"{tier}.yaml")
    assert cfg.model.artifact == "builtin:demo"
    assert cfg.model.fingerprint == load_artifact(DEMO).fingerprint


def test_certs_snippets_pin_the_fingerprint(tmp_path):
    fp = _artifact_fingerprint("builtin:demo")
    text = node_snippets(tmp_path / "certs", ["edge", "cloud"], tmp_path, None, fp)
    assert text.count(f"  fingerprint: {fp}") == 2
    assert f"fingerprint: {fp}" not in node_snippets(tmp_path / "certs", ["edge"], tmp_path, None)


def test_a_mismatched_pin_is_refused_naming_the_field():
    bad = "0" * 64
    with pytest.raises(ArtifactError, match=f"differs from the pinned model.fingerprint {bad}"):
        load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]",
                                              "model": {"artifact": "builtin:demo", "fingerprint": bad}}))  # fmt: skip
    zoo = "zoo:resnet18?width=4&image_size=32&num_classes=3"
    with pytest.raises(ArtifactError, match=f"differs from the pinned model.fingerprint {bad}"):
        load_runtime(NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]",
                                              "model": {"artifact": zoo, "fingerprint": bad}}))  # fmt: skip


def test_artifact_override_drops_the_files_pin(tmp_path):
    zoo = "zoo:resnet18?width=4&image_size=32&num_classes=3"
    assert read_node_file(NODES / "cloud.yaml", artifact=zoo).model.fingerprint is None
    assert read_node_file(NODES / "cloud.yaml", artifact="builtin:demo").model.fingerprint is not None
    node = yaml.safe_load((NODES / "cloud.yaml").read_text())
    assert "fingerprint" in node["model"]
