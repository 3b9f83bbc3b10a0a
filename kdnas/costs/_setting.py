"""What a latency figure depends on (``LatencySetting``) and what one measurement records (``Latency``)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal, Union

import torch

from kdnas.core import KdnasError

DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``name`` as a device, or a one-line error when this machine does not have it."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KdnasError(f"device {name!r} was asked for, but CUDA is not available on this machine")
    if name == "mps" and not torch.backends.mps.is_available():
        raise KdnasError("device 'mps' was asked for, but MPS is not available on this machine")
    return torch.device(name)


@dataclass(frozen=True)
class LatencySetting:
    """Where and how latency is measured (the study file's ``costs.latency`` section)."""

    device: str = "cpu"  # cpu, cuda, cuda:N, mps: the deployment target, not necessarily the training device
    batch_size: int = 1  # 1: the latency of answering one request
    threads: int = 1  # one thread: the steadiest CPU figure, and what most edge deployments run with
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # on CPUs without native half support, slower
    min_seconds: float = 0.3  # time each architecture at least this long (the probe takes as long again) ...
    # ... and stop after this long, confirmed or not. In a study 2 s: measured right after a training, 2 s
    # came as close to `kdnas profile`'s 10-s figure as 3 s did (docs/performance.md: median error
    # 2.6 % against 3.2 %, 29 of 30 within 10 % against 26), at 0.3 s less per measurement, and up to 1.3 s
    # less when the machine is busy; `kdnas profile`, the figure to ship, takes 10 s by default.
    max_seconds: float = 2.0
    # In a study: measure in a child process (kdnas/costs/_background.py): true, beside the training; auto: beside
    # it when a core is spare, else after it, while the study evaluates the student (a CPU latency; a GPU's is
    # measured in the study's process); false: in the study's process.
    background: Union[bool, Literal["auto"]] = "auto"

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

    latency_ms: float  # the floor estimate: latency_raw_ms scaled by the probe (kdnas/costs/_timing.py)
    latency_raw_ms: float  # the sum of each step's 5th-fastest sample (the 5th-fastest pass off the CPU)
    latency_median_ms: float  # median pass: what the machine gave while we measured, not reproducible
    latency_iqr_ms: float  # interquartile range of the passes
    latency_calls: int  # passes timed
    latency_seconds: float  # time spent measuring (wall-clock)
    latency_stable: bool  # the floor was confirmed before max_seconds
    latency_probe_ms: float | None  # the probe's floor in the same rounds (None: no probe)

    def to_dict(self) -> dict:
        return asdict(self)
