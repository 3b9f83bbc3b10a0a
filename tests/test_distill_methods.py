"""The contract every distillation method meets, run over every registered method on tiny digits models.

A new method joins with three lines (a subclass naming it); the last test fails until it does.
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar

from types import SimpleNamespace

import pytest
import torch

from kdnas.data import DataConfig, TensorSource, load_split
from kdnas.distill import METHODS, make_loss
from kdnas.models import build, make_spec
from kdnas.train import Batch, TrainRecipe, fit

# A 2-stage student under a 3-stage teacher of another family: stage pairing and adapters both have work.
STUDENT = make_spec({"family": "plain_cnn", "channels": [8, 8, 16, 16]})
TEACHER = make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.5})
N_TRAIN = 256


@pytest.fixture(scope="module")
def digits():
    s = load_split(DataConfig("digits"))
    return SimpleNamespace(train_x=s.train.x, train_y=s.train.y, input_shape=s.input_shape)


@pytest.fixture(scope="module")
def trained_teacher(digits):
    torch.manual_seed(0)
    teacher = build(TEACHER, digits.input_shape, 10)
    fit(teacher, TensorSource(digits.train_x[:N_TRAIN], digits.train_y[:N_TRAIN]), TrainRecipe(epochs=1, lr=0.1),
        lambda o, b: torch.nn.functional.cross_entropy(o, b.y), 0)
    return teacher.eval()


def violating(hyper) -> float:
    """A value outside the hyperparameter's rule."""
    if hyper.low is not None:
        return hyper.low - 1
    return hyper.high + 1


