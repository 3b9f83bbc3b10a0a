"""Trials that cannot finish end FAILED with their reason, shown in the report; the study goes on.

Real failures, each from a tiny test-only extension registered for the test: a loss that is infinite, a
network whose forward asks PyTorch's CPU allocator for an impossible buffer (a real allocation failure, as an
out-of-memory candidate produces), and a network too deep for 8x8 inputs (a real shape error). CUDA's
``torch.OutOfMemoryError`` is raised by hand: there is no GPU to exhaust.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdnas.cli import main
from kdnas.core import TrialFailure
from kdnas.data import TensorSource
from kdnas.distill import METHODS, Method
from kdnas.distill._base import alpha
from kdnas.models import FAMILIES, ModelFamily, build, make_spec
from kdnas.models._base import StagedNet
from kdnas.train import TrainRecipe, fit
from tests._util import TINY_SPACE


@dataclass(frozen=True)
class FaultyParams:
    fault: str = "oom"  # oom: impossible allocation in forward; deep: stride-2 convs past the input size
    depth: int = 5

    def check(self, report) -> None:
        if self.fault not in ("oom", "cuda_oom", "deep"):
            report("fault", f"expected 'oom', 'cuda_oom' or 'deep', got {self.fault!r}")


class _Allocates(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.empty(2**62, dtype=torch.uint8, device=x.device)  # 4 EiB: no allocator can; meta tensors need none
        return x


class _CudaOOM(nn.Module):
    # No GPU here: the error the CUDA allocator raises, raised by hand (the one simulated failure).
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "meta":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return x


class FaultyFamily(ModelFamily):
    name = "faulty"
    Params = FaultyParams

    def build(self, params: FaultyParams, input_shape, num_classes) -> StagedNet:
        c = input_shape[0]
        if params.fault in ("oom", "cuda_oom"):
            fault = _Allocates() if params.fault == "oom" else _CudaOOM()
            return StagedNet(nn.Conv2d(c, 4, 3, padding=1), [fault], nn.Linear(4, num_classes))
        # Unpadded 3x3 convolutions: each takes 2 pixels off the side, 8 -> 6 -> 4 -> 2 -> 0.
        convs = [nn.Conv2d(c if i == 0 else 4, 4, 3) for i in range(params.depth)]
        return StagedNet(convs[0], convs[1:], nn.Linear(4, num_classes))


class _InfTerm(nn.Module):
    def __init__(self, hp):
        super().__init__()

    def forward(self, step) -> torch.Tensor:
        return F.cross_entropy(step.student_logits, step.labels) + math.inf


class InfLoss(Method):
    """A method whose loss overflows: labels only, plus infinity."""

    name = "inf"
    reads = "labels"
    hyperparameters = {"alpha": alpha(1.0, "all weight on the overflowing term")}
    term = _InfTerm


@pytest.fixture
def faulty(monkeypatch: pytest.MonkeyPatch) -> None:
    # Test-only entries: registered for this test, gone after it.
    monkeypatch.setitem(FAMILIES._items, "faulty", FaultyFamily())
    monkeypatch.setitem(METHODS._items, "inf", InfLoss())


CASES = {
    "inf loss": (TINY_SPACE.replace("methods:\n", "methods:\n  inf: {}\n").replace(
        "  hinton:\n    temperature: {type: float, low: 1.0, high: 4.0}\n    alpha: {type: float, low: 0.5, high: 0.9}\n", ""),
        "training loss became inf in epoch 1/1"),
    "out of memory": ("students:\n  faulty: {fault: oom}\nmethods:\n  none: {}\n",
                      "out of memory: [enforce fail at alloc_cpu.cpp"),
    "cuda out of memory": ("students:\n  faulty: {fault: cuda_oom}\nmethods:\n  none: {}\n",
                           "out of memory: CUDA out of memory. Tried to allocate 2.00 GiB"),
    "too deep for the input": ("students:\n  faulty: {fault: deep, depth: 5}\nmethods:\n  none: {}\n",
                               "RuntimeError: Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_failing_trials_are_recorded_and_reported(case: str, faulty, tiny_study: Path, tmp_path: Path, capsys) -> None:
    space, reason = CASES[case]
    (tmp_path / "space.yaml").write_text(space)
    # These students never learn from the teacher: an untrained one from a checkpoint saves training it.
    torch.save(build(make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.5}), (1, 8, 8), 10).state_dict(),
               tmp_path / "teacher.pt")
    tiny_study.write_text(tiny_study.read_text().replace("  train: {epochs: 2, lr: 0.1}", "  checkpoint: teacher.pt"))
    assert main(["search", str(tiny_study), "--trials", "2"]) == 1  # no trial completed
    out = capsys.readouterr().out
    trials = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db").trials
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"], "the study goes on after a failed trial"
    assert all(t.user_attrs["fail_reason"].startswith(reason) for t in trials), trials[0].user_attrs["fail_reason"]
    assert f"FAIL: {reason}" in out
    assert (pd.read_csv(tmp_path / "reports/tiny/trials.csv")["reason"].str.startswith(reason)).all()
    assert f"- trial 1: {reason}" in (tmp_path / "reports/tiny/summary.md").read_text()


def test_fit_stops_on_an_infinite_loss() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(16, 1, 2, 2), torch.randint(0, 3, (16,))
    with pytest.raises(TrialFailure, match=r"training loss became inf in epoch 1/2"):
        fit(model, TensorSource(x, y), TrainRecipe(epochs=2, batch_size=8),
            lambda logits, b: F.cross_entropy(logits, b.y) + math.inf, 0)
