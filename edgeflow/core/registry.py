"""Architecture registry: name -> (builder, config dataclass).

An artifact names its architecture and stores its config as JSON; loading it looks the name up here.
The zoo's models are registered on import; users add their own with ``register_architecture``::

    @dataclass(frozen=True)
    class TinyConfig:
        num_classes: int = 10

    register_architecture("tiny", lambda cfg: Tiny(cfg), TinyConfig)
    model = build_model("tiny", num_classes=4)

Configs must be dataclasses whose fields are JSON-representable (numbers, strings, bools, None,
tuples/lists of them). JSON has no tuples, so lists read back from JSON are turned into tuples.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from .zoo import ZOO

__all__ = [
    "Architecture",
    "register_architecture",
    "get_architecture",
    "architecture_names",
    "make_config",
    "config_to_dict",
    "config_to_json",
    "build_model",
]


@dataclass(frozen=True)
class Architecture:
    name: str
    builder: Callable[[Any], nn.Module]
    config_cls: type

    def build(self, config: Any) -> nn.Module:
        return self.builder(config)


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(
    name: str, builder: Callable[[Any], nn.Module], config_cls: type, *, replace: bool = False
) -> Architecture:
    """Register an architecture under ``name``.

    Args:
        name: the name artifacts will store.
        builder: ``builder(config) -> nn.Module``.
        config_cls: a dataclass type; its defaults must make a valid config.
        replace: allow replacing an existing registration (otherwise it is an error).

    Raises:
        ConfigError: ``config_cls`` is not a dataclass, or ``name`` is taken and ``replace`` is False.
    """
    if not dataclasses.is_dataclass(config_cls) or not isinstance(config_cls, type):
        raise ConfigError(f"architecture {name!r}: config_cls {config_cls!r} is not a dataclass type")
    if name in _REGISTRY and not replace:
        raise ConfigError(f"architecture {name!r} is already registered")
    arch = Architecture(name, builder, config_cls)
    _REGISTRY[name] = arch
    return arch


def get_architecture(name: str) -> Architecture:
    """Raises: ConfigError: no architecture of that name."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {name!r}; registered: {sorted(_REGISTRY)}"
        ) from None


def architecture_names() -> list[str]:
    return sorted(_REGISTRY)


def make_config(name: str, **fields: Any) -> Any:
    """Build the config dataclass of architecture ``name`` from keyword fields.

    Lists become tuples (JSON round trips). Raises ConfigError naming an unknown field.
    """
    arch = get_architecture(name)
    known = {f.name for f in dataclasses.fields(arch.config_cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown config field(s) {unknown}; known: {sorted(known)}")
    fields = {k: _tuplify(v) for k, v in fields.items()}
    try:
        return arch.config_cls(**fields)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{name}: invalid config {fields}: {e}") from e


def config_to_dict(config: Any) -> dict[str, Any]:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ConfigError(f"config {config!r} is not a dataclass instance")
    return dataclasses.asdict(config)


def config_to_json(config: Any) -> str:
    """Canonical JSON (sorted keys, no spaces): equal configs give equal strings."""
    try:
        return json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config {config!r} is not JSON-representable: {e}") from e


def build_model(name: str, **config: Any) -> nn.Module:
    """Build architecture ``name`` with the given config fields (others default).

    Raises:
        ConfigError: unknown architecture or config field.
    """
    arch = get_architecture(name)
    return arch.build(make_config(name, **config))


def _tuplify(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_tuplify(x) for x in v)
    return v


for _name, (_builder, _config_cls) in ZOO.items():
    register_architecture(_name, _builder, _config_cls)
