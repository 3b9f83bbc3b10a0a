"""Measured latency: a floor estimate that two processes on a busy machine reproduce, and its cache.

What a figure means: the time of one forward pass (one batch, inference mode) on an otherwise quiet core.
On a shared machine most calls are slowed by whatever runs beside them (on a 2-core VM the median of one
model varied by 80-120 % between processes), but a neighbour only ever adds time, so the fast end of the
distribution is what stays put. docs/costs.md has the measurements behind each choice below, and
benchmarks/latency_stability.py repeats them.

How it is taken (``measure_calls``):

- The clock: on CPU with one thread, the thread's CPU time, which leaves out the time the thread waited for
  the core while another process ran; otherwise wall-clock time (synchronised on CUDA).
- After a warm-up, every workload is timed call by call (or in the smallest block that keeps timer overhead
  under 0.1 %: quiet moments are short), in rounds of 0.1 s that interleave all workloads, in a shuffled
  order, so that they all see the same conditions.
- The raw figure is the 5th-fastest call: a fixed rank, not a percentile, because under heavy load fewer than
  1 % of the calls run undisturbed and a percentile then lands among the disturbed ones.
- A probe (kdnas/costs/_probe.py: a fixed small network with a remembered floor on this machine) runs in the
  same rounds. What kept the probe above its floor (a neighbour, this process's memory layout) kept the
  workloads above theirs, so ``latency_ms`` is the raw figure scaled by probe floor / probe figure (by
  at most ``_MAX_CORRECTION``).
- Rounds go on until every workload is confirmed, or for ``max_seconds``. Confirmed: ``min_seconds`` of
  timing and ``_MIN_SAMPLES`` samples; a tight cluster at the bottom (the ``_SUPPORT``-th fastest call
  within ``_TIGHT`` of the fastest: the calls of a quiet moment, not a few lucky ones); no improvement over
  ``_DRIFT`` in the second half (a run still finding faster calls has not seen its quiet moment yet); and
  the probe within ``_PROBE_TOLERANCE`` of its floor (a run slowed throughout can look like a floor).
  A figure that is not confirmed is kept but flagged: ``latency_stable: false``.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import random
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from kdnas.artifacts import atomic_write_bytes
from kdnas.costs._probe import Probe
from kdnas.models import ArchSpec, build, digest

DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Part of every cache key: figures taken with another estimator must not be mixed with these.
ESTIMATOR = "5th-fastest-single-call/1"

_RANK = 5  # the 5th-fastest call: one or two mis-timed calls cannot set the figure
_MIN_SAMPLES = 20
_SUPPORT = 10  # the 10th-fastest call ...
_TIGHT = 0.03  # ... within 3 % of the fastest one
_DRIFT = 0.01  # the estimate moved less than 1 % over the second half of the measurement
# The probe's floor differs by 2-3 % between processes (memory layout), and its memory keeps the lowest one;
# a disturbed run is 15 % slower or more. 6 % tells them apart without waiting for a lucky layout.
_PROBE_TOLERANCE = 0.06
_MAX_CORRECTION = 0.25
# Copies of one model in one process differ by up to 2 % (where their tensors land in memory), and a copy can
# be unlucky by much more; the median of three copies is robust to one.
_INSTANCES = 3
_ROUND_S = 0.1  # one round of interleaving; short, so every workload sees the same conditions
_WARMUP_S = 0.05  # first calls allocate memory and choose kernels
_MIN_BLOCK_S = {"cpu": 2e-4, "cuda": 1e-3, "mps": 1e-3}  # timer (and synchronisation) overhead under 0.1 %


@dataclass(frozen=True)
class LatencySetting:
    """Where and how latency is measured (the study file's ``costs.latency`` section)."""

    device: str = "cpu"  # cpu, cuda, cuda:N, mps: the deployment target, not necessarily the training device
    batch_size: int = 1  # 1: the latency of answering one request
    threads: int = 1  # one thread: the steadiest CPU figure, and what most edge deployments run with
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # on CPUs without native half support, slower
    min_seconds: float = 0.3  # time each copy at least this long (3 copies and the probe share the time) ...
    max_seconds: float = 10.0  # ... and stop after this long, confirmed or not (a busy machine needs longer)

    def check(self, report) -> None:
        if not DEVICE.match(self.device):
            report("device", f"expected cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.batch_size < 1:
            report("batch_size", f"`batch_size >= 1` must hold, but got batch_size={self.batch_size}")
        if self.threads < 1:
            report("threads", f"`threads >= 1` must hold, but got threads={self.threads}")
        if not 0 < self.min_seconds <= self.max_seconds:
            report("min_seconds", f"`0 < min_seconds <= max_seconds` must hold, but got "
                                  f"min_seconds={self.min_seconds}, max_seconds={self.max_seconds}")

    def identity(self) -> dict:
        """What a latency figure depends on (the time budget only changes how sure we are of it)."""
        return {"device": self.device, "batch_size": self.batch_size, "threads": self.threads, "dtype": self.dtype}


@dataclass(frozen=True)
class Latency:
    """One measurement; the field names are the trial attributes and report columns (all times in ms per batch)."""

    latency_ms: float  # the floor estimate: latency_raw_ms scaled by the probe (see the module docstring)
    latency_raw_ms: float  # the 5th-fastest call
    latency_median_ms: float  # median call: what the machine gave while we measured, not reproducible
    latency_iqr_ms: float  # interquartile range of the calls
    latency_calls: int  # samples taken
    latency_seconds: float  # time spent measuring (wall-clock)
    latency_stable: bool  # the floor was confirmed before max_seconds
    latency_probe_ms: float | None  # the probe's 5th-fastest call in the same rounds (None: no probe)

    def to_dict(self) -> dict:
        return asdict(self)


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


class _Workload:
    """Samples of one callable, and the rule that says when its floor is confirmed."""

    def __init__(self, fn: Callable[[], object], clock: Callable[[], int], sync: Callable[[], None], min_block_s: float):
        self.fn, self.clock, self.sync = fn, clock, sync
        self.samples: list[float] = []  # ms per call
        self.history: list[tuple[float, float]] = []  # (seconds measured, estimate) after each round
        self.seconds = 0.0
        self.stable = False
        start = time.perf_counter()
        calls = 0
        while calls < 3 or time.perf_counter() - start < _WARMUP_S:
            self.block(1)
            calls += 1
        self.number = max(1, math.ceil(min_block_s / max(self.block(1), 1e-9)))

    def block(self, number: int) -> float:
        """Seconds per call over ``number`` calls."""
        fn, sync = self.fn, self.sync
        sync()
        t0 = self.clock()
        for _ in range(number):
            fn()
        sync()
        return (self.clock() - t0) / number / 1e9

    def run(self, seconds: float) -> None:
        start = time.perf_counter()
        while True:
            self.samples.append(self.block(self.number) * 1e3)
            if time.perf_counter() - start >= seconds:
                break
        self.seconds += time.perf_counter() - start
        self.history.append((self.seconds, self.estimate()))

    def estimate(self) -> float:
        return _kth_smallest(self.samples, _RANK)

    def confirm(self, min_seconds: float) -> bool:
        n = len(self.samples)
        if self.seconds < min_seconds or n < _MIN_SAMPLES:
            return False
        if _kth_smallest(self.samples, _SUPPORT) > (1 + _TIGHT) * min(self.samples):
            return False
        halfway = [e for s, e in self.history if s <= self.seconds / 2]
        return bool(halfway) and halfway[-1] <= (1 + _DRIFT) * self.estimate()

    def result(self, scale: float, probe_ms: float | None) -> Latency:
        q1, median, q3 = np.percentile(self.samples, [25, 50, 75])
        raw = self.estimate()
        return Latency(raw * scale, raw, float(median), float(q3 - q1), len(self.samples), self.seconds, self.stable,
                       probe_ms)


def _kth_smallest(values: list[float], k: int) -> float:
    k = min(k, len(values))
    return float(np.partition(values, k - 1)[k - 1])


def measure_calls(fns: Sequence[Callable[[], object]], setting: LatencySetting, probe: Probe | None = None) -> list[Latency]:
    """Latency of each callable (already on ``setting.device``), measured interleaved; see the module docstring.

    ``probe`` defaults to the machine's :class:`Probe`; it is used with the CPU clock only.
    """
    device = torch.device(setting.device)
    # CPU time excludes waiting for the core; it is per thread, so it is only right with one thread.
    cpu_time = device.type == "cpu" and setting.threads == 1
    clock = time.thread_time_ns if cpu_time else time.perf_counter_ns
    probe = (probe or Probe(ESTIMATOR)) if cpu_time else None
    threads = torch.get_num_threads()
    torch.set_num_threads(setting.threads)
    try:
        with torch.inference_mode():
            work = [_Workload(fn, clock, _synchronizer(device), _MIN_BLOCK_S[device.type]) for fn in fns]
            reference = _Workload(probe.workload(), clock, lambda: None, _MIN_BLOCK_S["cpu"]) if probe else None
            start = time.perf_counter()
            active = list(work)
            # A fixed order could lock in phase with a periodic neighbour and always hand one workload its
            # disturbed half; a seeded shuffle per round cannot.
            order = random.Random(0)
            while active:
                this_round = ([reference] if reference else []) + active
                order.shuffle(this_round)
                for w in this_round:
                    w.run(_ROUND_S / len(this_round))
                quiet = reference is None or probe.quiet(reference.estimate(), _PROBE_TOLERANCE)
                for w in active:
                    w.stable = quiet and w.confirm(setting.min_seconds)
                active = [w for w in active if not w.stable]
                if time.perf_counter() - start >= setting.max_seconds:
                    break
    finally:
        torch.set_num_threads(threads)
    if reference is None:
        return [w.result(1.0, None) for w in work]
    probe_ms = reference.estimate()
    if len(reference.samples) >= _MIN_SAMPLES:
        probe.remember(probe_ms)
    # What slowed the probe (a neighbour, this process's memory layout) slowed the workloads timed in the same
    # rounds: scale them by how far the probe stayed above its floor. Longer calls find fewer quiet moments
    # than the probe's 0.45 ms ones, so this under-corrects them rather than over-corrects; the bound only
    # guards against a probe that met something the workloads did not.
    scale = 1.0 if probe.floor is None else max(probe.floor / probe_ms, 1 / (1 + _MAX_CORRECTION))
    return [w.result(scale, probe_ms) for w in work]


def measure_latency(model: nn.Module, input_shape: tuple[int, int, int], setting: LatencySetting) -> Latency:
    """Latency of ``model`` on a batch of ``setting.batch_size`` inputs; moves the model to the setting.

    Times ``_INSTANCES`` copies of the model interleaved and reports the one with the median floor, with the
    samples and seconds of all copies and ``latency_stable`` only when all of them were confirmed.
    """
    device = torch.device(setting.device)
    dtype = DTYPES[setting.dtype]
    model = model.to(device=device, dtype=dtype).eval()
    fns = []
    for i in range(_INSTANCES):
        # A generator of its own: measuring must not move the global random state a trial trains with.
        x = torch.randn(setting.batch_size, *input_shape, generator=torch.Generator().manual_seed(i))
        fns.append(functools.partial(copy.deepcopy(model), x.to(device=device, dtype=dtype)))
    start = time.perf_counter()
    each = sorted(measure_calls(fns, setting), key=lambda r: r.latency_ms)
    return replace(each[len(each) // 2], latency_calls=sum(r.latency_calls for r in each),
                   latency_seconds=time.perf_counter() - start, latency_stable=all(r.latency_stable for r in each))


class LatencyCache:
    """Latencies keyed by (spec, input shape, classes, device, batch size, threads, dtype), in one JSON file.

    The same architecture is never timed twice in a study, by this process or by another worker that shares
    the run folder; the file is rewritten atomically.
    """

    def __init__(self, path: Path):
        self.path = path
        self._data: dict[str, dict] = {}
        self._reload()

    def _reload(self) -> None:
        try:
            self._data.update(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            pass  # missing or damaged: a damaged cache only costs re-measuring

    @staticmethod
    def key(spec: ArchSpec, input_shape, num_classes: int, setting: LatencySetting) -> str:
        return digest([ESTIMATOR, spec.to_dict(), list(input_shape), num_classes, setting.identity()])

    def get_or_measure(self, spec: ArchSpec, input_shape, num_classes: int, setting: LatencySetting) -> dict:
        """The cached figures of ``spec`` at ``setting`` (a :class:`Latency` as a dict), measured if missing."""
        key = self.key(spec, input_shape, num_classes, setting)
        if key not in self._data:
            self._reload()  # another worker may have measured it meanwhile
        if key not in self._data:
            # fork_rng: building draws random weights, and measuring must not change what a trial trains after it.
            with torch.random.fork_rng(devices=[]):
                model = build(spec, input_shape, num_classes)
            self._data[key] = measure_latency(model, input_shape, setting).to_dict()
            atomic_write_bytes(self.path, json.dumps(self._data, indent=1).encode())
        return self._data[key]
