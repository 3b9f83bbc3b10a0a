"""The peer benchmark (benchmarks/vs_torchdistill.py) compares like with like: its torchdistill configuration
trains a student exactly as kdnas's engine does, so the speed ratio it prints is the engines' difference alone."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import vs_torchdistill as peer
from kdnas.data import DataConfig, load_split
from kdnas.train import TrainRecipe, accuracy, fit


def _mlp(hidden: int) -> nn.Module:
    # Flat layers: kdnas trains convolutions in channels-last layout on CPU, whose float rounding differs from
    # torchdistill's; with only 2-d weights both sides compute the same numbers, so they must agree closely.
    # BatchNorm and biases are there because kdnas exempts them from weight decay.
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, 10))


def test_torchdistill_side_trains_the_student_as_the_kdnas_engine_does():
    split = load_split(DataConfig("digits"))
    torch.manual_seed(0)
    teacher = _mlp(64)
    fit(teacher, split.train, TrainRecipe(epochs=5, lr=0.1), lambda out, b: F.cross_entropy(out, b.y), seed=0)
    teacher.eval().requires_grad_(False)
    with torch.no_grad():
        table = teacher(split.train.x)  # kdnas's per-study logit table, here without BatchNorm folding
    # One epoch: after it, torch's RandomSampler draws a permutation more than kdnas does (one it throws away), so
    # later epochs see other batches. Its 17 steps run the whole cosine schedule down, which is compared too.
    recipe = TrainRecipe(epochs=1, batch_size=64, lr=0.1)
    students = []
    for train in (lambda s: peer.kdnas_kd(s, teacher, table, split.train, recipe, seed=3),
                  lambda s: peer.torchdistill_kd(s, teacher, split.train, recipe, seed=3)):
        torch.manual_seed(1)
        students.append(_mlp(32))
        train(students[-1])
    ours, theirs = (s.state_dict() for s in students)
    for key, value in ours.items():  # the loss weighting, optimiser groups, schedule and batch order all agree
        torch.testing.assert_close(theirs[key], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")
    assert accuracy(students[0], split.val) > 0.5  # and it really learnt something: not two untrained copies
    assert not any(p.requires_grad for p in teacher.parameters())  # the shared teacher stays frozen
