"""Plain CNNs: conv-BN-ReLU layers with a 2x2 max-pool after every ``pool_every``-th layer, as in the
teacher-assistant experiments of Mirzadeh et al. 2020 (TAKD), whose plain CNNs have 2 to 10 conv layers.

TAKD's CIFAR-10 nets in this family's terms (all ``kernel_size=3``)::

    plain-2   channels=[16, 16]                            pool_every=1
    plain-4   channels=[16, 16, 32, 32]                    pool_every=2
    plain-6   channels=[16, 16, 32, 32, 64, 64]            pool_every=2
    plain-8   channels=[16, 16, 32, 32, 64, 64, 128, 128]  pool_every=2  hidden=64

(plain-10 pools after layers 2, 4, 6 and 10, which no single ``pool_every`` reproduces.) Two deliberate
differences from TAKD's code: the classifier reads globally average-pooled features instead of the flattened
map, so one network works for every input size; and convolutions have no bias, since the BatchNorm right
after them cancels it. Parameter counts are therefore smaller than TAKD's.

Feature stages follow the resolution: ``stem`` is the first conv layer, and each ``stageN`` runs up to and
including the next scheduled max-pool (or the last layer), so every stage but possibly the last ends with a
resolution change, like the stages of a ResNet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from kdnas.models._base import KDNet, ModelFamily, StagedNet

MAX_LAYERS = 64  # far past TAKD's 10; plain (non-residual) nets stop gaining depth long before this


def conv_bn_relu(c_in: int, c_out: int, kernel_size: int) -> nn.Sequential:
    # "same" padding: only the max-pools change the resolution, so the pooling schedule alone decides it.
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size, 1, kernel_size // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


@dataclass(frozen=True)
class PlainCNNParams:
    # Output channels of each conv layer; the length is the depth. The default is TAKD's 4-layer CIFAR-100 net.
    channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    pool_every: int = 2  # TAKD pools after every 2nd layer (every layer in its 2-layer net)
    hidden: int = 0  # one hidden FC layer of this width before the classifier (TAKD's 8/10-layer nets); 0 = none
    kernel_size: int = 3  # 3 as in TAKD; 5 doubles the receptive-field growth of these shallow nets

    def check(self, report) -> None:
        n = len(self.channels)
        if not 2 <= n <= MAX_LAYERS:
            # Two at least: the first layer is the stem, and a network needs one stage after it.
            report("channels", f"`2 <= len(channels) <= {MAX_LAYERS}` must hold, but got len(channels)={n}")
        for i, c in enumerate(self.channels):
            if c < 1:
                report(f"channels[{i}]", f"`channels[{i}] >= 1` must hold, but got channels[{i}]={c}")
        if self.pool_every < 1:
            report("pool_every", f"`pool_every >= 1` must hold, but got pool_every={self.pool_every}")
        if self.hidden < 0:
            report("hidden", f"`hidden >= 0` must hold (0 = no hidden layer), but got hidden={self.hidden}")
        if self.kernel_size not in (3, 5):
            report("kernel_size", f"`kernel_size in (3, 5)` must hold, but got kernel_size={self.kernel_size}")


class PlainCNNFamily(ModelFamily):
    name = "plain_cnn"
    Params = PlainCNNParams

    def build(self, params: PlainCNNParams, input_shape, num_classes) -> KDNet:
        c_in, h, w = input_shape
        groups: list[list[nn.Module]] = [[]]
        for i, c_out in enumerate(params.channels):
            groups[-1].append(conv_bn_relu(c_in, c_out, params.kernel_size))
            c_in = c_out
            pool_here = (i + 1) % params.pool_every == 0
            if pool_here:
                # Halve only the dimensions still >= 2, so no input size is ever pooled down to nothing.
                kh, kw = (2 if h >= 2 else 1), (2 if w >= 2 else 1)
                if kh * kw > 1:
                    groups[-1].append(nn.MaxPool2d((kh, kw)))
                    h, w = h // kh, w // kw
            if i == 0 or pool_here:
                groups.append([])
        stages = [nn.Sequential(*g) for g in groups[1:] if g]
        if params.hidden:
            classifier = nn.Sequential(nn.Linear(c_in, params.hidden), nn.ReLU(), nn.Linear(params.hidden, num_classes))
        else:
            classifier = nn.Linear(c_in, num_classes)
        return StagedNet(nn.Sequential(*groups[0]), stages, classifier)
