"""Teacher-assistant chains: screening, the guided loss, assistant identity, and a chain study end to end."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch
import torch.nn.functional as F

from kdnas.cli import main
from kdnas.config import Candidate, Limits, screen
from kdnas.distill import Chain, Guide, MethodSpec, TeacherLogits, guided_loss, hinton_kd_term
from kdnas.models import make_spec
from kdnas.train import Batch

W = {w: make_spec({"family": "resnet_cifar", "depth": 8, "width": w}) for w in (0.25, 0.5, 0.75, 1.0)}
SIZES = {W[0.25]: 4_934, W[0.5]: 19_074, W[0.75]: 42_430, W[1.0]: 75_002}
HINTON = MethodSpec("hinton", {"temperature": 4.0, "alpha": 0.9})


def counts(spec):
    return SIZES[spec], 10 * SIZES[spec]


def cand(*assistants, mode="takd", student=0.25):
    return Candidate(W[student], HINTON, Chain(mode, tuple(W[a] for a in assistants)))


def test_screen_orders_the_chain_by_capacity() -> None:
    s = screen(cand(0.5, 0.75), Limits(), counts, teacher_params=75_002)
    assert s.ok and s.candidate.chain.assistants == (W[0.75], W[0.5])
    assert s.constraints == {"max_params": 0.0, "max_macs": 0.0, "chain_order": 0.0}


@pytest.mark.parametrize("assistants,student,why", [
    ((0.5, 0.5), 0.25, "resnet_cifar(depth=8,width=0.5) (19,074) > resnet_cifar(depth=8,width=0.5) (19,074)"),
    ((1.0,), 0.25, "teacher (75,002) > resnet_cifar(depth=8,width=1.0) (75,002)"),
    ((0.5,), 0.75, "resnet_cifar(depth=8,width=0.5) (19,074) > student (42,430)"),
])
def test_screen_rejects_chains_not_strictly_decreasing(assistants, student, why) -> None:
    s = screen(cand(*assistants, student=student), Limits(), counts, teacher_params=75_002)
    assert not s.ok and "not ordered by capacity" in s.reason and why in s.reason
    assert s.constraints["chain_order"] > 0


def test_screen_applies_limits_and_allows_direct_kd_of_any_size() -> None:
    s = screen(cand(student=1.0), Limits(max_params=20_000, max_macs=10 ** 9), counts, teacher_params=19_074)
    assert not s.ok and s.reason == "student has 75,002 params, over limits.max_params=20,000"
    assert s.constraints["max_params"] == 55_002 and s.constraints["chain_order"] == 0
    assert screen(cand(student=1.0), Limits(), counts, teacher_params=19_074).ok  # born-again: no chain to order


def _guides(n: int) -> list[Guide]:
    g = torch.Generator().manual_seed(0)
    return [Guide(f"g{i}", f"k{i}", torch.nn.Linear(5, 5), TeacherLogits(torch.nn.Linear(5, 5), torch.randn(8, 5, generator=g)), {})
            for i in range(n)]


def _hinton(logits, teacher_logits, y):
    a, t = HINTON.hyperparameters["alpha"], HINTON.hyperparameters["temperature"]
    return (1 - a) * F.cross_entropy(logits, y) + a * hinton_kd_term(logits, teacher_logits, t)


STUDENT = torch.nn.Linear(3, 5)
TRAIN_X = torch.zeros(8, 3)


def test_guided_loss_one_guide_is_the_method_and_several_are_the_mean() -> None:
    logits, y, idx = torch.randn(4, 5), torch.randint(0, 5, (4,)), torch.tensor([0, 2, 4, 6])
    batch = Batch(TRAIN_X[idx], y, idx, 0.0)
    guides = _guides(3)
    with guided_loss(HINTON, STUDENT, guides[:1], TRAIN_X, 0.5, seed=0) as (loss_fn, adapters):
        torch.testing.assert_close(loss_fn(logits, batch), _hinton(logits, guides[0].logits.table[idx], y))
        assert adapters is None
    with guided_loss(HINTON, STUDENT, guides, TRAIN_X, 0.0, seed=0) as (loss_fn, _):
        expected = torch.stack([_hinton(logits, g.logits.table[idx], y) for g in guides]).mean()
        torch.testing.assert_close(loss_fn(logits, batch), expected)


def test_dgkd_drops_are_seeded_and_keep_at_least_one_guide() -> None:
    logits, batch = torch.randn(2, 5), Batch(TRAIN_X[:2], torch.tensor([1, 2]), torch.tensor([0, 1]), 0.0)
    with guided_loss(HINTON, STUDENT, _guides(3), TRAIN_X, 0.9, seed=7) as (a, _), \
            guided_loss(HINTON, STUDENT, _guides(3), TRAIN_X, 0.9, seed=7) as (b, _):
        values = [a(logits, batch) for _ in range(30)]
        assert values == [b(logits, batch) for _ in range(30)]
    assert all(torch.isfinite(v) for v in values) and len({float(v) for v in values}) > 1


def test_feature_method_through_a_dgkd_chain_trains_adapters_per_guide(tiny_study) -> None:
    from kdnas.data import DataConfig, TensorSource, load_split
    from kdnas.models import build
    from kdnas.train import TrainRecipe, fit, predict

    split = load_split(DataConfig("digits"))
    x, y = split.train.x[:128], split.train.y[:128]
    train = TensorSource(x, y)
    guides = []
    for w in (1.0, 0.5):
        m = build(W[w], split.input_shape, 10).eval()
        guides.append(Guide(str(w), str(w), m, TeacherLogits(m, predict(m, train)), {}))
    student = build(W[0.25], split.input_shape, 10)
    fitnet = MethodSpec("fitnet", {})
    with guided_loss(fitnet, student, guides, train, 0.5, seed=0) as (loss_fn, adapters):
        assert adapters is not None and len(adapters) == 2  # one regressor per guide
        before = [p.detach().clone() for p in adapters.parameters()]
        hist = fit(student, train, TrainRecipe(epochs=2, batch_size=32), loss_fn, 0, extra=adapters)
    assert all(torch.isfinite(torch.tensor(hist)))
    assert any(not torch.equal(b, p) for b, p in zip(before, adapters.parameters()))
    assert all(p.grad is None or not p.requires_grad for g in guides for p in g.model.parameters())


CHAIN_SPACE = """\
students:
  resnet_cifar: {depth: 8, width: {type: categorical, choices: [0.25, 0.5]}}
