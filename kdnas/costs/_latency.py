"""Latency of a network: measured (kdnas/costs/_timing.py has how and why) and cached per architecture."""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from kdnas.artifacts import atomic_write_bytes, file_lock
from kdnas.costs._background import LatencyService, ServiceError
from kdnas.costs._setting import DTYPES, Latency, LatencySetting
from kdnas.costs._timing import ESTIMATOR, Chain, measure_calls
from kdnas.models import ArchSpec, build, digest

log = logging.getLogger(__name__)

_COPIES = 3  # copies of one model in one process differ by up to 2 % (where their tensors land in memory)


def measure_latency(model: nn.Module, input_shape: tuple[int, int, int], setting: LatencySetting,
                    more: Callable[[], bool] | None = None) -> Latency:
    """Latency of ``model`` on a batch of ``setting.batch_size`` inputs; moves the model to the setting.

    The passes rotate over ``_COPIES`` copies of the model, each with its own input, and their samples are
    pooled: where a copy's tensors landed in memory changes its speed by a few percent, and the floor of the
    pool is the best of them, which varies less between processes than any one copy's. ``more``: see
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
    (result,) = measure_calls([chains], setting, more=more)
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
            return Pending(lambda: figures, costs_a_measurement=False)
        args = (spec, input_shape, num_classes, setting)
        if self.service is not None:
            submitted = None if self.after else self._submit(*args)  # beside the caller's work from now on
            if self.after or submitted is not None:
                return Pending(lambda: self._from_child(key, submitted, *args), costs_a_measurement=self.after)
        return Pending(lambda: self._store(key, self._measure(*args)), costs_a_measurement=True)

    def _submit(self, *args) -> Callable[[], dict] | None:
        try:
            return self.service.submit(*args)
        except ServiceError as err:
            self._give_up_service(err)
            return None

    def _from_child(self, key: str, submitted: Callable[[], dict] | None, *args) -> dict:
        """The child's figure for ``key``: ``submitted`` earlier, or (after the caller's work) submitted now; in
        this process when the child is gone."""
        if submitted is None:
            self._reload()  # another worker may have measured it while this one trained
            if key in self._data:
                return self._data[key]
            submitted = self._submit(*args) if self.service is not None else None
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
    the first call and remembered."""

    def __init__(self, fn: Callable[[], dict], costs_a_measurement: bool):
        self._fn = fn
        self._costs = costs_a_measurement
        self._result: dict | None = None

    @property
    def costs_a_measurement(self) -> bool:
        """Whether the next call would cost the caller a whole measurement's time: not cached, not measured
        beside the caller's work, not called before (measured now, in this process or in the child process
        while the caller waits)."""
        return self._costs and self._result is None

    def __call__(self) -> dict:
        if self._result is None:
            self._result = self._fn()
        return self._result