class MethodContract:
    method: ClassVar[str]

    def train(self, digits, teacher, epochs: int = 2, seed: int = 0, precision: str = "fp32"):
        torch.manual_seed(seed)
        student = build(STUDENT, digits.input_shape, 10)
        x, y = digits.train_x[:N_TRAIN], digits.train_y[:N_TRAIN]
        with make_loss((self.method, {}), student, teacher, x) as (loss_fn, adapters):
            history = fit(student, TensorSource(x, y), TrainRecipe(epochs=epochs, lr=0.1), loss_fn, seed, extra=adapters,
                          precision=precision)
        return student, adapters, history

    def test_defaults_satisfy_their_own_rules(self) -> None:
        m = METHODS.get(self.method)
        problems = []
        m.check({k: h.default for k, h in m.hyperparameters.items()}, lambda k, msg: problems.append(msg))
        assert problems == []
        assert all(h.why for h in m.hyperparameters.values()), "every default states its reason"

    def test_a_value_outside_its_rule_is_reported_with_the_rule_and_the_value(self) -> None:
        m = METHODS.get(self.method)
        for name, hyper in m.hyperparameters.items():
            problems = []
            bad = violating(hyper)
            m.check({name: bad}, lambda k, msg: problems.append((k, msg)))
            assert problems == [(name, f"{hyper.rule(name)} must hold, but got {name}={bad}")]
        problems = []
        m.check({"gamma_ray": 1.0}, lambda k, msg: problems.append(msg))
        assert problems and "unknown hyperparameter" in problems[0]

    def test_trains_a_digits_student_two_epochs_without_nan(self, digits, trained_teacher) -> None:
        student, _, history = self.train(digits, trained_teacher)
        assert len(history) == 2 and all(math.isfinite(v) for v in history)
        assert all(torch.isfinite(p).all() for p in student.parameters())

    @pytest.mark.parametrize("precision", ["bf16", "fp16"])
    def test_trains_under_mixed_precision_with_float32_weights(self, digits, trained_teacher, precision) -> None:
        # Autocast on the CPU runs the same code paths as on a GPU (the dtypes, the fp16 gradient scaler): a method
        # whose loss mixes a half-precision student output with a float32 buffer (CRD's memory, a teacher's
        # table) fails here, not on the user's GPU.
        student, adapters, history = self.train(digits, trained_teacher, epochs=1, precision=precision)
        _, _, exact = self.train(digits, trained_teacher, epochs=1)
        assert math.isfinite(history[0]) and history != exact, "autocast must change the arithmetic"
        for module in (student, adapters):
            for name, p in (module.named_parameters() if module is not None else []):
                assert p.dtype == torch.float32 and torch.isfinite(p).all(), name

    def test_gradients_reach_student_and_adapters_never_the_teacher(self, digits, trained_teacher) -> None:
        teacher = copy.deepcopy(trained_teacher).requires_grad_(True)  # frozen by make_loss's no_grad, not by us
        torch.manual_seed(0)
        student = build(STUDENT, digits.input_shape, 10)
        x, y, idx = digits.train_x[:32], digits.train_y[:32], torch.arange(32)
        with make_loss((self.method, {}), student, teacher, digits.train_x[:N_TRAIN]) as (loss_fn, adapters):
            loss_fn(student(x), Batch(x, y, idx, 0.5)).backward()
        for name, p in student.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if adapters is not None:
            for name, p in adapters.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, f"adapter {name} gets no gradient"
        assert all(p.grad is None for p in teacher.parameters())

    def test_alpha_weighs_labels_against_the_distillation_term(self, digits, trained_teacher) -> None:
        x, y, idx = digits.train_x[:32], digits.train_y[:32], torch.arange(32)

        def loss_and_grad(hp: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            torch.manual_seed(0)
            student = build(STUDENT, digits.input_shape, 10)
            with make_loss((self.method, hp), student, trained_teacher, digits.train_x[:N_TRAIN]) as kd:
                logits = student(x)
                loss = kd[0](logits, Batch(x, y, idx, 0.5))
            ce = torch.nn.functional.cross_entropy(logits, y)
            loss.backward()
            return loss.detach(), ce.detach(), torch.cat([p.grad.flatten() for p in student.parameters()])

        if "alpha" not in METHODS.get(self.method).hyperparameters:
            loss, ce, _ = loss_and_grad({})
            assert loss == ce  # `none`: the label loss alone
            return
        loss0, ce0, g0 = loss_and_grad({"alpha": 0.0})
        assert loss0 == ce0
        _, _, g1 = loss_and_grad({"alpha": 0.9})
        assert not torch.allclose(g0, g1), "the distillation term must contribute to the gradient"

    def test_leaves_no_trace_on_student_or_teacher(self, digits, trained_teacher) -> None:
        teacher_state = copy.deepcopy(trained_teacher.state_dict())
        fresh = build(STUDENT, digits.input_shape, 10)
        student, adapters, _ = self.train(digits, trained_teacher, epochs=1)
        assert student.state_dict().keys() == fresh.state_dict().keys(), "adapters must stay out of the student"
        for model in (student, trained_teacher):
            assert all(not m._forward_hooks for m in model.modules()), "every hook is removed on exit"
        assert not trained_teacher.training
        for k, v in trained_teacher.state_dict().items():  # BatchNorm statistics included
            torch.testing.assert_close(v, teacher_state[k])

    def test_two_seeded_runs_are_identical(self, digits, trained_teacher) -> None:
        (s1, _, h1), (s2, _, h2) = self.train(digits, trained_teacher, 1, 3), self.train(digits, trained_teacher, 1, 3)
        assert h1 == h2
        for (k, a), b in zip(s1.state_dict().items(), s2.state_dict().values()):
            torch.testing.assert_close(a, b, msg=k)


class TestNone(MethodContract):
    method = "none"


class TestHinton(MethodContract):
    method = "hinton"


class TestDKD(MethodContract):
    method = "dkd"


class TestFitNets(MethodContract):
    method = "fitnet"


class TestAttentionTransfer(MethodContract):
    method = "at"


class TestSimilarityPreserving(MethodContract):
    method = "sp"


class TestRelationalKD(MethodContract):
    method = "rkd"


class TestPKT(MethodContract):
    method = "pkt"


class TestCRD(MethodContract):
    method = "crd"


def test_every_registered_method_runs_the_contract() -> None:
    assert sorted(c.method for c in MethodContract.__subclasses__()) == METHODS.names()