methods:
  hinton: {temperature: {type: float, low: 2.0, high: 4.0}, alpha: {type: float, low: 0.5, high: 0.9}}
chain:
  max_assistants: 2
  modes: [takd, dgkd]
  assistants:
    resnet_cifar: {depth: 8, width: {type: categorical, choices: [0.5, 0.75]}}
"""


def test_chain_study_trains_each_assistant_once(tiny_study: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "space.yaml").write_text(CHAIN_SPACE)
    tiny_study.write_text(tiny_study.read_text().replace("width: 0.5}", "width: 1.0}")
                          + "assistants:\n  train: {epochs: 1, lr: 0.1}\n")
    hp = {"student.resnet_cifar.width": 0.25, "method.hinton.temperature": 3.0, "method.hinton.alpha": 0.8}
    plans = [
        {"chain.length": 0},
        {"chain.length": 1, "chain.mode": "takd", "chain.0.resnet_cifar.width": 0.5},  # A = 0.5 <- T
        {"chain.length": 2, "chain.mode": "takd", "chain.0.resnet_cifar.width": 0.5,
         "chain.1.resnet_cifar.width": 0.75},  # sorted: B = 0.75 <- T, then C = 0.5 <- B
        {"chain.length": 2, "chain.mode": "dgkd", "chain.0.resnet_cifar.width": 0.75,
         "chain.1.resnet_cifar.width": 0.5},  # B again, then D = 0.5 <- {T, B}
        {"chain.length": 1, "chain.mode": "dgkd", "chain.0.resnet_cifar.width": 0.5},  # A again (one guide)
        {"chain.length": 2, "chain.mode": "takd", "chain.0.resnet_cifar.width": 0.5,
         "chain.1.resnet_cifar.width": 0.5},  # not strictly ordered: rejected before training
    ]
    (tmp_path / "runs/tiny").mkdir(parents=True)
    study = optuna.create_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db",
                                directions=["maximize", "minimize", "minimize"])
    for plan in plans:
        study.enqueue_trial({**hp, **plan})
    assert main(["search", str(tiny_study), "--trials", str(len(plans))]) == 0
    trials = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5 + ["PRUNED"]
    assert [t.user_attrs["chain_length"] for t in trials[:5]] == [0, 1, 2, 2, 1]
    assert "not ordered by capacity" in trials[5].user_attrs["prune_reason"]
    assert trials[5].constraints["chain_order"] > 0 and "assistants" not in trials[5].user_attrs

    records = [r for t in trials[:5] for r in t.user_attrs["assistants"]]
    keys = {r["key"] for r in records}
    assert len(keys) == 4, "A, B, C (takd), D (dgkd)"
    for key in keys:
        assert sum(r["trained_now"] for r in records if r["key"] == key) == 1, "each assistant trained exactly once"
    assert len(list((tmp_path / "runs/tiny/artifacts/assistants").glob("*.pt"))) == 4
    # Chains are stored largest first, and takd/dgkd share the first assistant (both learn from the teacher alone).
    assert [r["spec"]["width"] for r in trials[2].user_attrs["assistants"]] == [0.75, 0.5]
    assert trials[2].user_attrs["assistants"][0]["key"] == trials[3].user_attrs["assistants"][0]["key"]
    assert trials[2].user_attrs["assistants"][1]["key"] != trials[3].user_attrs["assistants"][1]["key"]
    assert trials[4].user_attrs["assistants"][0]["key"] == trials[1].user_attrs["assistants"][0]["key"]

    # A second run reuses every stored assistant.
    study.enqueue_trial({**hp, **plans[3]})
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0
    last = optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db").trials[-1]
    assert last.state.name == "COMPLETE" and not any(r["trained_now"] for r in last.user_attrs["assistants"])
    summary = (tmp_path / "reports/tiny/summary.md").read_text()
    assert "## Pruned or rejected trials" in summary and "dgkd[" in (tmp_path / "reports/tiny/trials.csv").read_text()
