"""On a CUDA device: a study trains there end to end, real CUDA out-of-memory fails one trial and not the study,
streamed data reaches the GPU, latency is measured there. Skipped where no CUDA device is present (CI);
run them on a GPU machine with ``python -m pytest -m gpu``.

What each checks that the CPU suite cannot: tensors and models moved to the device at every step (data in
memory on the GPU, teacher logits, feature hooks, CRD's memory bank), artifacts written on the CPU so that a
machine without a GPU can load them, and the CUDA allocator's own error taken as a trial's failure.
"""

from __future__ import annotations

import json
from pathlib import Path

from dataclasses import dataclass

import optuna
import pandas as pd
import pytest
import torch
from torch import nn

from kdnas import load_student
from kdnas.cli import main
from kdnas.data import DataConfig, load_split
from kdnas.distill._teacher_logits import KIND
from kdnas.models import FAMILIES, ModelFamily
from kdnas.models._base import StagedNet
from tests._datafiles import write_cifar
from tests._util import TINY_SPACE, stored_trials, write_tiny_study

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

# The tiny study's students, three methods (one of each kind: logits, features, a contrastive memory bank) and
# an optional assistant.
SPACE = TINY_SPACE.split("methods:")[0] + """\
methods:
  hinton: {temperature: 4.0, alpha: 0.9}
  fitnet: {}
  crd: {}
chain:
  max_assistants: 1
  assistants:
    resnet_cifar: {depth: 8, width: 0.5}
"""


def _storage(folder: Path) -> str:
    (folder / "runs/tiny").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder}/runs/tiny/study.db"


