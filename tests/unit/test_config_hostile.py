"""Issue 14 (items 2, 4): config errors name the field, never echo a secret, never a traceback."""

from pathlib import Path

import pytest

from edgeflow.cli.agent_cmds import read_node_file
from edgeflow.config import NodeConfig
from edgeflow.errors import ConfigError

BASE = "role: device\nplan: 'device[0:]'\n"


def _load(tmp_path: Path, body: str) -> NodeConfig:
    f = tmp_path / "node.yaml"
    f.write_text(BASE + body)
    return read_node_file(f)


def test_inline_token_is_refused_without_echoing_it(tmp_path: Path) -> None:
    for body in ("auth: {token: hunter2-s3cret}\n", "upstream: {address: 'h:1', auth: {token: hunter2-s3cret}}\n",
                 "token: hunter2-s3cret\n"):  # fmt: skip
        with pytest.raises(ConfigError) as e:
            _load(tmp_path, body)
        assert "token" in str(e.value)
        assert "hunter2" not in str(e.value)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("keepalive: {time_s: 1e10}\n", "keepalive.time_s"),
        ("keepalive: {time_s: .inf}\n", "keepalive.time_s"),
        ("keepalive: {timeout_s: .nan}\n", "keepalive.timeout_s"),
        ("deadlines: {request_s: .inf}\n", "deadlines.request_s"),
        ("deadlines: {stream_idle_s: 0}\n", "deadlines.stream_idle_s"),
        ("limits: {max_message_mb: 1.0e-9}\n", "limits.max_message_mb"),
    ],
)
def test_durations_and_sizes_are_finite_and_bounded(tmp_path: Path, body: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        _load(tmp_path, body)


def test_deep_yaml_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        _load(tmp_path, "x: " + "[" * 50_000 + "]" * 50_000 + "\n")


def test_deep_scenario_yaml_is_a_config_error(tmp_path: Path) -> None:
    from edgeflow.cli.run_cmd import read_scenario

    f = tmp_path / "s.yaml"
    f.write_text("x: " + "{a: " * 50_000 + "1" + "}" * 50_000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_scenario(f)


def test_zoo_artifact_in_a_node_file_is_not_a_path(tmp_path: Path) -> None:
    from edgeflow.agent.loader import load_runtime

    cfg = _load(tmp_path, "model: {artifact: 'zoo:resnet18?width=8&image_size=32'}\n")
    assert cfg.model.artifact == "zoo:resnet18?width=8&image_size=32"
    rt = load_runtime(cfg)
    assert rt.fingerprint
