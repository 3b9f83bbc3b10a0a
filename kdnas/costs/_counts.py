"""Parameters, MACs and FLOPs of an architecture, by one of three counters.

Units: ``params`` is a count of weights; ``macs`` counts multiply-accumulates (one per multiply-add);
``flops`` is ``2 * macs`` by definition (a multiply-add is two floating-point operations, the convention of
PyTorch's FlopCounterMode). The counters agree exactly on convolutions (grouped and depthwise included) and
on linear layers; they differ in what else they count (docs/costs.md has the table, and
tests/test_counters.py checks it on every family):

=============== ================================ ==================================== ============================
op              flop_counter (default)           fvcore                               thop
=============== ================================ ==================================== ============================
BatchNorm       0                                2 per element (affine, eval mode)    4 per element (affine)
avg pooling     0                                1 per input element                  (kernel + 1) per output element
max pooling     0                                0 (unsupported op, skipped)          0
ReLU / ReLU6    0                                0                                    0
residual add    0                                0 (skipped)                          0 (not a module)
bias add        0                                0                                    0
=============== ================================ ==================================== ============================
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from kdnas.core import Registry
from kdnas.models import ArchSpec, build


@dataclass(frozen=True)
class Counts:
    params: int  # weights (count)
    macs: int  # multiply-accumulates for one input (batch size 1), as the counter counts them

    @property
    def flops(self) -> int:
        """Floating-point operations: two per multiply-accumulate."""
        return 2 * self.macs


# A counter takes a model in eval mode and one input batch, and returns MACs for that batch.
Counter = Callable[[nn.Module, torch.Tensor], int]


def _flop_counter(model: nn.Module, x: torch.Tensor) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2  # it counts 2 FLOPs per multiply-add


def _fvcore(model: nn.Module, x: torch.Tensor) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its import scripts a function with torch.jit.script
        from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x)
    # Skipped ops (add, pad, max_pool2d, hardtanh) are documented in the module docstring; don't log them.
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's TracerWarnings on the shape-dependent code paths
        return int(analysis.total())  # fvcore's "flop" is one multiply-add


def _thop(model: nn.Module, x: torch.Tensor) -> int:
    import thop

    macs, _ = thop.profile(model, inputs=(x,), verbose=False)
    return int(macs)


COUNTERS: Registry[Counter] = Registry("MAC counter")
# The one place where counters are registered. fvcore traces with torch.jit, which needs real tensors.
COUNTERS.register("flop_counter", _flop_counter)
COUNTERS.register("fvcore", _fvcore)
COUNTERS.register("thop", _thop)
_NEEDS_REAL_TENSORS = {"fvcore"}
# The others count small networks for small inputs (up to 64x64 RGB) on real, uninitialised CPU tensors,
# where a pass costs less than on the meta device, whose every op goes through Python (docs/performance.md);
# others on meta, where no memory is allocated and no arithmetic done, so that a huge candidate costs nothing
# to screen.
_REAL_MAX_PARAMS = 5_000_000
_REAL_MAX_INPUT = 3 * 64 * 64


def count(spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int, counter: str = "flop_counter",
          device: str | None = None) -> Counts:
    """Parameters and MACs of ``spec`` for one input of shape ``input_shape`` (batch size 1); ``device``
    (``cpu`` or ``meta``; ``fvcore`` needs ``cpu``) overrides where the counter runs (same figures, other time)."""
    fn = COUNTERS.get(counter)
    real = counter in _NEEDS_REAL_TENSORS
    # fork_rng: initialising real weights draws random numbers, and counting must not change what a trial
    # trains after it.
    with torch.random.fork_rng(devices=[]), torch.device("cpu" if real else "meta"):
        model = build(spec, input_shape, num_classes)
    params = sum(p.numel() for p in model.parameters())
    if device is None:
        small = params <= _REAL_MAX_PARAMS and math.prod(input_shape) <= _REAL_MAX_INPUT
        device = "cpu" if real or small else "meta"
    if device == "cpu" and not real:
        model = model.to_empty(device="cpu")  # memory without initialisation: counting ignores the values
    x = torch.zeros(1, *input_shape, device=device)
    return Counts(params=params, macs=fn(model.eval(), x))
