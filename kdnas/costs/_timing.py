"""The timing engine: floor estimates that two processes on a busy machine reproduce.

What a figure means: the time of one forward pass (one batch, inference mode) on an otherwise quiet core.
On a shared machine most calls are slowed by whatever runs beside them (on a 2-core VM the median of one
model varied by 60-140 % between processes), but a neighbour only ever adds time, so the fast end of the
distribution is what stays put. docs/costs.md has the measurements behind each choice below, and
benchmarks/latency_stability.py repeats them.

- On CPU a pass is timed step by step (a :class:`Chain`: a network's stem, blocks and head, whose
  composition is its forward pass), and the floor of each step is taken separately: a quiet moment then has
  to last one step (tens of microseconds), not the whole pass, and long passes are measured as well as short
  ones. The clock is the wall clock (``perf_counter_ns``, 50 ns a read; the thread's CPU time costs a system
  call, 1 µs here), and its own cost per step, calibrated at the start, is subtracted; a step during which
  the scheduler ran another process is one slow sample, which the floor ignores. On CUDA and MPS a pass is
  timed whole, synchronised, in blocks long enough to hide the synchronisation.
- The floor of a step is its 5th-fastest sample: a fixed rank, not a percentile, because under heavy load
  fewer than 1 % of the samples run undisturbed and a percentile then lands among the disturbed ones.
- All workloads are timed in rounds of 0.1 s (0.05 s once a hold is released) that interleave them in a
  shuffled order, so that they all see the same conditions, together with a probe (kdnas/costs/_probe.py: a
  fixed small network whose usual floor on this machine is remembered). What made the probe slower or faster
  than usual (a neighbour, this process's memory layout) did the same to the workloads: ``latency_ms`` is the
  raw figure scaled by usual / observed probe floor (by at most ``_MAX_CORRECTION`` either way).
- Rounds go on until every workload is confirmed, or for ``max_seconds``. Confirmed: ``min_seconds`` of
  timing and ``_MIN_SAMPLES`` samples; a tight cluster at the bottom (the ``_SUPPORT``-th fastest samples
  within ``_TIGHT`` of the fastest: the samples of quiet moments, not a few lucky ones); no improvement over
  ``_DRIFT`` in the second half (a run still finding faster samples has not seen its quiet moments yet);
  and the probe within ``_PROBE_TOLERANCE`` of its usual floor (a run slowed throughout can look like a floor).
  A figure that is not confirmed is kept but flagged: ``latency_stable: false``.
"""

from __future__ import annotations

import functools
import itertools
import math
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from kdnas.costs._probe import Probe
from kdnas.costs._setting import Latency, LatencySetting

# Part of every cache key: figures taken with another estimator must not be mixed with these.
ESTIMATOR = "stepwise-5th-fastest/4"

_RANK = 5  # the 5th-fastest sample: one or two mis-timed samples cannot set the figure
_MIN_SAMPLES = 20
_SUPPORT = 10  # the 10th-fastest samples ...
_TIGHT = 0.03  # ... within 3 % of the fastest ones
_DRIFT = 0.01  # the estimate moved less than 1 % over the second half of the measurement
# The probe's floor differs by 2-4 % between processes (memory layout); a disturbed run is 15 % slower or
# more. 6 % over its usual floor tells them apart.
_PROBE_TOLERANCE = 0.06
_MAX_CORRECTION = 0.25  # guards against a probe that met a disturbance the workloads did not
_ROUND_S = 0.1  # one round of interleaving; short, so every workload sees the same conditions
_WARMUP_S = 0.05  # first calls allocate memory and choose kernels
_MIN_BLOCK_S = {"cuda": 1e-3, "mps": 1e-3}  # whole-pass blocks: synchronisation overhead under 1 %
_EXTENSION = 10  # a measurement that nobody waits for goes on for at most this many times max_seconds
# After a hold, each workload's own time since the release: this share of min_seconds at least, and min_seconds
# in all. The workload is warm by then and its held samples count (slowed, they only add to the slow end of each
# step), so the quiet samples after the release have only to reach the bottom of each step (0.075 s of a 0.3-s
# min_seconds: two rounds). Side by side in a study's `after` place, a quarter waited 0.48 s per measurement
# against 0.75 s for the whole, with the same error against `kdnas profile` (median 0.9 % against 1.1 %,
# largest 4.4 % against 10.1 %; docs/costs.md).
_RELEASED = 0.25
# After the release, rounds of 0.05 s, the probe taking a quarter of each and the workloads the rest (not 0.1 s
# and an equal share): the quiet samples reach the bottom of each workload's steps in fewer seconds, and the
# measurement ends within 0.05 s of confirming. The probe, a 0.2-ms network, still gets some 60 samples a round.
# Side by side in a study's `after` place (six mnist5k students, two runs of three rounds, 36 measurements
# each): 0.35 s waited per measurement against 0.53 s, median error against `kdnas profile` 2.4 % against
# 2.3 %, 33 against 32 confirmed (docs/costs.md).
_RELEASED_ROUND_S = 0.05
_RELEASED_PROBE_SHARE = 0.25


