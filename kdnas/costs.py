"""Costs of an architecture: parameters, MACs (counted on the meta device) and measured latency.

Units are explicit in every name: ``params`` (count), ``macs`` (multiply-accumulates, one per
multiply-add; FLOPs = 2 * MACs), ``latency_ms`` (milliseconds per batch).
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from kdnas.artifacts import atomic_write_bytes, file_lock
from kdnas.models import ArchSpec, build, digest


@dataclass(frozen=True)
class Counts:
    params: int
    macs: int


def count(spec: ArchSpec, input_shape: tuple[int, int, int], num_classes: int) -> Counts:
    """Parameters and MACs of ``spec`` at batch size 1, without allocating weights (meta device).

    MACs come from ``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-add in
    convolutions and matrix products; element-wise work (BatchNorm, ReLU, pooling) is not counted.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build(spec, input_shape, num_classes)
        x = torch.empty(1, *input_shape)
    params = sum(p.numel() for p in model.parameters())
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return Counts(params=params, macs=counter.get_total_flops() // 2)


@dataclass(frozen=True)
class LatencySetting:
    """What a latency figure depends on besides the architecture."""

    device: str = "cpu"
    batch_size: int = 1
    threads: int = 1  # one thread: the steadiest CPU figure, and what most edge deployments run with

    def check(self, report) -> None:
        if self.batch_size < 1:
            report("batch_size", f"`batch_size >= 1` must hold, but got batch_size={self.batch_size}")
        if self.threads < 1:
            report("threads", f"`threads >= 1` must hold, but got threads={self.threads}")


def measure_latency(
    model: nn.Module, input_shape: tuple[int, int, int], setting: LatencySetting, repeats: int = 15, block_s: float = 0.01
) -> dict[str, float]:
    """Median and interquartile range, in ms, of one forward pass at ``setting``, via ``torch.utils.benchmark``.

    The Timer sets the thread count for the measurement only and synchronises CUDA. After a warm-up, the
    call count per block is chosen so that one block takes about ``block_s`` seconds (single calls of small
    models are too short to time alone); ``repeats`` blocks give the median and the spread.
    """
    # torch.utils.benchmark imports cpp_extension, which warns about CUDA_HOME on CPU-only machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import benchmark

    device = torch.device(setting.device)
    model = model.to(device).eval()
    x = torch.randn(setting.batch_size, *input_shape, device=device)
    with torch.inference_mode():
        timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=setting.threads)
        once = timer.timeit(5).mean  # also the warm-up: first calls allocate and pick kernels
        number = max(1, int(block_s / max(once, 1e-6)))
        times = [timer.timeit(number).mean * 1e3 for _ in range(repeats)]
    q = statistics.quantiles(times, n=4)
    return {"latency_ms": statistics.median(times), "latency_iqr_ms": q[2] - q[0]}


class LatencyCache:
    """Latencies keyed by (spec, input shape, device, batch size, threads), kept in one JSON file.

    The same architecture is never timed twice in a study; the file is rewritten atomically.
    """

    def __init__(self, path: Path):
        self.path = path
        self._data: dict[str, dict] = {}
        if path.is_file():
            try:
                self._data = json.loads(path.read_text())
            except (OSError, ValueError):
                self._data = {}  # a damaged cache only costs re-measuring

    @staticmethod
    def key(spec: ArchSpec, input_shape, num_classes: int, setting: LatencySetting) -> str:
        return digest([spec.to_dict(), list(input_shape), num_classes, vars(setting)])

    def get_or_measure(self, spec: ArchSpec, model: nn.Module, input_shape, num_classes: int, setting: LatencySetting) -> dict:
        key = self.key(spec, input_shape, num_classes, setting)
        if key not in self._data:
            # Re-read first: another worker may have measured it meanwhile.
            if self.path.is_file():
                try:
                    self._data.update(json.loads(self.path.read_text()))
                except (OSError, ValueError):
                    pass
        if key not in self._data:
            measured = measure_latency(model, input_shape, setting)
            # Read-merge-write under a lock: concurrent workers each add their entries, none is lost.
            with file_lock(self.path.with_name(self.path.name + ".lock")):
                if self.path.is_file():
                    try:
                        self._data.update(json.loads(self.path.read_text()))
                    except (OSError, ValueError):
                        pass
                self._data.setdefault(key, measured)
                atomic_write_bytes(self.path, json.dumps(self._data, indent=1).encode())
        return self._data[key]
