"""Latency of a network: measured (kdnas/costs/_timing.py has how and why) and cached per architecture."""

from __future__ import annotations

import copy
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from kdnas.core import atomic_write_bytes, file_lock
from kdnas.costs._background import LatencyService, ServiceError
from kdnas.costs._setting import DTYPES, Latency, LatencySetting
from kdnas.costs._timing import ESTIMATOR, Chain, measure_calls
from kdnas.models import ArchSpec, build, digest

log = logging.getLogger(__name__)

_COPIES = 3  # copies of one model in one process differ by up to 2 % (where their tensors land in memory)


def measure_latency(model: nn.Module, input_shape: tuple[int, int, int], setting: LatencySetting,
                    more: Callable[[], bool] | None = None, hold: Callable[[], bool] | None = None) -> Latency:
    """Latency of ``model`` on a batch of ``setting.batch_size`` inputs; moves the model to the setting.

    The passes rotate over ``_COPIES`` copies of the model, each with its own input, and their samples are
    pooled: where a copy's tensors landed in memory changes its speed by a few percent, and the floor of the
    pool is the best of them, which varies less between processes than any one copy's. ``more``, ``hold``: see
    :func:`~kdnas.costs._timing.measure_calls`.
    """
    device = torch.device(setting.device)
    dtype = DTYPES[setting.dtype]
    model = model.to(device=device, dtype=dtype).eval()
    chains = []
    for i in range(_COPIES):
        # A generator of its own: measuring must not move the global random state a trial trains with.
        x = torch.randn(setting.batch_size, *input_shape, generator=torch.Generator().manual_seed(i))
        chains.append(Chain.of(copy.deepcopy(model), x.to(device=device, dtype=dtype)))
    start = time.perf_counter()
    (result,) = measure_calls([chains], setting, more=more, hold=hold)
    return replace(result, latency_seconds=time.perf_counter() - start)


class LatencyCache:
    """Latencies keyed by (spec, input shape, classes, device, batch size, threads, dtype), in one JSON file.

    The same architecture is never timed twice in a study, by this process or by another worker that shares
    the run folder; the file is rewritten atomically. With a ``service``, figures are measured in its child
    process: from the request on (beside the caller's work), or with ``after`` only once the caller asks for
    the figure and waits (when the caller's own work would disturb the measurement).
    """

    def __init__(self, path: Path, service: LatencyService | None = None, after: bool = False):
        self.path = path
        self.service = service
        self.after = after
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
        return self.request(spec, input_shape, num_classes, setting)()

    def request(self, spec: ArchSpec, input_shape, num_classes: int, setting: LatencySetting) -> "Pending":
        """What :meth:`get_or_measure` returns, as a :class:`Pending`: with a ``service``, a missing figure is
        measured in its child process (from now on while the caller goes on, or with ``after`` when first
        called) and calling waits for it; without, it is measured in this process when first called.
        Nothing is written before the call."""
        key = self.key(spec, input_shape, num_classes, setting)
        if key not in self._data:
            self._reload()  # another worker may have measured it meanwhile
        if key in self._data:
            figures = self._data[key]
            return Pending(lambda _: figures, costs_a_measurement=False)
        args = (spec, input_shape, num_classes, setting)
        if self.service is not None and self.after:
            return Pending(lambda submitted: self._from_child(key, submitted, *args), costs_a_measurement=True,
                           start=lambda: self._start(key, *args), threads=setting.threads)
        if self.service is not None:
            submitted = self._submit(*args)  # beside the caller's work from now on
            if submitted is not None:
                return Pending(lambda _: self._from_child(key, submitted, *args), costs_a_measurement=False)
        return Pending(lambda _: self._store(key, self._measure(*args)), costs_a_measurement=True)

    def _submit(self, *args, hold: bool = False) -> Callable[[], dict] | None:
        try:
            return self.service.submit(*args, hold=hold)
        except ServiceError as err:
            self._give_up_service(err)
            return None

    def _start(self, key: str, *args) -> Callable[[], dict] | None:
        """``after`` mode, once the caller's training is over: submit ``key`` to the child now, unless another
        worker has measured it meanwhile or the child is gone (then None)."""
        self._reload()  # another worker may have measured it while this one trained
        if key in self._data or self.service is None:
            return None
        return self._submit(*args, hold=True)  # the caller's evaluation beside it may slow every sample

    def _from_child(self, key: str, submitted: Callable[[], dict] | None, *args) -> dict:
        """The child's figure for ``key``, ``submitted`` earlier; otherwise from the cache (``_start`` has just
        re-read it) or measured in this process (the child is gone)."""
        if submitted is None and key in self._data:
            return self._data[key]
        try:
            measured = submitted() if submitted is not None else self._measure(*args)
        except ServiceError as err:
            self._give_up_service(err)
            measured = self._measure(*args)
        return self._store(key, measured)

    def _give_up_service(self, err: ServiceError) -> None:
        log.warning("%s; measuring latency in this process from now on", err)
        self.close()

    @staticmethod
    def _measure(spec: ArchSpec, input_shape, num_classes: int, setting: LatencySetting) -> dict:
        # fork_rng: building draws random weights, and measuring must not change what a trial trains after it.
        with torch.random.fork_rng(devices=[]):
            model = build(spec, input_shape, num_classes)
        return measure_latency(model, input_shape, setting).to_dict()

    def _store(self, key: str, measured: dict) -> dict:
        if key not in self._data:
            # Read-merge-write under a lock: concurrent workers each add their entries, none is lost.
            with file_lock(self.path.with_name(self.path.name + ".lock")):
                self._reload()
                self._data.setdefault(key, measured)
                atomic_write_bytes(self.path, json.dumps(self._data, indent=1).encode())
        return self._data[key]

    def close(self) -> None:
        """End the background process, if any (a measurement in hand is abandoned)."""
        if self.service is not None:
            self.service.close()
            self.service = None


