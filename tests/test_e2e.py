"""End to end, in-process through the CLI: search, resume, report, export, load_student."""

from __future__ import annotations

import json
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch

from kdnas import load_student
from kdnas.cli import main
from kdnas.core import ArtifactStore
from kdnas.data import DataConfig, load_split
from kdnas.models import build, make_spec
from tests._util import stored_trials


def test_search_report_resume_export(tiny_study: Path, tmp_path: Path, capsys) -> None:
    assert main(["search", str(tiny_study)]) == 0
    out = capsys.readouterr()
    assert "3 trainings, 0 answered from replicates in study 'tiny'; front of " in out.out
    front = [line for line in out.out.splitlines() if line.startswith("  trial ")]
    assert front and all(re.search(r": val \d+\.\d% ± \d+\.\d \(1x\) test \d+\.\d% ± \d+\.\d ", line) for line in front), front
    assert "teacher resnet_cifar(depth=8,width=0.5)" in out.out and "trained in" in out.out

    # The report: one row per trial, the Pareto table, the plot.
    report = tmp_path / "reports" / "tiny"
    df = pd.read_csv(report / "trials.csv")
    assert list(df["number"]) == [0, 1, 2] and set(df["state"]) == {"COMPLETE"}
    for col in ("val_accuracy", "test_accuracy", "params", "macs", "latency_ms", "student", "method", "duration_s"):
        assert df[col].notna().all(), col
    assert df["pareto"].any()
    assert (df["val_accuracy"] > 0.3).all()  # one epoch on digits is far above chance (0.1)
    summary = (report / "summary.md").read_text()
    assert "## Pareto-optimal candidates" in summary and "Teacher:" in summary
    assert len(pd.read_csv(report / "candidates.csv")) == len(set(df["candidate"]))
    assert (report / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report / "hypervolume.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 0 is possible here: the students are the teacher's size or half of it, with rough test-budget latencies.
    assert 0 <= float(summary.split("Hypervolume: ")[1].split()[0]) <= 1

    # Resume: same study, new trials added, teacher reused from the cache.
    teachers = list((tmp_path / "runs/tiny/artifacts/teachers").glob("*.pt"))
    assert len(teachers) == 1
    mtime = teachers[0].stat().st_mtime_ns
    assert main(["search", str(tiny_study), "--trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "resuming study 'tiny': 3 trials stored" in out and "loaded in" in out
    trials = stored_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    assert teachers[0].stat().st_mtime_ns == mtime
    assert len(pd.read_csv(report / "trials.csv")) == 5

    # Export the best trial and rebuild it.
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.values[0])
    bundle = tmp_path / "bundle"
    assert main(["export", str(tiny_study), "--trial", str(best.number), "--out", str(bundle)]) == 0
    for name in ("student.json", "weights.pt", "recipe.json", "costs.json"):
        assert (bundle / name).is_file(), name
    recipe = json.loads((bundle / "recipe.json").read_text())
    assert recipe["method"]["name"] == "hinton" and "temperature" in recipe["method"]
    assert recipe["teacher"]["spec"] == {"family": "resnet_cifar", "depth": 8, "width": 0.5}
    assert recipe["student_train"]["epochs"] == 1 and recipe["seed"] == best.user_attrs["seed"]

    student = load_student(bundle)
    spec = make_spec(best.user_attrs["candidate"]["student"])
    reference = build(spec, (1, 8, 8), 10)
    reference.load_state_dict(ArtifactStore(tmp_path / "runs/tiny/artifacts").get_state_dict("students", best.user_attrs["weights"]))
    reference.eval()
    split = load_split(DataConfig("digits"))
    with torch.no_grad():
        torch.testing.assert_close(student(split.val.x), reference(split.val.x))
        acc = float((student(split.val.x).argmax(1) == split.val.y).float().mean())
    assert abs(acc - best.user_attrs["val_accuracy"]) < 1e-6, "the bundle must reproduce the trial's accuracy"

    # A non-empty --out is refused, not overwritten.
    capsys.readouterr()
    assert main(["export", str(tiny_study), "--trial", "0", "--out", str(bundle)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(tiny_study), "--trial", "99", "--out", str(tmp_path / "b2")]) == 2
    assert main(["report", str(tiny_study)]) == 0


@pytest.mark.slow  # the refusal is also in test_resume.py (default suite); this adds the retrain under a new name
def test_changed_teacher_section_is_refused_on_resume_and_trains_under_a_new_name(tiny_study: Path, tmp_path: Path,
                                                                                   capsys) -> None:
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0
    tiny_study.write_text(tiny_study.read_text().replace("epochs: 2", "epochs: 3"))
    capsys.readouterr()
    # Students distilled from another teacher would not be comparable with the stored ones (kdnas/study/_resume.py).
    assert main(["search", str(tiny_study), "--trials", "1"]) == 2
    assert "teacher.train.epochs: the study 'tiny' in storage was searched with 2, now 3" in capsys.readouterr().err
    tiny_study.write_text(tiny_study.read_text().replace("name: tiny", "name: tiny3"))
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0
    assert "trained in" in capsys.readouterr().out
    assert len(list((tmp_path / "runs/tiny/artifacts/teachers").glob("*.pt"))) == 1
    assert len(stored_trials()) == 1 and len(stored_trials("tiny3")) == 1


def test_failing_trials_are_recorded_and_the_study_goes_on(tiny_study: Path, tmp_path: Path, capsys) -> None:
    # An absurd learning rate makes the student's loss overflow: every trial fails, with its reason.
    tiny_study.write_text(tiny_study.read_text().replace("student:\n  train: {epochs: 1, lr: 0.1}",
                                                         "student:\n  train: {epochs: 1, lr: 1.0e+30}"))
    assert main(["search", str(tiny_study), "--trials", "2"]) == 1
    err = capsys.readouterr()
    assert "FAIL: training loss became" in err.out
    trials = stored_trials()
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all(t.user_attrs["fail_reason"].startswith("training loss became") for t in trials)
    summary = (tmp_path / "reports/tiny/summary.md").read_text()
    assert "## Failed trials" in summary and "training loss became" in summary


def test_teacher_from_checkpoint(tiny_study: Path, tmp_path: Path, capsys) -> None:
    torch.manual_seed(0)
    teacher = build(make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.5}), (1, 8, 8), 10)
    torch.save({"state_dict": teacher.state_dict()}, tmp_path / "teacher.pt")
    text = tiny_study.read_text().replace("  train: {epochs: 2, lr: 0.1}", "  checkpoint: teacher.pt")
    tiny_study.write_text(text)
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0
    study = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db")
    assert study.user_attrs["teacher"]["checkpoint"] == str(tmp_path / "teacher.pt")
    assert not (tmp_path / "runs/tiny/artifacts/teachers").exists()

    # A checkpoint for another architecture: one clear line, exit 2.
    other = build(make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.25}), (1, 8, 8), 10)
    torch.save(other.state_dict(), tmp_path / "teacher.pt")
    capsys.readouterr()
    assert main(["search", str(tiny_study), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "teacher.checkpoint:" in err and "does not match teacher.arch resnet_cifar(depth=8,width=0.5)" in err
    assert "Traceback" not in err

    # A corrupt file, and a pickle that would run code: refused by weights_only loading.
    (tmp_path / "teacher.pt").write_bytes(b"\x80\x04garbage")
    assert main(["search", str(tiny_study), "--trials", "1"]) == 2
    assert "cannot load checkpoint safely" in capsys.readouterr().err
    torch.save({"state_dict": teacher.state_dict(), "extra": Path("x")}, tmp_path / "teacher.pt")
    assert main(["search", str(tiny_study), "--trials", "1"]) == 2
    assert "cannot load checkpoint safely (weights_only=True)" in capsys.readouterr().err
    assert len(stored_trials()) == 1, "a refused teacher must not start trials"


def test_bad_checkpoint_on_a_new_study_writes_nothing(tiny_study: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "teacher.pt").write_bytes(b"not a checkpoint")
    tiny_study.write_text(tiny_study.read_text().replace("  train: {epochs: 2, lr: 0.1}", "  checkpoint: teacher.pt"))
    assert main(["search", str(tiny_study)]) == 2
    assert "teacher.pt is not a PyTorch checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()
