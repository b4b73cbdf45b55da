"""The node file's ``ray`` section becomes Serve's deployment options (no Ray cluster needed)."""

from __future__ import annotations

import pytest

from edgeflow.config import NodeConfig
from edgeflow.errors import ConfigError
from edgeflow.rayserve.deployment import deployment_options


def _cloud(**ray: object) -> NodeConfig:
    return NodeConfig.from_mapping({"role": "cloud", "plan": "cloud[0:]", "ray": ray})


def test_autoscaling_from_the_ray_section() -> None:
    o = deployment_options(_cloud(min_replicas=2, max_replicas=6, target_ongoing_requests=3, num_cpus=0.5))
    assert o["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 6, "target_ongoing_requests": 3.0}
    assert o["ray_actor_options"] == {"num_cpus": 0.5} and "num_replicas" not in o


def test_a_fixed_count_replaces_autoscaling() -> None:
    o = deployment_options(_cloud(num_replicas=3))
    assert o["num_replicas"] == 3 and "autoscaling_config" not in o


def test_bad_sections_name_the_field() -> None:
    with pytest.raises(ConfigError, match="min_replicas 5 > max_replicas 2"):
        _cloud(min_replicas=5, max_replicas=2)
    edge = NodeConfig.from_mapping({"role": "edge", "plan": "edge[0:20] > cloud[20:]", "upstream": {"address": "127.0.0.1:5"}})
    with pytest.raises(ConfigError, match="cloud tier"):
        deployment_options(edge)
