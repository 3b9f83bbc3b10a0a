"""MobileNetV2 (Sandler et al. 2018): stages of inverted-residual blocks — 1x1 expansion, depthwise conv, linear
1x1 projection — with a residual connection wherever a block keeps both resolution and channel count.

Adapted to CIFAR-size inputs the way the common CIFAR ports do (e.g. kuangliu/pytorch-cifar): the stem and the
paper's first stride-2 stage use stride 1, since a 32x32 image cannot afford the paper's 32x downsampling.
``blocks`` takes the first ``len(blocks)`` stages of the paper's Table 2 (channels 16, 24, 32, 64, 96, 160,
320). The default ``[1, 2, 2, 2]`` keeps four stages and thins them: on 32x32 inputs its stages run at
32, 32, 16 and 8 pixels, ending at ResNet-CIFAR's 8x8, and it has 0.14M parameters (10 classes): half of
ResNet-20, against 2.2M for all seven stages — a small student rather than an ImageNet model.

The final 1x1 conv keeps the paper's 4x ratio to the last stage (1280 = 4 x 320) instead of a fixed 1280, so
it shrinks with a truncated network; and unlike the paper it is width-scaled below width 1 too, so that a
tiny student is not dominated by its head. With all seven stages at width 1 the network has exactly the
paper's (and torchvision's) parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from kdnas.models._base import KDNet, ModelFamily, StagedNet

BASE_CHANNELS = (16, 24, 32, 64, 96, 160, 320)  # Sandler et al. 2018, Table 2
STRIDES = (1, 1, 2, 2, 1, 2, 1)  # Table 2's, with stage 2 at stride 1 for small inputs (module docstring)
STEM_CHANNELS = 32  # Table 2
HEAD_RATIO = 4  # Table 2: the last 1x1 conv has 1280 = 4 x 320 channels


def scaled(channels: int, width: float) -> int:
    """``channels * width``, rounded to a multiple of 8 from 8 up, as in the paper's reference code (it keeps
    SIMD lanes full); below 8 rounded to the nearest integer, at least 1, so that tiny students stay tiny."""
    v = channels * width
    if v < 8:
        return max(1, round(v))
    r = max(8, int(v + 4) // 8 * 8)
    return r + 8 if r < 0.9 * v else r  # the reference code's guard: never round down by more than 10%


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: tuple[int, int], expansion: int, kernel_size: int):
        super().__init__()
        hidden = c_in * expansion
        layers: list[nn.Module] = []
        if expansion != 1:  # t=1 expands nothing; the paper's reference code then drops the 1x1 conv, and so do we
            layers += [nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, kernel_size, stride, kernel_size // 2, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            # Linear bottleneck: no activation after the projection (sec. 3.2), a ReLU would destroy information.
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        self.body = nn.Sequential(*layers)
        self.residual = stride == (1, 1) and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


@dataclass(frozen=True)
class MobileNetV2Params:
    width: float = 1.0  # multiplies every channel count, the final 1x1 conv's included
    expansion: int = 6  # the paper's t for every stage but the first, which uses t=1 as in Table 2
    # Blocks per stage over Table 2's first len(blocks) stages; Table 2 itself is [1, 2, 3, 4, 3, 3, 1].
    blocks: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    kernel_size: int = 3  # of the depthwise convs; 5 widens the receptive field at little cost (MnasNet)

    def check(self, report) -> None:
        n = len(self.blocks)
        if not 1 <= n <= len(BASE_CHANNELS):
            report("blocks", f"`1 <= len(blocks) <= {len(BASE_CHANNELS)}` must hold (the stages of Sandler et al. "
                             f"Table 2), but got len(blocks)={n}")
        for i, b in enumerate(self.blocks):
            if b < 1:
                report(f"blocks[{i}]", f"`blocks[{i}] >= 1` must hold, but got blocks[{i}]={b}")
        if not 0 < self.width <= 64:
            report("width", f"`0 < width <= 64` must hold, but got width={self.width}")
        if self.expansion < 1:
            report("expansion", f"`expansion >= 1` must hold, but got expansion={self.expansion}")
        if self.kernel_size not in (3, 5):
            report("kernel_size", f"`kernel_size in (3, 5)` must hold, but got kernel_size={self.kernel_size}")


class MobileNetV2Family(ModelFamily):
    name = "mobilenetv2"
    Params = MobileNetV2Params

    def build(self, params: MobileNetV2Params, input_shape, num_classes) -> KDNet:
        c_in, h, w = input_shape
        c = scaled(STEM_CHANNELS, params.width)
        stem = nn.Sequential(nn.Conv2d(c_in, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU6())
        stages = []
        for i, n in enumerate(params.blocks):
            c_out = scaled(BASE_CHANNELS[i], params.width)
            t = 1 if i == 0 else params.expansion
            blocks = []
            for j in range(n):
                s = STRIDES[i] if j == 0 else 1
                # Striding a 1-pixel dimension changes nothing but would cost the block its residual.
                stride = (s if h > 1 else 1, s if w > 1 else 1)
                blocks.append(InvertedResidual(c, c_out, stride, t, params.kernel_size))
                h, w = -(-h // stride[0]), -(-w // stride[1])  # "same" padding: ceil(size / stride), never 0
                c = c_out
            stages.append(nn.Sequential(*blocks))
        c_head = scaled(HEAD_RATIO * BASE_CHANNELS[len(params.blocks) - 1], params.width)
        head = nn.Sequential(nn.Conv2d(c, c_head, 1, bias=False), nn.BatchNorm2d(c_head), nn.ReLU6())
        return StagedNet(stem, stages, nn.Linear(c_head, num_classes), neck=head)
