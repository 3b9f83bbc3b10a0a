"""Features through forward hooks, stage pairing, shape probing, and how ``make_loss`` uses the teacher."""

from __future__ import annotations

import contextlib

import pytest
import torch

from kdnas.core import KdnasError
from kdnas.distill import FeatureTap, make_loss, pair_stages, probe_shapes
from kdnas.models import build, make_spec
from kdnas.train import Batch

FAMILIES = [
    {"family": "resnet_cifar", "depth": 8, "width": 0.25},
    {"family": "plain_cnn", "channels": [4, 4, 8, 8, 8], "pool_every": 2},
    {"family": "mobilenetv2", "width": 0.25, "blocks": [1, 1, 1]},
]
SHAPE = (1, 8, 8)


def stages(n: int) -> list[str]:
    return [f"stage{i}" for i in range(1, n + 1)]


@pytest.mark.parametrize("n,m,expected", [
    (3, 3, [(1, 1), (2, 2), (3, 3)]),
    (2, 3, [(1, 2), (2, 3)]),
    (3, 2, [(2, 1), (3, 2)]),
    (1, 4, [(1, 4)]),
    (4, 7, [(1, 2), (2, 4), (3, 5), (4, 7)]),
])
def test_stages_pair_at_equal_relative_depth(n: int, m: int, expected: list[tuple[int, int]]) -> None:
    got = pair_stages(stages(n), stages(m))
    assert got == [(f"stage{a}", f"stage{b}") for a, b in expected]


@pytest.mark.parametrize("arch", FAMILIES, ids=lambda a: a["family"])
def test_probed_shapes_match_a_real_forward_pass(arch: dict) -> None:
    model = build(make_spec(arch), SHAPE, 10)
    names = list(model.feature_modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # BatchNorm in training mode: the probe must not touch its statistics
    probed = probe_shapes(model, names, SHAPE)
    with FeatureTap(model, names) as tap, torch.no_grad():
        model.eval()(torch.randn(3, *SHAPE))
        real = [tuple(t.shape[1:]) for t in tap.take()]
    assert probed == real
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)


def test_tap_keeps_the_latest_outputs_once_and_names_unknown_modules() -> None:
    model = build(make_spec(FAMILIES[0]), SHAPE, 10).eval()
    with FeatureTap(model, ["stage3", "pool"]) as tap:
        x = torch.randn(2, *SHAPE)
        logits = model(x)
        stage3, pool = tap.take()
        torch.testing.assert_close(model.classifier(pool), logits)
        assert stage3.shape[0] == 2
        with pytest.raises(RuntimeError, match="must follow a forward pass"):
            tap.take()  # taken already: a second step may not read the first step's features
    with pytest.raises(ValueError, match=r"no feature module \['stage9'\]"):
        FeatureTap(model, ["stage9"])


def make(arch: dict, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build(make_spec(arch), SHAPE, 10)


class CountCalls:
    def __init__(self, model: torch.nn.Module):
        self.n = 0
        model.register_forward_hook(lambda *a: setattr(self, "n", self.n + 1))


def test_logit_methods_read_the_cached_teacher_logits() -> None:
    student, teacher = make(FAMILIES[0], 0), make(FAMILIES[1], 1)
    x, y = torch.randn(6, *SHAPE), torch.arange(6)
    cached = torch.randn(6, 10)
    calls = CountCalls(teacher)
    with make_loss(("hinton", {"alpha": 1.0, "temperature": 1.0}), student, teacher, x, teacher_logits=cached) as kd:
        idx = torch.tensor([4, 1])
        logits = student(x[idx])
        loss = kd[0](logits, Batch(x[idx], y[idx], idx, 0.0))
    want = torch.nn.functional.kl_div(logits.log_softmax(1), cached[idx].log_softmax(1), reduction="batchmean",
                                      log_target=True)
    torch.testing.assert_close(loss, want)
    assert calls.n == 0, "with cached logits the teacher never runs"


def test_feature_methods_run_the_teacher_on_the_batch_every_step() -> None:
    student, teacher = make(FAMILIES[2], 0), make(FAMILIES[0], 1)
    x, y = torch.randn(8, *SHAPE), torch.arange(8)
    calls = CountCalls(teacher)
    teacher.train()
    with make_loss(("at", {}), student, teacher, x, teacher_logits=torch.zeros(8, 10)) as (loss_fn, adapters):
        assert not teacher.training, "the teacher runs in eval mode"
        calls.n = 0  # the shape probe ran it once, on the meta device
        for step in range(3):
            idx = torch.arange(step, step + 4)
            loss_fn(student(x[idx]), Batch(x[idx], y[idx], idx, 0.1 * step))
    assert calls.n == 3 and adapters is None
    assert teacher.training, "the teacher's mode is restored on exit"


def test_make_loss_errors_name_the_problem() -> None:
    student, teacher, x = make(FAMILIES[0], 0), make(FAMILIES[1], 1), torch.randn(4, *SHAPE)
    with pytest.raises(KdnasError, match="unknown distillation method 'kd'; valid names: at, crd, dkd"):
        with make_loss(("kd", {}), student, teacher, x):
            pass
    with pytest.raises(KdnasError, match=r"'dkd': warmup: `0 <= warmup < 1` must hold, but got warmup=1.5"):
        with make_loss(("dkd", {"warmup": 1.5}), student, teacher, x):
            pass
    with pytest.raises(ValueError, match="'hinton' needs a teacher"):
        with make_loss(("hinton", {}), student, None, x):
            pass
    with make_loss(("none", {}), student, None, x) as (loss_fn, adapters):  # labels only: no teacher needed
        assert adapters is None


def test_several_guides_each_with_its_own_make_loss_share_one_student() -> None:
    # How DGKD-style chains use make_loss: one context per guide on the same student; the mean of the
    # per-guide losses is (1 - alpha) CE + alpha * mean(D_g), the convention for any number of guides.
    student = make(FAMILIES[0], 0)
    guides = [make(FAMILIES[1], 1), make(FAMILIES[2], 2)]
    x, y, idx = torch.randn(6, *SHAPE), torch.arange(6), torch.arange(6)
    with contextlib.ExitStack() as stack:
        kds = [stack.enter_context(make_loss(("fitnet", {"alpha": 0.5}), student, g, x)) for g in guides]
        logits = student(x)
        losses = [loss_fn(logits, Batch(x, y, idx, 0.0)) for loss_fn, _ in kds]
        torch.stack(losses).mean().backward()
    for _, adapters in kds:
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters.parameters())
    ce = torch.nn.functional.cross_entropy(logits.detach(), y)
    d = [(2 * loss.detach() - ce) for loss in losses]  # D_g from 0.5 CE + 0.5 D_g
    assert d[0] != d[1]  # the guides differ, and each loss read its own guide's features
    assert all(not m._forward_hooks for m in student.modules())
