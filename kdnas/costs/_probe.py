"""A fixed reference workload, timed interleaved with every latency measurement, and its usual floor.

Two things differ from one measuring process to the next and slow everything it times alike: how busy the
machine was while it measured, and where the process's code and tensors landed in memory (2-4 %). Nothing
inside one measurement can tell them apart from the workload's own speed; a reference can. The probe, a
fixed small network, is timed in the same rounds as the workloads, and its floor in each process is
remembered in a small JSON file: the median of the last ``_KEEP`` figures is its usual floor on this machine.
A measurement scales its workloads by usual / observed probe floor, and counts as quiet only when the probe
came within a tolerance of its usual floor (a run slowed throughout can look like a floor of its own).
The median, unlike a minimum, does not keep moving down as lucky processes come along, so figures taken
early and late in a study are scaled alike.

The file is ``$KDNAS_CACHE_DIR/latency_probe.json`` (default ``$XDG_CACHE_HOME/kdnas`` or ``~/.cache/kdnas``),
keyed by host, CPU model, PyTorch version and estimator; deleting it only costs the knowledge.
"""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path

import torch

from kdnas.core import atomic_write_bytes, cache_dir
from kdnas.models import build, digest, make_spec

# ResNet-8 at width 0.25 on one 8x8 image: 0.45 ms of the same small-op, dispatch-bound work as the students
# of the digits studies, so it is slowed by the same neighbours; small enough to cost little of each round.
PROBE_SPEC = {"family": "resnet_cifar", "depth": 8, "width": 0.25}
PROBE_INPUT = (1, 8, 8)
_KEEP = 25  # figures kept per machine: enough for a stable median, recent enough to follow a changed machine


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
    """The probe workload and its usual floor (ms) on this machine; ``floor`` is None until one is known."""

    def __init__(self, estimator: str, path: Path | None = None):
        self.path = path or cache_dir() / "latency_probe.json"
        self.key = digest([estimator, machine(), PROBE_SPEC])
        self.floor = self._usual(self._read().get(self.key))

    @staticmethod
    def _usual(figures) -> float | None:
        if not isinstance(figures, list) or not figures:
            return None
        return float(statistics.median(figures))

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
        """Whether ``estimate`` came within ``tolerance`` of the usual floor; without one, nothing can be said: True."""
        return self.floor is None or estimate <= (1 + tolerance) * self.floor

    def remember(self, estimate: float) -> None:
        """Add this process's probe floor to the file (the usual floor of this object is left as it was)."""
        data = self._read()  # other processes may have written meanwhile
        figures = data.get(self.key) if isinstance(data.get(self.key), list) else []
        data[self.key] = (figures + [estimate])[-_KEEP:]
        try:
            atomic_write_bytes(self.path, json.dumps(data, indent=1).encode())
        except OSError:
            pass  # a read-only home only costs the memory
