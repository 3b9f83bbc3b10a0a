"""The study file's ``costs`` section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kdnas.costs._setting import LatencySetting


@dataclass(frozen=True)
class CostsConfig:
    # Who counts MACs. flop_counter (PyTorch's own) counts convolutions and matrix products only; fvcore and
    # thop add BatchNorm and pooling, each its own way (docs/costs.md). Params are the same for all three.
    counter: Literal["flop_counter", "fvcore", "thop"] = "flop_counter"
    latency: LatencySetting = field(default_factory=LatencySetting)
