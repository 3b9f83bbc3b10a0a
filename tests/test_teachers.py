"""Several teachers in one study (issue #27): each trained once for the study, sampled per trial, ensembles
distilled from the mean of their members' softened outputs, and every trial's teacher recorded and exported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F

from kdnas.cli import main
from kdnas.config import Candidate, load_study, sample_candidates
from kdnas.config._explore import Target
from kdnas.core import ConfigError
from kdnas.data import TensorSource
from kdnas.distill import Guide, MethodSpec, TeacherLogits, ensemble_guide, guided_loss
from kdnas.models import build, make_spec
from kdnas.train import Batch
from tests._util import DIGITS, REPO

SPACE = """\
students:
  plain_cnn: {channels: {type: categorical, choices: [[4, 8], [8, 8]]}, pool_every: 1}
methods:
  hinton: {temperature: 4.0, alpha: 0.9}
teachers: [[narrow, wide], cnn]
"""

STUDY = f"""\
name: three
seed: 0
threads: 1
data: {DIGITS}
teachers:
  wide: {{arch: {{family: plain_cnn, channels: [32, 32], pool_every: 1}}, train: {{epochs: 2, lr: 0.1}}}}
  narrow: {{arch: {{family: plain_cnn, channels: [16, 16], pool_every: 1}}, train: {{epochs: 2, lr: 0.1}}}}
  cnn: {{arch: {{family: plain_cnn, channels: [16, 32], pool_every: 1}}, train: {{epochs: 3, lr: 0.1}}}}
student:
  train: {{epochs: 1, lr: 0.1}}
search:
  space: space.yaml
  trials: 3
  sampler: random
objectives: [accuracy, params, latency]
costs: {{latency: {{min_seconds: 0.05, max_seconds: 0.3, background: false}}}}
"""

TRAINED = re.compile(r"training teacher (\w+) ")


def _write(folder: Path, study: str = STUDY, space: str = SPACE) -> Path:
    (folder / "space.yaml").write_text(space)
    (folder / "study.yaml").write_text(study)
    return folder / "study.yaml"


def _kdnas(folder: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "kdnas.cli", *args], cwd=folder, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> tuple[Path, str]:
    """Two `kdnas search` commands started together on one study of three teachers, one of them with 2 workers
    (as two machines sharing a run folder would)."""
    folder = tmp_path_factory.mktemp("three")
    study = _write(folder)
    procs = [_kdnas(folder, "search", str(study), *args) for args in (["--trials", "4", "--workers", "2"],
                                                                       ["--trials", "2"])]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    return folder, "\n".join(outs)


@pytest.mark.slow  # two `kdnas search` commands at once, one with 2 workers: ~20 s
def test_each_teacher_is_trained_once_for_the_study(searched) -> None:
    folder, out = searched
    assert sorted(TRAINED.findall(out)) == ["cnn", "narrow", "wide"], out  # once each, by either command
    assert len(list((folder / "runs/three/artifacts/teachers").glob("*.pt"))) == 3
    assert "ensemble narrow+wide" not in out and "ensemble wide+narrow (mean of its members' softened outputs)" in out


@pytest.mark.slow  # two `kdnas search` commands at once, one with 2 workers: ~20 s
def test_every_trial_records_its_teacher_and_exports_it(searched) -> None:
    folder, _ = searched
    study = optuna.load_study(study_name="three", storage=f"sqlite:///{folder}/runs/three/study.db")
    choices = study.user_attrs["teachers"]
    assert list(choices) == ["wide+narrow", "cnn", "wide", "narrow"]  # the choices, then the members
    assert choices["wide+narrow"]["members"] == ["wide", "narrow"]
    assert choices["wide+narrow"]["params"] == choices["wide"]["params"] + choices["narrow"]["params"]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 6
    for t in done:
        ua = t.user_attrs
        label = ua["teacher_name"]
        assert ua["candidate"]["teacher"] == label and ua["teacher"] == choices[label]["identity"]
        figures = ua["distillation"]
        assert figures["retained"] == pytest.approx(ua["val_accuracy"] / choices[label]["val_accuracy"])
        assert figures["compression_params"] == pytest.approx(choices[label]["params"] / ua["params"])
    by_label = {t.user_attrs["teacher_name"]: t for t in done}
    assert set(by_label) == {"wide+narrow", "cnn"}
    for label, t in by_label.items():
        out = folder / f"bundle-{t.number}"
        assert main(["export", str(folder / "study.yaml"), "--trial", str(t.number), "--out", str(out)]) == 0
        teacher = __import__("json").loads((out / "recipe.json").read_text())["teacher"]
        assert teacher["name"] == label and teacher["identity"] == choices[label]["identity"]
        names = sorted(p.name for p in (out / "guides").iterdir())
        assert names == (["teacher-narrow.pt", "teacher-wide.pt"] if label == "wide+narrow" else ["teacher.pt"])
    # The ensemble's bundle trains on its own: its members rebuilt from guides/, distilled as one.
    assert main(["train", str(folder / f"bundle-{by_label['wide+narrow'].number}"), "--epochs", "1"]) == 0


@pytest.mark.slow  # two `kdnas search` commands at once, one with 2 workers: ~20 s
def test_a_changed_teacher_refuses_to_resume(searched, capsys) -> None:
    folder, _ = searched
    changed = folder / "changed.yaml"
    changed.write_text(STUDY.replace("train: {epochs: 3, lr: 0.1}}", "train: {epochs: 4, lr: 0.1}}", 1))
    assert main(["search", str(changed), "--trials", "1"]) == 2
    assert "teachers.cnn.train.epochs" in capsys.readouterr().err


def _ensemble_case():
    torch.manual_seed(0)
    student = build(make_spec({"family": "plain_cnn", "channels": [4, 4], "pool_every": 1}), (1, 8, 8), 3)
    teachers = [build(make_spec({"family": "plain_cnn", "channels": [c, c], "pool_every": 1}), (1, 8, 8), 3).eval()
                for c in (6, 8)]
    x, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    tables = [torch.randn(5, 3) * 3, torch.randn(5, 3)]
    members = [Guide(f"t{i}", f"k{i}", m, TeacherLogits(m, tab), {}) for i, (m, tab) in enumerate(zip(teachers, tables))]
    batch = Batch(x, y, torch.arange(5), 0.5)
    return student, members, TensorSource(x, y), batch, tables


def test_ensemble_loss_matches_a_hand_computation() -> None:
    student, members, train, batch, (z1, z2) = _ensemble_case()
    s = torch.randn(5, 3)
    t, alpha = 3.0, 0.7
    with guided_loss(MethodSpec("hinton", {"temperature": t, "alpha": alpha}), student,
                     [ensemble_guide("t0+t1", "e", members, {})], train, 0.5, 0) as (loss_fn, _):
        got = loss_fn(s, batch)
    # By hand: the mean of the two softened distributions, then Hinton's T^2 KL to the student's.
    p = (torch.softmax(z1 / t, 1) + torch.softmax(z2 / t, 1)) / 2
    q = torch.log_softmax(s / t, 1)
    kd = (p * (p.log() - q)).sum(1).mean() * t * t
    torch.testing.assert_close(got, (1 - alpha) * F.cross_entropy(s, batch.y) + alpha * kd)


def test_ensemble_feature_term_is_the_mean_of_its_members_terms() -> None:
    student, members, train, batch, _ = _ensemble_case()
    method = MethodSpec("at", {})

    def loss(guides):
        with guided_loss(method, student, guides, train, 0.0, 0) as (loss_fn, _):
            return loss_fn(student(batch.x), batch)

    each = [loss([m]) for m in members]
    torch.testing.assert_close(loss([ensemble_guide("t0+t1", "e", members, {})]), (each[0] + each[1]) / 2)


def test_chains_are_screened_against_the_trials_own_teacher(tmp_path: Path) -> None:
    space = SPACE.replace("teachers: [[narrow, wide], cnn]", "teachers: [narrow, [narrow, wide]]") + """\
