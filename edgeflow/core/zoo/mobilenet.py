"""MobileNetV2-style CNN (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks"), written to be cut: pure ``nn``, no shape-derived ints, fx-traceable."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .resnet import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["MobileNetV2Config", "InvertedResidual", "MobileNetV2", "build_mobilenet_v2"]

# (expansion t, channels c, repeats n, first stride s): Table 2 of the paper.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


@dataclass(frozen=True)
class MobileNetV2Config:
    num_classes: int = 1000  # ImageNet-1k
    width_mult: float = 1.0  # scales every layer's channels (rounded to multiples of 8)
    image_size: int = 224  # side of the square input the model is meant for (any side >= 32 runs)
    last_channels: int = 1280  # the paper's final 1×1 conv; only ever scaled up (paper, §5.1)
    dropout: float = 0.2  # before the classifier, as in torchvision
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of 8 without dropping more than 10% (TF reference code)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=False),
    )


class InvertedResidual(nn.Module):
    """1×1 expand → 3×3 depthwise → 1×1 linear projection; residual add when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn_relu6(cin, hidden, 1, 1))
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W)
        out = self.conv(x)  # (B, Cout, H/s, W/s)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, config: MobileNetV2Config) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        cin = _make_divisible(32 * config.width_mult)
        last = _make_divisible(config.last_channels * max(1.0, config.width_mult))
        layers: list[nn.Module] = [_conv_bn_relu6(3, cin, 3, 2)]
        for t, c, n, s in _SETTINGS:
            cout = _make_divisible(c * config.width_mult)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(_conv_bn_relu6(cin, last, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(last, config.num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1]
        x = (x - self.mean) / self.std
        x = self.features(x)  # (B, last, H/32, W/32)
        x = x.mean((2, 3))  # (B, last)
        return self.classifier(x)  # (B, num_classes)


def build_mobilenet_v2(config: MobileNetV2Config) -> MobileNetV2:
    return MobileNetV2(config)
