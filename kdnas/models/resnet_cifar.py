"""The CIFAR ResNet of He et al. 2016 (sec. 4.2): depth 6n+2, three stages of n basic blocks at width
16/32/64, identity shortcuts with zero-padded channels (option A), so parameter counts match the paper
(ResNet-20: 0.27M, ResNet-56: 0.85M, ResNet-110: 1.7M). A width multiplier scales all channel counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kdnas.models._base import KDNet, ModelFamily, StagedNet

BASE_WIDTHS = (16, 32, 64)  # He et al. 2016, CIFAR-10 experiments


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.pad = c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad:
            x = F.pad(x, (0, 0, 0, 0, 0, self.pad))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def resnet_stages(c_in: int, blocks: tuple[int, ...], widths: tuple[int, ...]) -> list[nn.Module]:
    stages = []
    for i, (n, c_out) in enumerate(zip(blocks, widths)):
        stride = 1 if i == 0 else 2
        stages.append(nn.Sequential(*[BasicBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1) for j in range(n)]))
        c_in = c_out
    return stages


@dataclass(frozen=True)
class ResNetCifarParams:
    depth: int = 20  # 6n+2; 8, 14, 20, 32, 44, 56, 110 are the usual ones
    width: float = 1.0  # multiplies the base widths 16/32/64

    def check(self, report) -> None:
        if self.depth < 8 or (self.depth - 2) % 6:
            report("depth", f"must be 6n+2 with n >= 1 (8, 14, 20, 26, 32, …), but got depth={self.depth}")
        if not 0 < self.width <= 64:
            report("width", f"`0 < width <= 64` must hold, but got width={self.width}")


class ResNetCifarFamily(ModelFamily):
    name = "resnet_cifar"
    Params = ResNetCifarParams

    def build(self, params: ResNetCifarParams, input_shape, num_classes) -> KDNet:
        n = (params.depth - 2) // 6
        widths = tuple(max(1, round(w * params.width)) for w in BASE_WIDTHS)
        stem = nn.Sequential(nn.Conv2d(input_shape[0], widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        return StagedNet(stem, resnet_stages(widths[0], (n, n, n), widths), nn.Linear(widths[-1], num_classes))