class Pending:
    """A latency figure on its way: calling it returns the figures (a :class:`Latency` as a dict), obtained at
    the first call and remembered.

    In ``after`` mode nothing is measured before the caller's training is over: :meth:`meanwhile` has the
    child start measuring while the caller does lighter work on the cores the child leaves it; a call
    without it submits the figure and waits."""

    def __init__(self, fn: Callable[[Callable[[], dict] | None], dict], costs_a_measurement: bool,
                 start: Callable[[], Callable[[], dict] | None] | None = None, threads: int = 1):
        self._fn = fn
        self._costs = costs_a_measurement
        self._start = start  # after mode: submit to the child now (None when cached or the child is gone)
        self._threads = threads  # the cores the child measures on
        self._submitted: Callable[[], dict] | None = None
        self._result: dict | None = None

    @property
    def costs_a_measurement(self) -> bool:
        """Whether obtaining the figure would cost the caller a measurement's time: not cached, not measured
        beside the caller's work, not obtained before (measured in this process, or in the child process
        after the caller's training)."""
        return self._costs and self._result is None

    def _begin(self) -> bool:
        """Submit to the child now if this figure waits for the caller's training to end; whether it did."""
        if self._start is None or self._result is not None:
            return False
        start, self._start = self._start, None
        self._submitted = start()
        return self._submitted is not None

    @contextmanager
    def meanwhile(self) -> Iterator[None]:
        """``after`` mode, once the caller's training is over: the child measures from now on, and within the
        block this process's torch threads leave it the cores it measures on (one thread at least). Nothing
        changes in other modes, or when the figure is already known."""
        threads = torch.get_num_threads()
        if self._begin():
            torch.set_num_threads(max(1, threads - self._threads))
        try:
            yield
        finally:
            torch.set_num_threads(threads)

    def __call__(self) -> dict:
        if self._result is None:
            self._begin()
            self._result = self._fn(self._submitted)
        return self._result
