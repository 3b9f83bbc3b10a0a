"""Latency without measuring the network: a per-layer lookup table, built once per machine and setting.

A forward pass with hooks lists the network's leaf layers (convolutions, BatchNorm, activations, pooling,
linear) with the shape each one receives. Every (layer, input shape, setting) not yet in the table is timed
alone, all of them interleaved in one ``measure_calls`` run, and stored; the estimate is the sum over the
network's layers. As architectures share most of their layers, the table soon answers without timing
anything.

What it misses: work outside layers (the residual additions, padding and slicing written in a block's
``forward``) and the Python overhead between layers, so it runs below the measured latency; what it is for is
ranking architectures (``benchmarks/latency_table.py`` reports its Spearman rank correlation with measured
latency) and skipping a measurement where a rough figure is enough.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from kdnas.core import atomic_write_bytes, cache_dir
from kdnas.costs._probe import machine
from kdnas.costs._setting import DTYPES, LatencySetting
from kdnas.costs._timing import ESTIMATOR, Chain, measure_calls
from kdnas.models import digest

# Each layer runs in microseconds, so a short share of every round gives it thousands of samples.
_LAYER_MIN_SECONDS = 0.05


def leaf_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """The leaf modules ``model`` calls on ``x``, in call order, each with the shape of its input."""
    calls: list[tuple[nn.Module, tuple[int, ...]]] = []
    hooks = [m.register_forward_pre_hook(lambda m, inputs: calls.append((m, tuple(inputs[0].shape))))
             for m in model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return calls


class LatencyTable:
    """Per-layer latencies (ms) in one JSON file, keyed by machine, setting, layer and input shape."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "latency_table.json"
        self._data: dict[str, float] = self._read()

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}  # missing or damaged: only costs timing the layers again

    @staticmethod
    def key(layer: nn.Module, shape: tuple[int, ...], setting: LatencySetting) -> str:
        # repr names the layer type and every constructor argument that changes its work.
        return digest([ESTIMATOR, machine(), setting.identity(), repr(layer), list(shape)])

    def estimate(self, model: nn.Module, input_shape: tuple[int, int, int], setting: LatencySetting) -> float:
        """Estimated latency (ms per batch) of ``model`` at ``setting``: the sum of its layers' table entries."""
        device, dtype = torch.device(setting.device), DTYPES[setting.dtype]
        model = model.to(device=device, dtype=dtype).eval()
        x = torch.zeros(setting.batch_size, *input_shape, device=device, dtype=dtype)
        calls = [(self.key(m, s, setting), m, s) for m, s in leaf_calls(model, x)]
        missing = {k: (m, s) for k, m, s in calls if k not in self._data}
        if missing:
            layers = [[Chain([copy.deepcopy(m)], torch.randn(s, generator=torch.Generator().manual_seed(0))
                             .to(device=device, dtype=dtype))] for m, s in missing.values()]
            measured = measure_calls(layers, replace(setting, min_seconds=_LAYER_MIN_SECONDS))
            self._data = {**self._read(), **{k: r.latency_ms for k, r in zip(missing, measured)}, **self._data}
            atomic_write_bytes(self.path, json.dumps(self._data, indent=1).encode())
        return sum(self._data[k] for k, _, _ in calls)
