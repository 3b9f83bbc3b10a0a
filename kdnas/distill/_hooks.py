"""Features through forward hooks: pairing teacher and student stages, probing shapes, collecting outputs.

No model code changes for distillation: a network names its stage modules (``KDNet.feature_modules()``:
``stem``, ``stage1`` … ``stageN``, ``pool``) and a hook keeps each one's output from the latest forward pass.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
from torch import nn

from kdnas.distill._base import Reads

_STAGE = re.compile(r"^stage(\d+)$")


def stage_names(model: nn.Module) -> list[str]:
    """``stage1`` … ``stageN`` of ``model``, in network order."""
    names = [n for n in model.feature_modules() if _STAGE.match(n)]
    return sorted(names, key=lambda n: int(_STAGE.match(n).group(1)))


def pair_stages(student: Sequence[str], teacher: Sequence[str]) -> list[tuple[str, str]]:
    """Pair stages at the same relative depth: ``min(N, M)`` pairs, the last stages always paired.

    Pair k of K sits at depth k/K in both networks: student stage ``round(k N / K)`` with teacher stage
    ``round(k M / K)``. With equal stage counts this is stage i with stage i; a 2-stage student under a
    3-stage teacher gets (1, 2) and (2, 3). Rounding is half up, so a tie goes to the deeper stage.
    """
    n, m = len(student), len(teacher)
    k_max = min(n, m)
    return [(student[math.floor(k * n / k_max + 0.5) - 1], teacher[math.floor(k * m / k_max + 0.5) - 1])
            for k in range(1, k_max + 1)]


def select_pairs(reads: Reads, student: nn.Module, teacher: nn.Module) -> list[tuple[str, str]]:
    """The (student, teacher) feature names a method that ``reads`` this hooks."""
    if reads == "embedding":
        return [("pool", "pool")]
    if reads in ("labels", "logits"):
        return []
    pairs = pair_stages(stage_names(student), stage_names(teacher))
    if reads == "hint":  # FitNets' "middle layer"; RepDistiller's hint_layer=2 of a 3-stage ResNet
        return [pairs[(len(pairs) - 1) // 2]]
    if reads == "last_stage":
        return [pairs[-1]]
    return pairs


def probe_shapes(model: nn.Module, names: Sequence[str], input_shape: Sequence[int]) -> list[tuple[int, ...]]:
    """Output shapes (without the batch dimension) of the named feature modules, computed on the meta device:
    no weights are copied and nothing is computed, whatever device the model is on."""
    if not names:
        return []
    meta = {k: torch.empty_like(v, device="meta") for k, v in [*model.named_parameters(), *model.named_buffers()]}
    with FeatureTap(model, names) as tap, torch.no_grad():
        # Two samples: BatchNorm in training mode needs more than one value per channel.
        torch.func.functional_call(model, meta, (torch.empty(2, *input_shape, device="meta"),))
        out = tap.take()
    return [tuple(t.shape[1:]) for t in out]


class FeatureTap:
    """Forward hooks on named feature modules, keeping each one's output from the latest forward pass.

    Use as a context manager (the hooks are removed on exit) or call :meth:`close`.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        modules = model.feature_modules()
        unknown = [n for n in names if n not in modules]
        if unknown:
            raise ValueError(f"{type(model).__name__} has no feature module {unknown}; it has {sorted(modules)}")
        self.names = list(names)
        self._out: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._keeper(n)) for n in dict.fromkeys(self.names)]

    def _keeper(self, name: str):
        def hook(module: nn.Module, args, output: torch.Tensor) -> None:
            self._out[name] = output
        return hook

    def take(self) -> tuple[torch.Tensor, ...]:
        """The kept outputs, in ``names`` order, forgotten afterwards so that no step reads a stale one."""
        missing = [n for n in self.names if n not in self._out]
        if missing:
            raise RuntimeError(f"no output kept for {missing}: the loss must follow a forward pass of the model")
        out = tuple(self._out[n] for n in self.names)
        self._out.clear()
        return out

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._out.clear()

    def __enter__(self) -> "FeatureTap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
