"""Ctrl-C during long work loses nothing: the teacher and assistants show their progress and continue after
their last finished epoch, ending as an uninterrupted run would; an interrupted trial runs again."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import optuna
import pytest
import torch
from optuna.trial import TrialState

import kdnas.train._resumable
from kdnas.cli import main
from kdnas.config import load_study
from kdnas.core import ArtifactStore, setup_logging
from kdnas.data import DataConfig, load_split
from kdnas.distill import AssistantPool, Guide, MethodSpec, TeacherLogits
from kdnas.models import build, make_spec
from kdnas.study import get_teacher
from kdnas.study._teacher import teacher_key
from kdnas.train import TrainRecipe, predict
from tests._util import CHAIN_SPACE, REPO, stored_trials, write_tiny_study


class CtrlC(logging.Handler):
    """Keeps the ``kdnas`` log lines; raises KeyboardInterrupt once, right after the line containing ``at``
    (as Ctrl-C pressed when that line appears)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.at: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if self.at is not None and self.at in self.lines[-1]:
            self.at = None
            raise KeyboardInterrupt


@pytest.fixture
def ctrl_c() -> Iterator[CtrlC]:
    setup_logging()  # as the command does (INFO level), before our handler
    log = logging.getLogger("kdnas")
    handler = CtrlC()
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


def _equal_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow  # ~10 s; the same Resumable path runs by default for assistants (below)
def test_sigint_during_the_teacher_then_the_rerun_continues_after_its_last_epoch(tmp_path: Path, monkeypatch,
                                                                                 capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path, teacher_epochs=12)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "kdnas.cli", "search", str(study), "--trials", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:  # the progress line of the first epoch, then Ctrl-C
            seen.append(line)
            if "teacher resnet_cifar(depth=8,width=0.5): epoch 1/12, loss " in line:
                assert "s left" in line, line
                proc.send_signal(signal.SIGINT)
                break
        err = "".join(seen) + proc.stderr.read()
        assert proc.wait(timeout=120) == 130, err
    finally:
        proc.kill()
        proc.wait()
    assert err.splitlines()[-1] == "interrupted: completed trials are kept; run the same command again to resume"
    assert "Traceback" not in err
    partial = next((tmp_path / "runs/tiny/artifacts/teachers").glob("*.partial.pt"))
    epoch = torch.load(partial, weights_only=True)["fit"]["epoch"]
    assert 1 <= epoch < 12, f"expected Ctrl-C mid-run, got epoch {epoch}"

    assert main(["search", str(study), "--trials", "1"]) == 0
    err = capsys.readouterr().err
    assert f"teacher resnet_cifar(depth=8,width=0.5): resuming after epoch {epoch}/12" in err
    assert "training teacher" not in err and "epoch 12/12, loss" in err
    assert not partial.exists(), "the partial checkpoint is deleted once the teacher is stored"

    # The teacher of an uninterrupted run, trained in this process: the same weights, to the bit.
    cfg = load_study(study)
    split = load_split(cfg.data)
    straight, _ = get_teacher(cfg, split, ArtifactStore(tmp_path / "straight"), torch.device("cpu"))
    stored = ArtifactStore(tmp_path / "runs/tiny/artifacts").get_state_dict("teachers", teacher_key(cfg, split))
    _equal_weights(straight.state_dict(), stored)


W = {w: make_spec({"family": "resnet_cifar", "depth": 8, "width": w}) for w in (0.5, 0.75, 1.0)}


