"""`kdnas train`: full training of an exported student and its chain; checkpoints; resume after SIGKILL."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from kdnas import load_student
from kdnas.cli import main
from tests._util import working_dir, write_tiny_study

SPACE = """\
students:
  resnet_cifar: {depth: 8, width: 0.25}
methods:
  hinton: {temperature: 4.0, alpha: 0.8}
chain:
  max_assistants: 1
  assistants:
    resnet_cifar: {depth: 8, width: 0.5}
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A bundle of a trial taught through one assistant, from a 1-epoch search."""
    folder = tmp_path_factory.mktemp("fulltrain")
    with working_dir(folder):
        study_file = write_tiny_study(folder, teacher_width=1.0, extra="assistants:\n  train: {epochs: 1}\n")
        (folder / "space.yaml").write_text(SPACE)
        (folder / "runs/tiny").mkdir(parents=True)
        study = optuna.create_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db",
                                    directions=["maximize", "minimize", "minimize"])
        study.enqueue_trial({"chain.length": 1})
        assert main(["search", str(study_file), "--trials", "1"]) == 0
        assert main(["export", str(study_file), "--trial", "0", "--out", str(folder / "bundle")]) == 0
    return folder / "bundle"


def test_full_training_beats_the_brief_run_and_is_written_back(bundle: Path, tmp_path: Path, capsys) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    brief = json.loads((b / "recipe.json").read_text())["brief_result"]["val_accuracy"]
    assert len(json.loads((b / "recipe.json").read_text())["chain"]["assistants"]) == 1
    assert main(["train", str(b), "--epochs", "10"]) == 0
    out = capsys.readouterr().out
    assert "assistant_0: training 10 epochs" in out and "student: training 10 epochs" in out
    result = json.loads((b / "recipe.json").read_text())["full_result"]
    assert result["epochs"] == 10 and result["val_accuracy"] >= brief
    assert (b / "weights_full.pt").is_file() and not (b / "train/state.pt").exists()
    full, short = load_student(b), load_student(b, brief=True)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        assert not torch.equal(full(x), short(x))
    # Rerunning a finished bundle reuses the trained assistant and trains the student again from scratch.
    assert main(["train", str(b), "--epochs", "2"]) == 0
    assert "assistant_0: already trained" in capsys.readouterr().out


def _epochs_done(state: Path, stage: str | None = None) -> int:
    """Epochs finished in the stage being trained (if it is ``stage``), as its state file says."""
    try:
        s = torch.load(state, weights_only=True)
    except Exception:  # not written yet, or being replaced
        return 0
    return s["fit"]["epoch"] if stage in (None, s["stage"]) else 0


def _student_epoch(state: Path) -> int:
    return _epochs_done(state, "student")


def test_killed_training_resumes_and_ends_like_an_uninterrupted_run(bundle: Path, tmp_path: Path, capsys) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    shutil.copytree(bundle, straight)
    shutil.copytree(bundle, killed)
    # One thread everywhere: multi-threaded reductions would make the two runs differ in the last bits.
    assert main(["train", str(straight), "--epochs", "8", "--threads", "1"]) == 0

    proc = subprocess.Popen([sys.executable, "-m", "kdnas.cli", "train", str(killed), "--epochs", "8", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while _student_epoch(killed / "train/state.pt") < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    epoch = _student_epoch(killed / "train/state.pt")
    assert 2 <= epoch < 8, f"expected to kill mid-run, got epoch {epoch}"
    capsys.readouterr()
    # Another budget would splice two learning-rate schedules into one run: refused, nothing changed.
    assert main(["train", str(killed), "--epochs", "6", "--threads", "1"]) == 2
    assert f"student was interrupted after epoch {epoch} of 8, not 6; rerun with --epochs 8" in capsys.readouterr().err
    assert _student_epoch(killed / "train/state.pt") == epoch
    assert main(["train", str(killed), "--epochs", "8", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "assistant_0: already trained" in out and f"student: resuming after epoch {epoch}/8" in out
    a = torch.load(straight / "weights_full.pt", weights_only=True)
    b = torch.load(killed / "weights_full.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_ctrl_c_ends_with_one_line_and_exit_130_and_keeps_the_state(bundle: Path, tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    proc = subprocess.Popen([sys.executable, "-m", "kdnas.cli", "train", str(b), "--epochs", "30", "--threads", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while _epochs_done(b / "train/state.pt") < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err
    assert err == "interrupted: run the same command again to continue after the last finished epoch\n"
    assert _epochs_done(b / "train/state.pt") >= 1, "the finished epochs are kept"
    assert not (b / "weights_full.pt").exists()


def test_not_a_bundle_is_exit_2(tmp_path: Path, capsys) -> None:
    assert main(["train", str(tmp_path)]) == 2
    assert "is not a kdnas bundle: recipe.json is missing" in capsys.readouterr().err