@dataclass(frozen=True)
class Chain:
    """One pass: ``y = step(y)`` for each step, from ``x``; on CPU each step is timed on its own."""

    steps: Sequence[Callable[[Any], Any]]
    x: Any

    @staticmethod
    def call(fn: Callable[[], object]) -> "Chain":
        """A plain callable as a one-step chain."""
        return Chain([lambda _: fn()], None)

    @staticmethod
    def of(model: nn.Module, x: torch.Tensor) -> "Chain":
        """A network's pass as steps: its ``chain()`` (stem, stages, head) if it has one, with every
        ``nn.Sequential`` opened into its children, whose composition is the Sequential's forward."""
        steps: list[nn.Module] = []
        pending = list(model.chain()) if callable(getattr(model, "chain", None)) else [model]
        while pending:
            m = pending.pop(0)
            if type(m) is nn.Sequential:  # exactly Sequential: a subclass may have its own forward
                pending[:0] = list(m)
            else:
                steps.append(m)
        return Chain(steps, x)


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


class _Workload:
    """Samples (ms per step) of one workload, rotating over its chains, and the rule that confirms its floor."""

    def __init__(self, chains: Sequence[Chain], clock: Callable[[], int], device: torch.device, overhead_ms: float,
                 min_seconds: float = 0.0, warmup_s: float = _WARMUP_S):
        self.rotation = itertools.cycle(chains)
        self.clock, self.sync = clock, _synchronizer(device)
        self.stepwise = device.type == "cpu"
        self.steps = len(chains[0].steps) if self.stepwise else 1
        self.overhead_ms = overhead_ms  # the clock's cost per timed step
        self.samples: list[list[float]] = []  # one row per pass (per block off the CPU), one column per step
        self.history: list[tuple[float, float]] = []  # (seconds measured, estimate) after each round
        self.seconds = 0.0
        self.since = 0.0  # confirming counts the time from here (moved by restart) ...
        self.min_seconds = min_seconds  # ... and needs this long at least
        self.stable = False
        self.number = 1
        start = time.perf_counter()
        # Three passes at least, unless one pass outlasts the whole warm-up: a large network (a second a pass)
        # has allocated its memory after one, and two more would push the measurement past max_seconds.
        while len(self.samples) < 3 or time.perf_counter() - start < warmup_s:
            self.samples.append(self.sample())
            if time.perf_counter() - start > 2 * max(warmup_s, _WARMUP_S):
                break
        if not self.stepwise:
            self.number = max(1, math.ceil(_MIN_BLOCK_S[device.type] / max(sum(self.samples[-1]) / 1e3, 1e-9)))
        self.samples = []

    def sample(self) -> list[float]:
        clock = self.clock
        if self.stepwise:
            chain = next(self.rotation)
            out, y, t = [], chain.x, clock()
            for step in chain.steps:
                y = step(y)
                now = clock()
                out.append((now - t) / 1e6)
                t = now
            return out
        self.sync()
        t0 = clock()
        for _ in range(self.number):
            chain = next(self.rotation)
            y = chain.x
            for step in chain.steps:
                y = step(y)
        self.sync()
        return [(clock() - t0) / self.number / 1e6]

    def run(self, seconds: float) -> None:
        start = time.perf_counter()
        while True:
            self.samples.append(self.sample())
            if time.perf_counter() - start >= seconds:
                break
        self.seconds += time.perf_counter() - start
        self.history.append((self.confirming_seconds, self.estimate()))

    def restart(self, min_seconds: float) -> None:
        """Confirm from now on as if starting (time and drift history), after ``min_seconds`` at least, keeping
        the samples so far."""
        self.since, self.history, self.min_seconds = self.seconds, [], min_seconds

    @property
    def confirming_seconds(self) -> float:
        """Seconds timed since the start, or since :meth:`restart`."""
        return self.seconds - self.since

    def _sum_of_ranks(self, k: int) -> float:
        columns = np.asarray(self.samples).T
        return float(sum(_kth_smallest(c, k) for c in columns)) - self.steps * self.overhead_ms

    def estimate(self) -> float:
        return self._sum_of_ranks(_RANK)

    @property
    def timed(self) -> bool:
        """Whether it has been timed ``min_seconds`` since the start or since :meth:`restart`."""
        return self.confirming_seconds >= self.min_seconds

    def confirm(self) -> bool:
        seconds = self.confirming_seconds
        if not self.timed or len(self.samples) < _MIN_SAMPLES:
            return False
        if self._sum_of_ranks(_SUPPORT) > (1 + _TIGHT) * self._sum_of_ranks(1):
            return False
        halfway = [e for s, e in self.history if s <= seconds / 2]
        return bool(halfway) and halfway[-1] <= (1 + _DRIFT) * self.estimate()

    def result(self, scale: float, probe_ms: float | None) -> Latency:
        totals = np.asarray(self.samples).sum(axis=1) - self.steps * self.overhead_ms
        q1, median, q3 = np.percentile(totals, [25, 50, 75])
        raw = self.estimate()
        return Latency(raw * scale, raw, float(median), float(q3 - q1), len(self.samples), self.seconds, self.stable,
                       probe_ms)


