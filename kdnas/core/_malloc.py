"""glibc's malloc, set for training loops: the memory one step frees is reused by the next, not faulted in again.

By default, every training step on the CPU hands its activations back to the kernel and takes them again.
glibc serves a chunk above ``M_MMAP_THRESHOLD`` (128 KB at first, raised as such chunks are freed, up to
32 MB) as a fresh mapping, and returns the top of the heap to the kernel once more than ``M_TRIM_THRESHOLD``
of it is free (twice the mmap threshold); either way the next step touches new pages, which the kernel must
fault in and zero. A batch of 128 MNIST images through a small ResNet is about 8,000 page faults per step,
through a MobileNetV2 about 39,000 (150 MB zeroed per step); 10-15 % of the training process's CPU time went
to the kernel (docs/performance.md has what it changed, for training and for a study).

:func:`tune` sets ``M_MMAP_THRESHOLD`` to 32 MB (the most glibc's own rule would reach) and
``M_TRIM_THRESHOLD`` to 1 GB: the pages freed by one step stay in the process for the next. Setting either
turns off glibc's dynamic adjustment of both, so they are always set together. What it costs: a process
keeps up to its peak heap rather than returning it between steps; a training process reaches that peak
again at its next step anyway.

Left as it is: on anything but glibc (macOS, musl), with another allocator preloaded (jemalloc, tcmalloc:
glibc's settings then have no effect), when the user set glibc's own variables (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``), or with ``KDNAS_MALLOC=default``.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

_done: bool | None = None


def tune() -> bool:
    """Set glibc's thresholds for this process (once; later calls return the first answer). True if set."""
    global _done
    if _done is None:
        _done = _tune()
    return _done


def glibc() -> ctypes.CDLL | None:
    """This process's C library if it is glibc (musl has ``mallopt`` too, with other meanings), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version
        return libc
    except (OSError, AttributeError):
        return None


def _tune() -> bool:
    if os.environ.get("KDNAS_MALLOC", "").strip().lower() == "default" or any(v in os.environ for v in _USER_SETTINGS):
        return False
    libc = glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