chain:
  max_assistants: 1
  assistants:
    plain_cnn: {channels: {type: categorical, choices: [[24, 24]]}, pool_every: 1}
"""
    cfg = load_study(_write(tmp_path, space=space))
    target = Target((1, 8, 8), 10, cfg.teacher_spec, {n: d.spec for n, d in cfg.teacher_set.items()})
    drawn = sample_candidates(cfg.space, target, 12, seed=0)
    chained = {c["teacher"] for c in drawn if c["chain"]["assistants"]}
    # The assistant (5,746 params) is larger than `narrow` (2,682) alone: only the ensemble (12,644) may take it.
    assert chained == {"narrow+wide"} or chained == {"wide+narrow"}
    assert any(c["teacher"] == "narrow" for c in drawn)


def test_candidates_of_different_teachers_are_different_candidates() -> None:
    from kdnas.candidates import candidate_key

    base = Candidate(make_spec({"family": "plain_cnn", "channels": [4, 8]}), MethodSpec("hinton", {}))
    assert "teacher" not in base.to_dict()  # a one-teacher study's keys stay as they were
    keys = {candidate_key(Candidate(base.student, base.method, teacher=t).to_dict(), {}) for t in (None, "a", "a+b")}
    assert len(keys) == 3


@pytest.mark.parametrize("study_edit, space_edit, where", [
    (lambda s: s.replace("teachers:\n", "teacher: {arch: {family: resnet_cifar, depth: 8}}\nteachers:\n"), None,
     "study.yaml: teachers: declare one `teacher` or several `teachers`, not both"),
    (None, lambda s: s.replace("[[narrow, wide], cnn]", "[[narrow, wide], vgg]"),
     "space.yaml: teachers[1]: unknown teacher 'vgg'; the study file declares: wide, narrow, cnn"),
    (None, lambda s: s.replace("[[narrow, wide], cnn]", "[[narrow, narrow]]"), "space.yaml: teachers[0]: an ensemble"),
    (None, lambda s: s.replace("[[narrow, wide], cnn]", "[[wide, narrow], [narrow, wide]]"),
     "space.yaml: teachers[1]: lists the choice 'wide+narrow' twice"),
    (lambda s: s.replace("  cnn: {", "  a+b: {"), None, "study.yaml: teachers.a+b: a teacher's name must"),
    (lambda s: re.sub(r"teachers:\n(  .*\n)+", "teacher: {arch: {family: resnet_cifar, depth: 8}}\n", s), None,
     "space.yaml: teachers: the study file declares one `teacher`"),
])
def test_bad_teacher_declarations_are_one_clear_error(tmp_path: Path, capsys, study_edit, space_edit, where) -> None:
    path = _write(tmp_path, (study_edit or (lambda s: s))(STUDY), (space_edit or (lambda s: s))(SPACE))
    with pytest.raises(ConfigError):
        load_study(path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert where in err and "Traceback" not in err
