"""Batch sources: one part of a split (train, val or test) as batches on the training device.

Two implementations of one contract. :class:`TensorSource` holds the part in memory as normalised tensors on
the device: a batch is one index operation, with no DataLoader, worker or host-to-device copy per step.
:class:`LoaderSource` streams a part too large for that through a DataLoader with worker processes and
pinned memory, and normalises each batch on the device. Both normalise with the same function, so the same
indices give the same inputs, bit for bit, whichever path a dataset takes.
"""

from __future__ import annotations

import multiprocessing
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from kdnas.data._sources import Images


def normalise(raw: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Float inputs from raw samples: uint8 pixels are scaled to [0, 1] first; then ``(x - mean) / std``."""
    x = raw.float()
    if raw.dtype == torch.uint8:
        x = x / 255.0
    return (x - mean) / std


class BatchSource(ABC):
    """The samples of one part of a split, as batches of normalised inputs on ``device``.

    ``batches(batch_size, order)`` yields ``(x, idx)`` for consecutive slices of ``order`` (a permutation
    of ``range(len(self))``; ``None`` means index order): ``idx`` is the slice, on ``device``, and ``x[i]``
    is sample ``idx[i]``, float32, normalised with the training split's statistics. ``fit`` calls it once per
    epoch with a fresh permutation, ``predict`` once with ``None``. Labels are always in memory: ``y[idx]``.
    """

    def __init__(self, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor):
        self.y = y
        self.mean = mean.to(y.device)
        self.std = std.to(y.device)

    @property
    def device(self) -> torch.device:
        return self.y.device

    @property
    def fill(self) -> torch.Tensor:
        """The normalised value of a black pixel, per channel (1, C, 1, 1): what a padded crop shows."""
        return -self.mean / self.std

    def __len__(self) -> int:
        return len(self.y)

    @abstractmethod
    def batches(self, batch_size: int, order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def _no_stats(channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(1, channels, 1, 1), torch.ones(1, channels, 1, 1)


class TensorSource(BatchSource):
    """A part held in memory: ``x`` holds the normalised inputs, on the training device."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        if len(x) != len(y):
            raise ValueError(f"x and y must have the same length, but got {len(x)} and {len(y)}")
        y = y.to(x.device)
        if mean is None or std is None:  # already normalised inputs: a black pixel is 0
            mean, std = _no_stats(x.shape[1])
        super().__init__(y, mean, std)
        self.x = x

    def batches(self, batch_size: int, order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if order is None:
            for i in range(0, n, batch_size):  # slices of a contiguous tensor: no copy at all
                yield self.x[i : i + batch_size], torch.arange(i, min(i + batch_size, n), device=self.device)
            return
        order = order.to(self.device)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield self.x[idx], idx


class _Plan:
    """A batch sampler whose batches are set before each pass, so one DataLoader (and its persistent
    workers) serves every epoch, every batch size and every trial of a process."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class _Rows(torch.utils.data.Dataset):
    """The samples ``indices`` of ``images``, fetched a batch at a time (``__getitems__``)."""

    def __init__(self, images: "Images", indices: np.ndarray):
        self.images = images
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, idx = self.__getitems__([i])
        return x[0], idx[0]

    def __getitems__(self, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        return torch.from_numpy(self.images.read(self.indices[rows])), torch.from_numpy(rows)


def _worker_context(device: torch.device):
    """How the DataLoader's workers start: on Linux, from a fork server when this process drives a GPU; else
    the platform's default (fork on Linux, spawn on macOS and Windows).

    Forking a process that has started CUDA, and with it threads of its own, can leave the child holding a
    lock no thread will release (Python 3.12 warns of it: "This process is multi-threaded, use of fork() may
    lead to deadlocks"). A fork server is a fresh single-threaded process that has imported torch and
    kdnas's data code (preloaded), and forks the workers; they receive the dataset pickled.
    """
    if device.type != "cuda" or "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "kdnas.data"])
    return context


def _as_is(batch):
    return batch  # __getitems__ already returns the stacked batch


class LoaderSource(BatchSource):
    """A part streamed from ``images`` (samples ``indices``) by a DataLoader with ``workers`` processes.

    Raw samples (uint8 pixels, 4x smaller than floats) travel to the device in pinned memory when it is a
    GPU, and are normalised there.
    """

    def __init__(self, images: "Images", indices: np.ndarray, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                 workers: int):
        super().__init__(y, mean, std)
        self._plan = _Plan()
        self._loader = torch.utils.data.DataLoader(
            _Rows(images, indices), batch_sampler=self._plan, collate_fn=_as_is, num_workers=workers,
            pin_memory=self.device.type == "cuda", persistent_workers=workers > 0,
            multiprocessing_context=_worker_context(self.device) if workers > 0 else None,
        )

    def batches(self, batch_size: int, order: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = torch.arange(len(self.y)) if order is None else order.cpu()
        self._plan.batches = [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
        for raw, idx in self._loader:
            x = normalise(raw.to(self.device, non_blocking=True), self.mean, self.std)
            yield x, idx.to(self.device, non_blocking=True)
