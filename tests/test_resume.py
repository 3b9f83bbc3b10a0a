"""Resuming a study whose files changed: refused at start, in one line naming the key, with nothing trained;
and the progress lines of a resumed study."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import optuna
import pytest

from kdnas.cli import main
from kdnas.config import load_study
from kdnas.core import KdnasError
from kdnas.study._resume import RECORD, check_recipe, recipe
from tests._util import searched_tiny_study, stored_trials


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> Path:
    """A tiny study searched for one trial (module-scoped: each test works on a copy)."""
    return searched_tiny_study(tmp_path_factory.mktemp("searched"), trials=1)


@pytest.fixture
def copy(searched: Path, tmp_path: Path, monkeypatch) -> Path:
    shutil.copytree(searched, tmp_path, dirs_exist_ok=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def refused(copy: Path, capsys) -> str:
    """Resume the study: exit 2, one error line; the stored trial kept, nothing trained. Returns the line."""
    teachers = sorted((copy / "runs/tiny/artifacts/teachers").iterdir())
    capsys.readouterr()
    assert main(["search", str(copy / "study.yaml"), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("kdnas: error: "), err
    assert len(stored_trials()) == 1 and sorted((copy / "runs/tiny/artifacts/teachers").iterdir()) == teachers
    return err


def test_changed_training_budget_is_refused(copy: Path, capsys) -> None:
    edit(copy / "study.yaml", "student:\n  train: {epochs: 1,", "student:\n  train: {epochs: 3,")
    err = refused(copy, capsys)
    assert f"{copy / 'study.yaml'}: student.train.epochs: the study 'tiny' in storage was searched with 1, now 3" in err
    assert "new `name`" in err


def test_changed_categorical_choices_are_refused(copy: Path, capsys) -> None:
    # Optuna would fail every new trial: "CategoricalDistribution does not support dynamic value space".
    edit(copy / "space.yaml", "choices: [0.25, 0.5]", "choices: [0.25, 0.75]")
    err = refused(copy, capsys)
    assert (f"{copy / 'space.yaml'}: students.resnet_cifar.width: the study 'tiny' in storage was searched with "
            "one of 0.25, 0.5, now one of 0.25, 0.75") in err


def test_changed_teacher_is_refused_before_it_is_trained(copy: Path, capsys) -> None:
    edit(copy / "study.yaml", "train: {epochs: 2, lr: 0.1}", "train: {epochs: 3, lr: 0.1}")
    assert "teacher.train.epochs: the study 'tiny' in storage was searched with 2, now 3" in refused(copy, capsys)


def test_another_data_split_is_refused(copy: Path, capsys) -> None:
    edit(copy / "study.yaml", "test_fraction: 0.2, seed: 0}", "test_fraction: 0.2, seed: 1}")
    assert "study.yaml: data: the study 'tiny' in storage was searched with the split with fingerprint" in refused(copy, capsys)


def test_a_study_from_before_the_record_is_recorded_not_refused(copy: Path, capsys) -> None:
    with sqlite3.connect(copy / "runs/tiny/study.db") as db:
        db.execute("DELETE FROM study_user_attributes WHERE key = ?", (RECORD,))
    assert main(["search", str(copy / "study.yaml"), "--trials", "1"]) == 0
    study = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db")
    assert study.user_attrs[RECORD] == recipe(load_study(copy / "study.yaml"))
    assert len(study.trials) == 2


def test_a_setting_the_record_lacks_is_no_change_but_a_new_space_parameter_is(searched: Path) -> None:
    cfg = load_study(searched / "study.yaml")
    stored = recipe(cfg)
    del stored["study"]["student.train.warmup"]  # recorded by a kdnas without that setting: it had the default
    check_recipe(cfg, {RECORD: stored})
    del stored["space"]["students.resnet_cifar.width"]
    with pytest.raises(KdnasError, match=r"students.resnet_cifar.width: .* searched with \(absent\), now one of"):
        check_recipe(cfg, {RECORD: stored})


def test_unchanged_study_resumes_and_pruned_lines_name_the_candidate(copy: Path, capsys) -> None:
    # Limits only screen candidates (their measurements do not depend on them): changing them is no refusal.
    (copy / "space.yaml").write_text((copy / "space.yaml").read_text() + "limits: {max_params: 10}\n")
    capsys.readouterr()
    assert main(["search", str(copy / "study.yaml"), "--trials", "2"]) == 0  # trial 0 completed before
    out = capsys.readouterr().out
    pruned = [line for line in out.splitlines() if "PRUNED" in line]
    trials = stored_trials()[1:]
    assert [t.state.name for t in trials] == ["PRUNED", "PRUNED"] and len(pruned) == 2
    for line, t in zip(pruned, trials):
        ua = t.user_attrs
        assert line.endswith(f"PRUNED: {ua['prune_reason']} | {ua['student']} {ua['method']} {ua['chain']}"), line
    assert [line.split("]")[0].split("[")[1].split()[0] for line in pruned] == ["1/2", "2/2"]
