"""kdnas's glibc malloc thresholds (kdnas/core/_malloc.py): a training step stops faulting its memory in again.

Each case runs in a fresh interpreter: the thresholds are process-wide and set once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc: Linux only")

# Page faults per training step of a small MobileNetV2 (its expanded activations are large and short-lived),
# after three warm-up steps; the first line says whether kdnas set the thresholds.
_STEPS = """
import json, resource, sys
from kdnas.core import _malloc
tuned = _malloc.tune()
import torch, torch.nn.functional as F
from kdnas.models import build, make_spec
torch.set_num_threads(1)
torch.manual_seed(0)
m = build(make_spec({"family": "mobilenetv2", "blocks": [1, 1], "expansion": 4, "kernel_size": 3, "width": 0.5}),
          (1, 28, 28), 10)
opt = torch.optim.SGD(m.parameters(), lr=0.1)
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
def step():
    opt.zero_grad()
    F.cross_entropy(m(x), y).backward()
    opt.step()
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(json.dumps({"tuned": tuned, "faults": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5}))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KDNAS_MALLOC", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    return {**env, **extra}


def _run(code: str, **extra: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env=_env(**extra), cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    from kdnas.core._malloc import glibc

    return glibc() is not None


@pytest.mark.slow  # a measurement (page faults per step); test_every_kdnas_command_sets_them checks the setting
@pytest.mark.skipif(not _glibc(), reason="not glibc")
def test_training_steps_stop_faulting_their_memory_in_again():
    default = _run(_STEPS, KDNAS_MALLOC="default")
    tuned = _run(_STEPS)
    assert (default["tuned"], tuned["tuned"]) == (False, True)
    # glibc's default: about 20,000 faults per step here (80 MB zeroed by the kernel); kdnas's: under 1,000.
    assert default["faults"] > 5000
    assert tuned["faults"] < default["faults"] / 5


@pytest.mark.parametrize("variable, value", [("KDNAS_MALLOC", "default"), ("MALLOC_TRIM_THRESHOLD_", "131072"),
                                             ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")])
def test_settings_of_the_user_are_left_alone(monkeypatch, variable, value):
    from kdnas.core import _malloc

    monkeypatch.setenv(variable, value)
    assert _malloc._tune() is False  # decided before glibc is touched: this process is left as it was


@pytest.mark.skipif(not _glibc(), reason="not glibc")
def test_every_kdnas_command_sets_them(tmp_path):
    # `kdnas profile --no-latency` only counts: what matters is that the entry point set the thresholds first.
    arch = tmp_path / "arch.yaml"
    arch.write_text("{family: resnet_cifar, depth: 8, width: 0.25}\n")
    code = ("import json\nfrom kdnas.cli import main\nfrom kdnas.core import _malloc\n"
            f"rc = main(['profile', {str(arch)!r}, '--input', '1,8,8', '--classes', '10', '--no-latency'])\n"
            "print(json.dumps({'rc': rc, 'tuned': _malloc._done}))")
    assert _run(code) == {"rc": 0, "tuned": True}