def on_cpu(obj) -> bool:
    if isinstance(obj, torch.Tensor):
        return obj.device.type == "cpu"
    if isinstance(obj, dict):
        return all(on_cpu(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(on_cpu(v) for v in obj)
    return True


def test_a_study_trains_on_cuda_and_its_artifacts_load_on_a_cpu(tiny_study: Path, tmp_path: Path, capsys) -> None:
    # The tiny study (in tmp_path, the working folder), with a wider teacher and assistants trained 2 epochs.
    tiny_study = write_tiny_study(tmp_path, teacher_width=1.0,
                                  extra="assistants:\n  train: {epochs: 2}\ndevice: cuda\n")
    (tmp_path / "space.yaml").write_text(SPACE)
    study = optuna.create_study(study_name="tiny", storage=_storage(tmp_path),
                                directions=["maximize", "minimize", "minimize"])
    for method in ("hinton", "fitnet", "crd"):  # each method once through an assistant, then what the sampler picks
        study.enqueue_trial({"method": method, "chain.length": 1, "student.resnet_cifar.width": 0.25})
    assert main(["search", str(tiny_study), "--trials", "5"]) == 0
    out = capsys.readouterr().out
    assert "its logits come from a per-study table" in out
    done = stored_trials()
    states = [t.state.name for t in done]
    # The sampler's own picks may be pruned (an assistant no larger than the student); none may fail.
    assert len(done) == 5 and states[:3] == ["COMPLETE"] * 3 and "FAIL" not in states, \
        [t.user_attrs.get("fail_reason") for t in done]
    assert [t.params["method"] for t in done[:3]] == ["hinton", "fitnet", "crd"]
    complete = [t for t in done if t.state.name == "COMPLETE"]
    assert all(t.user_attrs["val_accuracy"] > 0.2 for t in complete)  # one epoch on digits: above chance (0.1)
    df = pd.read_csv(tmp_path / "reports/tiny/trials.csv")
    assert (df[df["state"] == "COMPLETE"]["latency_ms"] > 0).all(), "CPU latency is measured while the GPU trains"

    # Everything written is on the CPU: a machine without a GPU reads it (torch.load without map_location).
    for path in (tmp_path / "runs/tiny/artifacts").rglob("*.pt"):
        assert on_cpu(torch.load(path, weights_only=True)), path
    assert list((tmp_path / "runs/tiny/artifacts" / KIND).glob("*.pt")), "the teacher's logit table is stored"

    # Resume on the GPU: the teacher comes from the cache.
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0
    assert "loaded in" in capsys.readouterr().out and len(stored_trials()) == 6

    # Export, rebuild on the CPU: the bundle gives the trial's accuracy (CUDA and CPU kernels round apart,
    # so a borderline image or two may flip).
    best = max((t for t in stored_trials() if t.state.name == "COMPLETE"), key=lambda t: t.values[0])
    bundle = tmp_path / "bundle"
    assert main(["export", str(tiny_study), "--trial", str(best.number), "--out", str(bundle)]) == 0
    student = load_student(bundle)
    assert next(student.parameters()).device.type == "cpu"
    split = load_split(DataConfig("digits", val_fraction=0.2, test_fraction=0.2, seed=0))
    with torch.no_grad():
        acc = float((student(split.val.x).argmax(1) == split.val.y).float().mean())
    assert abs(acc - best.user_attrs["val_accuracy"]) <= 2 / len(split.val.y)

    # Full training of the exported student, on the GPU, written back to the bundle.
    capsys.readouterr()
    assert main(["train", str(bundle), "--epochs", "3", "--device", "cuda"]) == 0
    result = json.loads((bundle / "recipe.json").read_text())["full_result"]
    assert result["epochs"] == 3 and result["val_accuracy"] > 0.3
    assert on_cpu(torch.load(bundle / "weights_full.pt", weights_only=True))
    assert not (bundle / "train/state.pt").exists()


@dataclass(frozen=True)
class HogParams:
    def check(self, report) -> None:
        pass


class _CudaHog(nn.Module):
    # Asks the CUDA allocator for 4 EiB: its own out-of-memory error. A CPU pass (counting MACs) allocates nothing.
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            torch.empty(2**62, dtype=torch.uint8, device=x.device)
        return x


class CudaHogFamily(ModelFamily):
    name = "cuda_hog"
    Params = HogParams

    def build(self, params: HogParams, input_shape, num_classes) -> StagedNet:
        return StagedNet(nn.Conv2d(input_shape[0], 4, 3, padding=1), [_CudaHog()], nn.Linear(4, num_classes))


def test_cuda_out_of_memory_fails_the_trial_and_the_study_goes_on(monkeypatch, tiny_study: Path, tmp_path: Path,
                                                                   capsys) -> None:
    monkeypatch.setitem(FAMILIES._items, "cuda_hog", CudaHogFamily())  # test-only, gone after the test
    (tmp_path / "space.yaml").write_text("students:\n  cuda_hog: {}\nmethods:\n  none: {}\n")
    tiny_study.write_text(tiny_study.read_text() + "device: cuda\n")
    assert main(["search", str(tiny_study), "--trials", "2"]) == 1  # no trial completed
    failed = stored_trials()
    assert [t.state.name for t in failed] == ["FAIL", "FAIL"]
    reasons = [t.user_attrs["fail_reason"] for t in failed]
    assert all(r.startswith("out of memory: CUDA out of memory") for r in reasons), reasons
    assert "FAIL: out of memory: CUDA out of memory" in capsys.readouterr().out

    # The GPU is still usable: in this process, a study with a student that fits (another space: another study
    # name, kdnas/study/_resume.py) completes its trials, and trials leave nothing behind on the GPU (what stays
    # allocated is the same after one trial as after three).
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    tiny_study.write_text(tiny_study.read_text().replace("name: tiny", "name: fits"))
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0
    allocated = torch.cuda.memory_allocated()
    assert main(["search", str(tiny_study), "--trials", "2"]) == 0
    assert [t.state.name for t in stored_trials("fits")] == ["COMPLETE", "COMPLETE", "COMPLETE"]
    assert [t.state.name for t in stored_trials()] == ["FAIL", "FAIL"], "the first study is kept as it was"
    assert torch.cuda.memory_allocated() - allocated < 2**20, (allocated, torch.cuda.memory_allocated())


def test_streamed_torchvision_data_and_latency_on_cuda(tmp_path: Path, monkeypatch, capsys) -> None:
    # CIFAR-10 files in torchvision's on-disk format, streamed through a DataLoader with pinned memory; latency
    # measured on the GPU, in the study's process.
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path / "data", n_train=200, n_test=40)
    data = f"{{dataset: cifar10, root: {tmp_path / 'data'}, in_memory: false, loader_workers: 2, val_fraction: 0.2}}"
    write_tiny_study(tmp_path, teacher_epochs=1, threads=2, data=data, extra="device: cuda\n",
                     latency="{device: cuda, min_seconds: 0.05, max_seconds: 0.3}")
    assert main(["search", "study.yaml", "--trials", "2"]) == 0
    done = stored_trials()
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE"], [t.user_attrs.get("fail_reason") for t in done]
    df = pd.read_csv(tmp_path / "reports/tiny/trials.csv")
    assert (df["latency_ms"] > 0).all()


def test_profile_measures_latency_on_cuda(tmp_path: Path, capsys) -> None:
    arch = tmp_path / "arch.yaml"
    arch.write_text("{family: plain_cnn, channels: [8, 16], hidden: 0}\n")
    assert main(["profile", str(arch), "--input", "3,32,32", "--classes", "10", "--device", "cuda", "--json",
                 "--min-seconds", "0.05", "--max-seconds", "0.5"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["latency_setting"]["device"] == "cuda"
    assert 0 < out["latency_ms"] < 100


def test_two_workers_train_in_mixed_precision_on_cuda(tiny_study: Path, tmp_path: Path, capfd) -> None:
    # precision auto on a GPU: bf16 where it has bfloat16 arithmetic (compute capability 8.0 and up), fp16 with a
    # gradient scaler on an older one. Two workers on one GPU (or one each on two), every trial completes, and the
    # networks are kept apart from fp32 ones (their own teacher).
    tiny_study = write_tiny_study(tmp_path, extra="device: cuda\nprecision: auto\nparallel: {workers: 2}\n")
    assert main(["search", str(tiny_study), "--trials", "4"]) == 0
    out = capfd.readouterr().out
    done = stored_trials()
    assert [t.state.name for t in done] == ["COMPLETE"] * 4, [t.user_attrs.get("fail_reason") for t in done]
    assert all(t.user_attrs["val_accuracy"] > 0.2 for t in done)  # one epoch on digits: above chance (0.1)
    lines = [line for line in out.splitlines() if line.startswith(("w0@cuda:", "w1@cuda:"))]
    assert len(lines) >= 4, out  # each worker names its GPU
    from kdnas.config import load_study
    from kdnas.core import ArtifactStore
    from kdnas.study._teacher import teacher_key

    cfg = load_study(tiny_study)
    split = load_split(cfg.data)
    expected = "bf16" if torch.cuda.get_device_capability(0)[0] >= 8 else "fp16"
    assert ArtifactStore(tmp_path / "runs/tiny/artifacts").has("teachers", teacher_key(cfg, split, None, expected))
    for path in (tmp_path / "runs/tiny/artifacts").rglob("*.pt"):
        assert on_cpu(torch.load(path, weights_only=True)), path
