"""ResNet-18-style CNN (He et al., 2015, "Deep Residual Learning"), written to be cut.

Pure ``nn`` code. The forward pass avoids Python ints derived from shapes, so
``torch.fx.symbolic_trace`` yields a flat graph whose every boundary between blocks is a
candidate cut. Layout and names follow torchvision's ``resnet18`` (stem, ``layer1..4``, ``fc``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ResNetConfig", "BasicBlock", "ResNet", "build_resnet"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ResNetConfig:
    num_classes: int = 1000  # ImageNet-1k, as torchvision's resnet18
    width: int = 64  # channels of stage 1; stages use width * (1, 2, 4, 8)
    blocks: tuple[int, ...] = (2, 2, 2, 2)  # BasicBlocks per stage: (2, 2, 2, 2) is ResNet-18
    image_size: int = 224  # side of the square input the model is meant for (any side >= 32 runs)
    mean: tuple[float, float, float] = IMAGENET_MEAN  # input normalisation happens inside the model,
    std: tuple[float, float, float] = IMAGENET_STD  # so the raw input is a [0, 1] image a codec can carry


class BasicBlock(nn.Module):
    """Two 3×3 convs plus an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=False)  # in-place ops would alias tensors that cross a cut
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W)
        identity = x if self.downsample is None else self.downsample(x)  # (B, Cout, H/s, W/s)
        out = self.relu(self.bn1(self.conv1(x)))  # (B, Cout, H/s, W/s)
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, config: ResNetConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=False)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        in_channels = w
        for i, num_blocks in enumerate(config.blocks):
            out_channels = w * 2**i
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(in_channels, out_channels, stride)]
            blocks += [BasicBlock(out_channels, out_channels) for _ in range(num_blocks - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = out_channels
        # Named layer1..layerN like torchvision, so state-dict keys read the same.
        for i, stage in enumerate(stages):
            self.add_module(f"layer{i + 1}", stage)
        self.num_stages = len(stages)
        self.fc = nn.Linear(in_channels, config.num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1]
        x = (x - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, w, H/4, W/4)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)  # (B, w*2^i, H/2^(i+2), W/2^(i+2))
        x = x.mean((2, 3))  # (B, C) global average pool
        return self.fc(x)  # (B, num_classes)


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    # Zero-init the last BN of each residual branch: every block starts as identity, which
    # trains faster from scratch (Goyal et al., 2017, "Accurate, Large Minibatch SGD").
    for m in model.modules():
        if isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


def build_resnet(config: ResNetConfig) -> ResNet:
    return ResNet(config)
