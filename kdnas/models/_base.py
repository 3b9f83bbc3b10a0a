"""The model-family contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn


class KDNet(nn.Module):
    """A network built by kdnas: ``forward(x)`` returns logits; stage outputs are named.

    ``feature_modules()`` maps stage names (``stem``, ``stage1`` … , ``pool``) to the submodules whose
    forward outputs are those features, in network order. Distillation methods read features through
    forward hooks on these modules; no loss reaches into a model's code.
    """

    @abstractmethod
    def feature_modules(self) -> dict[str, nn.Module]: ...


class StagedNet(KDNet):
    """The shape every family shares: ``stem -> stages -> neck -> pool -> classifier``.

    ``pool`` is global average pooling plus flatten, which is what lets one network take any input size.
    ``neck`` is whatever runs on the last feature map before pooling (MobileNetV2's 1x1 conv; identity
    elsewhere). Stage names for feature distillation are ``stem``, ``stage1`` … ``stageN``, ``pool``.
    """

    def __init__(self, stem: nn.Module, stages: list[nn.Module], classifier: nn.Module, neck: nn.Module | None = None):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.neck = neck if neck is not None else nn.Identity()
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = classifier
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He et al. 2015 init, as every family's reference code uses
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(self.pool(self.neck(x)))

    def chain(self) -> list[nn.Module]:
        """The modules whose composition is ``forward``, in order (kdnas.costs times a pass step by step)."""
        return [self.stem, *self.stages, self.neck, self.pool, self.classifier]

    def feature_modules(self) -> dict[str, nn.Module]:
        names = {"stem": self.stem}
        names.update({f"stage{i + 1}": s for i, s in enumerate(self.stages)})
        names["pool"] = self.pool
        return names


class ModelFamily(ABC):
    """One architecture family.

    ``Params`` is a dataclass whose fields are the family's parameters (with defaults and a ``check``
    method); :func:`kdnas.models.make_spec` validates a spec dict against it. ``build`` is called once per
    network with validated parameters and must work for any input shape ``(C, H, W)`` and class count.
    """

    name: ClassVar[str]
    Params: ClassVar[type]

    @abstractmethod
    def build(self, params: object, input_shape: tuple[int, int, int], num_classes: int) -> KDNet: ...
