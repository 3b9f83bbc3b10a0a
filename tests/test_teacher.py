"""The teacher: trained once per content key, reproducibly, whatever ran before it."""

from __future__ import annotations

from pathlib import Path

import torch

from kdnas.config import load_study
from kdnas.core import ArtifactStore
from kdnas.data import DataConfig, load_split
from kdnas.study import get_teacher
from kdnas.study._teacher import teacher_key


def test_teacher_is_reproducible_regardless_of_global_rng(tiny_study: Path, tmp_path: Path) -> None:
    cfg = load_study(tiny_study)
    split = load_split(DataConfig("digits"))
    torch.manual_seed(123)
    a, info_a = get_teacher(cfg, split, ArtifactStore(tmp_path / "a"), torch.device("cpu"))
    torch.rand(1000)  # disturb the global generator: the teacher must not depend on it
    b, info_b = get_teacher(cfg, split, ArtifactStore(tmp_path / "b"), torch.device("cpu"))
    assert info_a["trained_now"] and info_b["trained_now"]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)
    assert info_a["val_accuracy"] == info_b["val_accuracy"]
    assert all(not p.requires_grad for p in a.parameters()) and not a.training


def test_teacher_key_covers_what_determines_it(tiny_study: Path) -> None:
    split = load_split(DataConfig("digits"))
    base = teacher_key(load_study(tiny_study), split)
    assert teacher_key(load_study(tiny_study, {"seed": 5}), split) == base  # the search seed is not the teacher's
    assert teacher_key(load_study(tiny_study), load_split(DataConfig("digits", seed=1))) != base
    changed = load_study(tiny_study, {"teacher": {"arch": {"family": "resnet_cifar", "depth": 8, "width": 0.5},
                                                  "seed": 1}})
    assert teacher_key(changed, split) != base


def test_teacher_accuracy_is_evaluated_once_per_teacher_and_split(tiny_study: Path, tmp_path: Path, monkeypatch) -> None:
    import kdnas.study._teacher as teacher_module

    cfg = load_study(tiny_study)
    store = ArtifactStore(tmp_path / "store")
    split = load_split(DataConfig("digits"))
    _, first = get_teacher(cfg, split, store, torch.device("cpu"))
    calls = []
    real = teacher_module.accuracy
    monkeypatch.setattr(teacher_module, "accuracy", lambda *a: calls.append(1) or real(*a))
    _, again = get_teacher(cfg, split, store, torch.device("cpu"))  # a later command, or another worker
    assert not again["trained_now"] and calls == []
    assert (again["val_accuracy"], again["test_accuracy"]) == (first["val_accuracy"], first["test_accuracy"])
    # Another split of the same data is another evaluation (and another teacher).
    get_teacher(cfg, load_split(DataConfig("digits", seed=1)), store, torch.device("cpu"))
    assert len(calls) == 2
    # A damaged record is recomputed, not fatal.
    for path in (store.root / "teacher_eval").glob("*.json"):
        path.write_text("{not json")
    _, repaired = get_teacher(cfg, split, store, torch.device("cpu"))
    assert repaired["val_accuracy"] == first["val_accuracy"] and len(calls) == 4
