"""Teacher logits: one table per study, reused by every trial and every later run; per batch with augmentation.
Budgets: epochs per trial, trial count, the study's wall clock, threads."""

from __future__ import annotations

from pathlib import Path

import optuna
import torch

from kdnas.cli import main
from kdnas.config import load_study
from kdnas.core import ArtifactStore
from kdnas.data import Augment, DataConfig, TensorSource, load_split
from kdnas.distill import teacher_logits
from kdnas.distill._teacher_logits import KIND
from kdnas.models import build, make_spec
from kdnas.train import Batch, TrainRecipe, fit, predict


def tables(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "runs/tiny/artifacts" / KIND).glob("*.pt"))


def test_logit_table_is_computed_once_per_study_and_reused(tiny_study: Path, tmp_path: Path, capsys) -> None:
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0
    assert "its logits come from a per-study table" in capsys.readouterr().out
    (table,) = tables(tmp_path)
    mtime = table.stat().st_mtime_ns
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0  # a later run of the same study
    assert tables(tmp_path) == [table] and table.stat().st_mtime_ns == mtime, "the stored table must be reused"
    # Budgets: one trial per run (--trials 1), one epoch each (student.train.epochs), the study's threads.
    trials = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db").trials
    assert len(trials) == 2 and all(len(t.user_attrs["loss_history"]) == 1 for t in trials)
    assert torch.get_num_threads() == 1

    # The table holds the teacher's eval-mode logits on the training split, in index order.
    cfg = load_study(tiny_study)
    split = load_split(cfg.data, "cpu", cfg.path)
    study = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db")
    teacher = build(cfg.teacher_spec, split.input_shape, split.num_classes)
    store = ArtifactStore(tmp_path / "runs/tiny/artifacts")
    teacher.load_state_dict(store.get_state_dict("teachers", study.user_attrs["teacher"]["cache_key"]))
    stored = torch.load(table, weights_only=True)["logits"]
    torch.testing.assert_close(stored, predict(teacher, split.train))


def test_random_augmentation_runs_the_teacher_on_the_student_batch(tiny_study: Path, tmp_path: Path, capsys) -> None:
    tiny_study.write_text(tiny_study.read_text().replace(
        "student:\n  train: {epochs: 1, lr: 0.1}", "student:\n  train: {epochs: 1, lr: 0.1, augment: {random_crop: 1}}"))
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0
    assert "its logits are computed per batch (random augmentation)" in capsys.readouterr().out
    assert tables(tmp_path) == []

    # What a loss receives is the teacher's output on exactly the augmented batch the student trains on.
    split = load_split(DataConfig("digits"))
    torch.manual_seed(0)
    teacher = build(make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.25}), (1, 8, 8), 10).eval()
    logits = teacher_logits(teacher, "t", split, ArtifactStore(tmp_path / "a"), random_augment=True)
    assert not logits.cached
    seen = []

    def loss(out, batch: Batch):
        t = logits(batch)
        with torch.no_grad():
            seen.append(torch.equal(t, teacher(batch.x)) and not torch.equal(batch.x, split.train.x[batch.idx]))
        return torch.nn.functional.cross_entropy(out, batch.y)

    student = build(make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.25}), (1, 8, 8), 10)
    fit(student, TensorSource(split.train.x[:64], split.train.y[:64]), TrainRecipe(epochs=1, batch_size=32,
        augment=Augment(random_crop=1, horizontal_flip=True)), loss, seed=0)
    assert seen == [True, True]


def test_timeout_counts_from_the_start_of_the_command(tiny_study: Path, tmp_path: Path, capsys) -> None:
    # Data, teacher training and its logits take far longer than 1 ms: no trial may start.
    assert main(["search", str(tiny_study), "--timeout", "0.001"]) == 1
    assert "timeout of 0.001s reached before the first trial started" in capsys.readouterr().out
    assert optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db").trials == []
