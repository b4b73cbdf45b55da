"""Node files: the shipped ones validate; bad ones raise ConfigError naming the field path."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeflow.cli.agent_cmds import read_node_file
from edgeflow.config import NodeConfig
from edgeflow.errors import ConfigError

NODES = Path(__file__).resolve().parents[2] / "nodes"
PLAN = "device[0:20]|int8 > edge[20:52]|int8 > cloud[52:]"


@pytest.mark.parametrize("name", ["device", "edge", "cloud"])
def test_shipped_node_files_are_valid(name: str) -> None:
    cfg = read_node_file(NODES / f"{name}.yaml")
    assert cfg.role == name
    assert cfg.model.artifact == "builtin:demo"
    assert (cfg.upstream is None) == (name == "cloud")


def test_shipped_node_files_agree_on_plan_and_keepalive() -> None:
    cfgs = [read_node_file(NODES / f"{n}.yaml") for n in ("device", "edge", "cloud")]
    assert len({c.plan for c in cfgs}) == 1
    assert len({c.keepalive for c in cfgs}) == 1
    device, edge, cloud = cfgs
    assert device.upstream.address == edge.listen.address and edge.upstream.address == cloud.listen.address


def _base(**changes: object) -> dict:
    data: dict = {"role": "edge", "plan": PLAN, "upstream": {"address": "127.0.0.1:50053"}}
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "data, expected",
    [
        (_base(upstream={"address": "localhost"}), "upstream.address: 'localhost' is not 'host:port'"),
        (_base(upstream={"address": "h:70000"}), "upstream.address:"),
        (_base(upstream=None), "upstream: required: plan"),
        (_base(role="cloud"), "upstream: set, but plan"),
        (_base(role="gpu"), "role: Input should be 'device', 'edge' or 'cloud'"),
        (_base(plan="edge[0:x]"), "plan: plan 'edge[0:x]'"),
        (_base(plan="device[0:20]", upstream=None), "has no stage for edge or after it"),
        (_base(compute={"threads": 0}), "compute.threads: Input should be greater than or equal to 1"),
        (_base(compute={"slowdown_factor": 0.5}), "compute.slowdown_factor:"),
        (_base(compute={"device": "tpu"}), "compute.device: Input should be 'cpu' or 'cuda'"),
        (_base(power={"active_w": -1}), "power.active_w:"),
        (_base(queues={"compute": 0}), "queues.compute:"),
        (_base(limits={"max_message_mb": 4096}), "limits.max_message_mb:"),
        (_base(tls={"cert": "a.pem"}), "tls: cert and key go together"),
        (_base(tls={"ca": "ca.pem"}), "tls: a server needs cert and key"),
        (_base(model={"artifact": "builtin:Demo!"}), "model.artifact:"),
        (_base(deadlines={"request_s": 0}), "deadlines.request_s:"),
        (_base(keepalive={"time_s": 0.1}), "keepalive.time_s:"),
        (_base(typo=1), "typo: Extra inputs are not permitted"),
        (_base(compute={"thread": 2}), "compute.thread: Extra inputs are not permitted"),
        ({"plan": PLAN}, "role: Field required"),
        (_base(auth={}), "auth: set exactly one of token_file or token_env"),
        (_base(upstream={"address": "h:1", "auth": {"token_file": "t", "token_env": "T"}}), "upstream.auth:"),
        (_base(auth={"token_env": "NOT A NAME"}), "auth.token_env:"),
        (_base(auth={"token": "s3cret"}), "auth.token: Extra inputs are not permitted"),  # never inline
    ],
)
def test_bad_node_names_the_field(data: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        NodeConfig.from_mapping(data, source="node.yaml")
    assert str(err.value).startswith("node.yaml: ")
    assert expected in str(err.value)


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping of fields, got list"):
        NodeConfig.from_mapping([1, 2], source="node.yaml")


def test_overrides_are_validated() -> None:
    cfg = NodeConfig.from_mapping(_base())
    assert cfg.with_overrides(**{"upstream.address": "10.0.0.1:9"}).upstream.address == "10.0.0.1:9"
    with pytest.raises(ConfigError, match="upstream.address"):
        cfg.with_overrides(**{"upstream.address": "nope"})


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read node file"):
        read_node_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("role: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        read_node_file(bad)
    evil = tmp_path / "evil.yaml"
    evil.write_text("role: !!python/object/apply:os.system ['true']\nplan: cloud[0:]\n")
    with pytest.raises(ConfigError, match="not valid YAML"):  # safe_load constructs no objects
        read_node_file(evil)


def test_relative_paths_resolve_against_the_node_file(tmp_path: Path) -> None:
    f = tmp_path / "cloud.yaml"
    f.write_text("role: cloud\nplan: cloud[0:]\nmodel: {artifact: weights/m.safetensors}\n"
                 "tls: {cert: c.pem, key: k.pem}\n")
    cfg = read_node_file(f, port=0)
    assert cfg.model.artifact == str(tmp_path / "weights/m.safetensors")
    assert cfg.tls.cert == tmp_path / "c.pem"
    f.write_text("role: edge\nplan: cloud[0:]\nauth: {token_file: certs/token}\n"
                 "upstream: {address: '127.0.0.1:1', auth: {token_file: t}, tls: {ca: ca.pem}}\n")
    cfg = read_node_file(f)
    assert cfg.auth.token_file == tmp_path / "certs/token" and cfg.upstream.auth.token_file == tmp_path / "t"
    assert cfg.listen.address == "127.0.0.1:0"
