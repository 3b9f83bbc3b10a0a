"""`kdnas train`: full training of an exported student and its chain; checkpoints; resume after SIGKILL; a
trained bundle kept unless --force; deployment files that follow the weights."""

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
from tests._util import CHAIN_SPACE, working_dir, write_tiny_study


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """A bundle of a trial taught through one assistant, from a 1-epoch search."""
    folder = tmp_path_factory.mktemp("fulltrain")
    with working_dir(folder):
        study_file = write_tiny_study(folder, teacher_width=1.0, extra="assistants:\n  train: {epochs: 1}\n")
        (folder / "space.yaml").write_text(CHAIN_SPACE)
        (folder / "runs/tiny").mkdir(parents=True)
        study = optuna.create_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db",
                                    directions=["maximize", "minimize", "minimize"])
        study.enqueue_trial({"chain.length": 1})
        assert main(["search", str(study_file), "--trials", "1"]) == 0
        assert main(["export", str(study_file), "--trial", "0", "--out", str(folder / "bundle"),
                     "--format", "onnx", "--format", "pt2"]) == 0
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
    # Training a trained bundle again (--force) with other epochs trains the assistant again too (it was trained
    # 10 epochs); with the same epochs and precision, the finished assistant is what training it would give.
    assert main(["train", str(b), "--epochs", "2", "--force"]) == 0
    out = capsys.readouterr().out
    assert "assistant_0: trained 10 epochs in fp32, not 2 epochs in fp32: training it again" in out
    assert "assistant_0: training 2 epochs" in out
    assert main(["train", str(b), "--epochs", "2", "--force"]) == 0
    out = capsys.readouterr().out
    assert "assistant_0: already trained" in out and "student: training 2 epochs" in out


def _outputs(bundle: Path, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The logits of ``x`` by load_student, the ONNX file and the torch.export file of ``bundle``."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(bundle / "student.onnx"))
    with torch.no_grad():
        return {"load_student": load_student(bundle)(x), "pt2": torch.export.load(bundle / "student.pt2").module()(x),
                "onnx": torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])}


def test_training_rewrites_the_deployment_files_and_readme_with_the_trained_weights(bundle: Path, tmp_path: Path,
                                                                                    capsys) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    x = torch.randn(6, 1, 8, 8)
    brief = _outputs(b, x)
    assert main(["train", str(b), "--epochs", "2"]) == 0
    full = _outputs(b, x)
    assert not torch.allclose(full["load_student"], brief["load_student"])
    torch.testing.assert_close(full["pt2"], full["load_student"])
    torch.testing.assert_close(full["onnx"], full["load_student"], atol=1e-5, rtol=1e-4)
    assert "rewrote student.onnx with the fully trained weights" in capsys.readouterr().out
    result = json.loads((b / "recipe.json").read_text())["full_result"]
    assert f"the fully trained ones (weights_full.pt: `kdnas train`, 2 epochs: val {result['val_accuracy']:.2%}" in \
        (b / "README.md").read_text()


def test_a_trained_bundle_is_trained_again_only_with_force(bundle: Path, tmp_path: Path, capsys) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    assert main(["train", str(b), "--epochs", "2"]) == 0
    result = json.loads((b / "recipe.json").read_text())["full_result"]
    weights = (b / "weights_full.pt").read_bytes()
    capsys.readouterr()
    # Another run would replace 2 epochs of training with 1: refused, saying what is there; nothing changes.
    assert main(["train", str(b), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert f"already holds fully trained weights (weights_full.pt: 2 epochs on cpu, val {result['val_accuracy']:.2%}" in err
    assert "pass --force" in err and (b / "weights_full.pt").read_bytes() == weights
    assert json.loads((b / "recipe.json").read_text())["full_result"] == result
    assert main(["train", str(b), "--epochs", "1", "--force"]) == 0
    assert json.loads((b / "recipe.json").read_text())["full_result"]["epochs"] == 1
    assert (b / "weights_full.pt").read_bytes() != weights
    again = _outputs(b, torch.randn(2, 1, 8, 8))
    torch.testing.assert_close(again["onnx"], again["load_student"], atol=1e-5, rtol=1e-4)


def test_deploy_writes_the_deployment_files_of_the_weights_in_use(bundle: Path, tmp_path: Path, capsys) -> None:
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    (b / "student.onnx").unlink()
    (b / "student.pt2").unlink()
    assert main(["deploy", str(b), "--format", "onnx"]) == 0
    assert f"wrote {b / 'student.onnx'}" in capsys.readouterr().out and not (b / "student.pt2").exists()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        ref = load_student(b)(x)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(b / "student.onnx"))
    torch.testing.assert_close(torch.from_numpy(session.run(None, {"x": x.numpy()})[0]), ref, atol=1e-5, rtol=1e-4)
    assert main(["deploy", str(tmp_path), "--format", "onnx"]) == 2
    assert "is not a kdnas bundle: student.json is missing" in capsys.readouterr().err


def _epochs_done(state: Path, stage: str | None = None) -> int:
    """Epochs finished in the stage being trained (if it is ``stage``), as its state file says."""
    try:
        s = torch.load(state, weights_only=True)
    except Exception:  # not written yet, or being replaced
        return 0
    return s["fit"]["epoch"] if stage in (None, s["stage"]) else 0


def _student_epoch(state: Path) -> int:
    return _epochs_done(state, "student")


@pytest.mark.slow  # ~13 s; Resumable is covered by default in tests/test_interrupt.py, Ctrl-C below
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