def _kth_smallest(values: np.ndarray, k: int) -> float:
    k = min(k, len(values))
    return float(np.partition(values, k - 1)[k - 1])


@functools.cache
def _clock_overhead_ms(clock: Callable[[], int]) -> float:
    """The floor of timing a step that does nothing: what every timed step costs besides its own work. Once per
    process (0.1 µs a step here, against 50-100 µs for the steps of a network): it took 0.09 s of every
    measurement, of the 0.19-0.27 s before a held measurement's first round."""
    w = _Workload([Chain([lambda y: y] * 8, None)], clock, torch.device("cpu"), 0.0)
    w.run(0.02)
    return w.estimate() / 8


def measure_calls(workloads: Sequence[Sequence[Chain]], setting: LatencySetting, probe: Probe | None = None,
                  more: Callable[[], bool] | None = None, hold: Callable[[], bool] | None = None) -> list[Latency]:
    """Latency of each workload (its chains already on ``setting.device``; a workload's passes rotate over
    its chains), all measured interleaved; see the module docstring. ``probe`` defaults to the machine's
    :class:`Probe`; it is used on CPU only. ``more``: past ``max_seconds``, go on while it says so (up to
    ``_EXTENSION`` times ``max_seconds``): a measurement beside other work, which nobody waits for yet.
    ``hold``: while it says so, other work runs beside that may slow every sample, so nothing is confirmed
    and nothing ends (up to ``_EXTENSION`` times ``max_seconds``); once it no longer does, confirming starts
    afresh (the drift rule) on the samples so far and those to come, and the measurement ends at
    ``max_seconds``, but not before each workload has had ``_RELEASED`` times ``min_seconds`` since the
    release and ``min_seconds`` in all, in rounds of ``_RELEASED_ROUND_S`` of which the probe takes
    ``_RELEASED_PROBE_SHARE``. The slowed samples only add to the slow end of each step's samples, which the
    floor ignores."""
    device = torch.device(setting.device)
    clock = time.perf_counter_ns
    probe = (probe or Probe(ESTIMATOR)) if device.type == "cpu" else None
    threads = torch.get_num_threads()
    torch.set_num_threads(setting.threads)
    try:
        with torch.inference_mode():
            overhead = _clock_overhead_ms(clock) if device.type == "cpu" else 0.0
            # While held, slow first calls are as harmless as the held samples (the slow end): warm up no longer
            # than three passes, and time from then on.
            warmup = 0.0 if hold is not None else _WARMUP_S
            work = [_Workload(chains, clock, device, overhead, setting.min_seconds, warmup) for chains in workloads]
            reference = (_Workload([Chain.of(*probe.workload())], clock, device, overhead, warmup_s=warmup)
                         if probe else None)
            start = time.perf_counter()
            active = list(work)
            # A fixed order could lock in phase with a periodic neighbour and always hand one workload its
            # disturbed half; a seeded shuffle per round cannot.
            order = random.Random(0)
            held = hold is not None
            round_s, probe_share = _ROUND_S, None  # None: the probe's share is everyone's, 1 / len(this_round)
            while active:
                this_round = ([reference] if reference else []) + active
                order.shuffle(this_round)
                released = False
                for w in this_round:
                    if probe_share is None:
                        share = 1 / len(this_round)
                    else:
                        share = probe_share if w is reference else (1 - probe_share) / len(active)
                    w.run(round_s * share)
                    if held and not hold():
                        released = True
                        break  # confirming starts now, not at the end of the round
                elapsed = time.perf_counter() - start
                if held:
                    if not released and elapsed < _EXTENSION * setting.max_seconds:
                        continue
                    held = False
                    for w in work:
                        w.restart(max(setting.min_seconds - w.seconds, _RELEASED * setting.min_seconds))
                    round_s = _RELEASED_ROUND_S
                    probe_share = _RELEASED_PROBE_SHARE if reference is not None else None
                    continue
                quiet = reference is None or probe.quiet(reference.estimate(), _PROBE_TOLERANCE)
                for w in active:
                    w.stable = quiet and w.confirm()
                active = [w for w in active if not w.stable]
                # After a hold, each workload's own time since the release counts (_RELEASED).
                timed = hold is None or all(w.timed for w in work)
                if elapsed >= setting.max_seconds and timed and (more is None or not more()
                                                                 or elapsed >= _EXTENSION * setting.max_seconds):
                    break
    finally:
        torch.set_num_threads(threads)
    if reference is None:
        return [w.result(1.0, None) for w in work]
    probe_ms = reference.estimate()
    if len(reference.samples) >= _MIN_SAMPLES:
        probe.remember(probe_ms)
    # What made the probe slower or faster than usual (a neighbour, this process's memory layout) did the same
    # to the workloads timed in the same rounds: scale them by usual / observed probe floor.
    scale = 1.0 if probe.floor is None else float(np.clip(probe.floor / probe_ms, 1 / (1 + _MAX_CORRECTION),
                                                           1 + _MAX_CORRECTION))
    return [w.result(scale, probe_ms) for w in work]
