"""A reference workload that tells whether the machine had a quiet moment while a latency was measured.

A run of calls that are all slowed by a busy neighbour can look just like a floor: tight at the bottom and
not improving. Nothing inside one measurement tells the two apart, so the probe brings outside knowledge:
a fixed small network, timed interleaved with the measured workloads, whose best time on this machine is
remembered across processes in a small JSON file. When the probe reaches its remembered floor during a
measurement, the machine was quiet then, and the workloads measured around it saw the same quiet moments.
The remembered floor only ever goes down, so a first record taken on a busy machine corrects itself.

The file is ``$KDNAS_CACHE_DIR/latency_probe.json`` (default ``$XDG_CACHE_HOME/kdnas`` or ``~/.cache/kdnas``),
keyed by host, CPU model, PyTorch version and estimator; deleting it only costs the knowledge.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch

from kdnas.artifacts import atomic_write_bytes
from kdnas.models import build, digest, make_spec

# ResNet-8 at width 0.25 on one 8x8 image: 0.45 ms of the same small-op, dispatch-bound work as the students
# of the digits studies, so it is slowed by the same neighbours; small enough to cost little of each round.
PROBE_SPEC = {"family": "resnet_cifar", "depth": 8, "width": 0.25}
PROBE_INPUT = (1, 8, 8)


def cache_dir() -> Path:
    if os.environ.get("KDNAS_CACHE_DIR"):
        return Path(os.environ["KDNAS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdnas"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> list[str]:
    """What a remembered timing depends on besides the workload: this host, its CPU and PyTorch."""
    return [platform.node(), _cpu_model(), torch.__version__]


class Probe:
    """The probe workload and its remembered floor (ms, 5th-fastest call) on this machine."""

    def __init__(self, estimator: str, path: Path | None = None):
        self.path = path or cache_dir() / "latency_probe.json"
        self.key = digest([estimator, machine(), PROBE_SPEC])
        self.floor = self._read().get(self.key)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def workload(self) -> tuple[torch.nn.Module, torch.Tensor]:
        """The probe network and its input."""
        with torch.random.fork_rng(devices=[]):
            model = build(make_spec(PROBE_SPEC), PROBE_INPUT, 10).eval()
        return model, torch.zeros(1, *PROBE_INPUT)

    def quiet(self, estimate: float, tolerance: float) -> bool:
        """Whether ``estimate`` reached the remembered floor; without a memory, nothing can be said: True."""
        return self.floor is None or estimate <= (1 + tolerance) * self.floor

    def remember(self, estimate: float) -> None:
        if self.floor is not None and estimate >= self.floor:
            return
        self.floor = estimate
        data = self._read()  # another process may have written meanwhile: keep the lower of the two
        data[self.key] = min(estimate, data.get(self.key, estimate))
        try:
            atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())
        except OSError:
            pass  # a read-only home only costs the memory