def test_interrupted_assistant_resumes_and_ends_like_an_uninterrupted_run(tmp_path: Path, ctrl_c: CtrlC,
                                                                          monkeypatch) -> None:
    monkeypatch.setattr(kdnas.train._resumable, "PROGRESS_EVERY_S", 0.0)  # a line per epoch, to interrupt after the second
    split = load_split(DataConfig("digits"))
    torch.manual_seed(0)
    t = build(W[1.0], split.input_shape, split.num_classes).eval()
    teacher = Guide("teacher", "t", t, TeacherLogits(t, predict(t, split.train)), {})
    cpu = torch.device("cpu")

    def chain(store: ArtifactStore) -> Guide:
        # DGKD with guide drops: the second assistant learns from the teacher and the first, each kept at random.
        pool = AssistantPool(split, store, cpu, TrainRecipe(epochs=4, batch_size=128, lr=0.1),
                             MethodSpec("hinton", {"temperature": 4.0, "alpha": 0.8}), drop_rate=0.5, seed=3)
        first, _ = pool.get(W[0.75], [teacher])
        return pool.get(W[0.5], [teacher, first])[0]

    straight = chain(ArtifactStore(tmp_path / "straight"))
    store = ArtifactStore(tmp_path / "interrupted")
    ctrl_c.at = "assistant resnet_cifar(depth=8,width=0.5): epoch 2/4"
    with pytest.raises(KeyboardInterrupt):
        chain(store)
    assert len(list((store.root / "assistants").glob("*.partial.pt"))) == 1
    ctrl_c.lines.clear()
    resumed = chain(store)  # a new pool, as a new command or trial has: the first assistant loads, the second resumes
    assert "assistant resnet_cifar(depth=8,width=0.5): resuming after epoch 2/4" in ctrl_c.lines
    assert [line for line in ctrl_c.lines if "epoch 3/4" in line or "epoch 4/4" in line] != []
    assert not any("width=0.75" in line for line in ctrl_c.lines), "the finished assistant is loaded, not retrained"
    assert list((store.root / "assistants").glob("*.partial.pt")) == []
    _equal_weights(straight.model.state_dict(), resumed.model.state_dict())


def test_a_trial_interrupted_by_ctrl_c_is_retried_on_resume(tmp_path: Path, ctrl_c: CtrlC, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path, teacher_width=1.0, extra="assistants:\n  train: {epochs: 3}\n")
    (tmp_path / "space.yaml").write_text(CHAIN_SPACE)
    (tmp_path / "runs/tiny").mkdir(parents=True)
    optuna.create_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db",
                        directions=["maximize", "minimize", "minimize"]).enqueue_trial({"chain.length": 1})
    ctrl_c.at = "assistant resnet_cifar(depth=8,width=0.5): epoch 1/3"  # inside the trial, as it trains its assistant
    assert main(["search", str(study), "--trials", "1"]) == 130
    first, retry = stored_trials()
    assert first.state == TrialState.FAIL and retry.state == TrialState.WAITING
    assert first.user_attrs["fail_reason"] == "interrupted (Ctrl-C, or its parent process ended); retried as trial 1"
    assert retry.params == first.params

    ctrl_c.lines.clear()
    assert main(["search", str(study), "--trials", "1"]) == 0
    done = stored_trials()[1]
    assert done.state == TrialState.COMPLETE and done.params == first.params, "the interrupted candidate ran again"
    assert done.user_attrs["assistants"][0]["trained_now"]
    assert "assistant resnet_cifar(depth=8,width=0.5): resuming after epoch 1/3" in ctrl_c.lines


def test_a_damaged_partial_checkpoint_costs_only_time(tiny_study: Path, tmp_path: Path, ctrl_c: CtrlC) -> None:
    cfg = load_study(tiny_study)
    split = load_split(cfg.data)
    store = ArtifactStore(tmp_path / "store")
    partial = store.path("teachers", f"{teacher_key(cfg, split)}.partial")
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"not a checkpoint")
    teacher, info = get_teacher(cfg, split, store, torch.device("cpu"))
    assert info["trained_now"] and not partial.exists()
    assert any(line.startswith(f"teacher resnet_cifar(depth=8,width=0.5): cannot resume from {partial}")
               and line.endswith("training from the first epoch") for line in ctrl_c.lines), ctrl_c.lines
    straight, _ = get_teacher(cfg, split, ArtifactStore(tmp_path / "straight"), torch.device("cpu"))
    _equal_weights(straight.state_dict(), teacher.state_dict())
