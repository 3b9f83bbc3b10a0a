"""The model-family contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn


class KDNet(nn.Module):
    """A network built by kdnas: ``forward(x)`` returns logits; stage outputs are named.

    ``feature_modules()`` maps stage names (``stem``, ``stage1`` … , ``pool``) to the submodules whose
    forward outputs are those features, in network order. Distillation methods read features through
    forward hooks on these modules; no loss reaches into a model's code.
    """

    @abstractmethod
    def feature_modules(self) -> dict[str, nn.Module]: ...


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
