"""The model zoo: small, cuttable re-implementations of well-known image classifiers.

Every model takes a float32 image batch in [0, 1] of shape (B, 3, H, W), normalises it as its first
op, and traces with ``torch.fx.symbolic_trace``. Build one by name::

    model = build_model("resnet18", width=16, num_classes=10, image_size=64)

``edgeflow.core.registry`` pre-registers these names and lets users add their own.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .mobilenet import MobileNetV2, MobileNetV2Config, build_mobilenet_v2
from .resnet import ResNet, ResNetConfig, build_resnet
from .vit import ViT, ViTConfig, build_vit

__all__ = [
    "ZOO",
    "ZOO_NAMES",
    "build_model",
    "ResNet",
    "ResNetConfig",
    "MobileNetV2",
    "MobileNetV2Config",
    "ViT",
    "ViTConfig",
]

# name -> (builder(config) -> nn.Module, config dataclass)
ZOO: dict[str, tuple[Callable[[Any], nn.Module], type]] = {
    "resnet18": (build_resnet, ResNetConfig),
    "mobilenet_v2": (build_mobilenet_v2, MobileNetV2Config),
    "vit": (build_vit, ViTConfig),
}
ZOO_NAMES: tuple[str, ...] = tuple(ZOO)


def build_model(name: str, **config: Any) -> nn.Module:
    """Build a zoo model, or any architecture registered in ``edgeflow.core.registry``.

    Args:
        name: an architecture name (``ZOO_NAMES`` or a registered one).
        **config: fields of the architecture's config dataclass; omitted ones take defaults.

    Raises:
        ConfigError: unknown name, or a config field the architecture does not have.
    """
    from ..registry import build_model as _build  # registry imports this package: import late

    return _build(name, **config)
