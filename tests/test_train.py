"""The training loop: seeded reproducibility, schedules, NaN handling."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from kdnas.core import TrialFailure
from kdnas.data import DataConfig, TensorSource, load_split
from kdnas.models import build, make_spec
from kdnas.train import TrainRecipe, _fit as train, accuracy, fit
from kdnas.train._fit import lr_factor

SPEC = make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.25})


@pytest.fixture(scope="module")
def digits():
    return load_split(DataConfig("digits"))


def first(split, n: int) -> TensorSource:
    """The first ``n`` training samples of ``split``."""
    return TensorSource(split.train.x[:n], split.train.y[:n])


def ce(logits, batch):
    return F.cross_entropy(logits, batch.y)


def test_two_seeded_runs_are_identical(digits) -> None:
    def run():
        torch.manual_seed(3)
        m = build(SPEC, digits.input_shape, 10)
        hist = fit(m, first(digits, 256), TrainRecipe(epochs=2, batch_size=32), ce, seed=5)
        return hist, m.state_dict()

    (h1, s1), (h2, s2) = run(), run()
    assert h1 == h2
    for k in s1:
        torch.testing.assert_close(s1[k], s2[k])


def test_brief_training_learns_digits(digits) -> None:
    torch.manual_seed(0)
    m = build(SPEC, digits.input_shape, 10)
    fit(m, digits.train, TrainRecipe(epochs=3, lr=0.1), ce, seed=0)
    assert accuracy(m, digits.val) > 0.8  # chance is 0.1


def test_nan_loss_is_a_trial_failure(digits) -> None:
    m = build(SPEC, digits.input_shape, 10)
    with pytest.raises(TrialFailure, match=r"training loss became nan in epoch 1/2"):
        fit(m, first(digits, 64), TrainRecipe(epochs=2), lambda o, b: ce(o, b) * float("nan"), 0)


def test_schedule_is_a_pure_function_of_progress() -> None:
    r = TrainRecipe(schedule="cosine", warmup=0.1)
    assert lr_factor(r, 0.0) < 0.05
    assert lr_factor(r, 0.1) == pytest.approx(1.0)
    assert lr_factor(r, 0.55) == pytest.approx(0.5)
    assert lr_factor(r, 0.999) < 1e-4
    assert lr_factor(TrainRecipe(schedule="constant"), 0.7) == 1.0
    # a 5-epoch trial and a 200-epoch run see the same factor at the same progress
    assert lr_factor(r, 3 / 5) == lr_factor(r, 120 / 200)


def test_lone_last_sample_does_not_break_batchnorm(digits) -> None:
    m = build(SPEC, digits.input_shape, 10)
    fit(m, first(digits, 65), TrainRecipe(epochs=1, batch_size=64), ce, 0)


def test_extra_modules_train_with_the_model(digits) -> None:
    torch.manual_seed(0)
    m = build(SPEC, digits.input_shape, 10)
    adapter = torch.nn.Linear(10, 10)
    before = adapter.weight.detach().clone()
    fit(m, first(digits, 128), TrainRecipe(epochs=1),
        lambda o, b: F.cross_entropy(adapter(o), b.y), 0, extra=adapter)
    assert not torch.equal(before, adapter.weight)


def test_loss_sees_progress_and_indices(digits) -> None:
    seen = []

    def loss(o, b):
        seen.append((b.progress, b.idx.clone()))
        torch.testing.assert_close(b.x, digits.train.x[b.idx])
        return F.cross_entropy(o, b.y)

    fit(build(SPEC, digits.input_shape, 10), first(digits, 128), TrainRecipe(epochs=2, batch_size=32), loss, 0)
    progress = [p for p, _ in seen]
    assert progress[0] == 0.0 and progress == sorted(progress) and progress[-1] < 1.0
    assert sorted(torch.cat([i for _, i in seen[:4]]).tolist()) == list(range(128))  # one epoch covers each sample once


def test_resume_from_a_checkpoint_ends_like_an_uninterrupted_run(digits) -> None:
    src, recipe = first(digits, 200), TrainRecipe(epochs=3, batch_size=32)
    torch.manual_seed(0)
    full = build(SPEC, digits.input_shape, 10)
    init = {k: v.clone() for k, v in full.state_dict().items()}
    states = []
    h_full = fit(full, src, recipe, ce, 4, checkpoint=states.append)
    assert [s["epoch"] for s in states] == [1, 2, 3]

    import io
    buf = io.BytesIO()
    torch.save(states[0], buf)  # what `kdnas train` writes; it must load back safely
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    resumed = build(SPEC, digits.input_shape, 10)
    resumed.load_state_dict(init)
    h_resumed = fit(resumed, src, recipe, ce, 4, resume=state)
    assert h_resumed == h_full
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v)


def test_fit_matches_a_naive_loop(digits) -> None:
    """Equivalence: fit (batch source, channels-last on CPU) against the plainest loop on the same recipe."""
    from kdnas.train._fit import make_optimizer

    recipe = TrainRecipe(epochs=1, batch_size=32, lr=0.05)
    src = first(digits, 96)
    torch.manual_seed(0)
    fast = build(SPEC, digits.input_shape, 10)
    fit(fast, src, recipe, ce, seed=7)
    assert all(p.is_contiguous() for p in fast.parameters()), "the model must leave fit in the usual layout"

    torch.manual_seed(0)
    naive = build(SPEC, digits.input_shape, 10)
    opt = make_optimizer(naive, recipe)
    base = [g["lr"] for g in opt.param_groups]
    order = torch.randperm(96, generator=torch.Generator().manual_seed(7))
    for step in range(3):
        idx = order[step * 32 : (step + 1) * 32]
        for g, lr in zip(opt.param_groups, base):
            g["lr"] = lr * lr_factor(recipe, step / 3)
        loss = F.cross_entropy(naive(src.x[idx]), src.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for (name, a), b in zip(fast.state_dict().items(), naive.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def _unfolded(model, data) -> torch.Tensor:
    """Logits of ``model`` itself (eval mode, no folding): what ``predict`` must agree with."""
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x) for x, _ in data.batches(64)]).clone()


def _real_statistics(model, data) -> None:
    model.train()
    with torch.no_grad():
        for x, _ in list(data.batches(64))[:4]:
            model(x)


def test_predict_folds_batchnorm_and_agrees_with_the_network(digits) -> None:
    """Evaluation runs on a copy with BatchNorm folded into the convolutions: the same classes and logits to
    float rounding as the network itself, on real images with real statistics; a frozen network is folded
    once, and a changed one again (a stale copy would report the accuracy of old weights)."""
    torch.manual_seed(0)
    model = build(make_spec({"family": "mobilenetv2", "blocks": [1, 1], "width": 0.5}), digits.input_shape, 10)
    _real_statistics(model, digits.train)
    folded = train.inference_model(model.eval(), digits.val.device)
    assert folded is not model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert train.inference_model(model, digits.val.device) is folded  # unchanged: the same copy
    assert train.inference_model(model, torch.device("cuda")) is model  # a copy per evaluation costs more there
    got = train.predict(model, digits.val)
    torch.testing.assert_close(got, _unfolded(model, digits.val), rtol=1e-4, atol=1e-5)
    assert model.training is False and all(p.is_contiguous() for p in model.parameters())

    fit(model, first(digits, 128), TrainRecipe(epochs=1, batch_size=32), ce, seed=0)  # weights and statistics move
    assert train.inference_model(model.eval(), digits.val.device) is not folded
    after = train.predict(model, digits.val)
    assert not torch.allclose(after, got)
    torch.testing.assert_close(after, _unfolded(model, digits.val), rtol=1e-4, atol=1e-5)


class _Branchy(torch.nn.Module):
    """Python control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 10)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if torch.isfinite(y).all():  # the same answer for any batch
            y = y * 2
        return self.head(y.mean((2, 3)))


def test_a_network_fx_cannot_trace_is_evaluated_as_it_is(digits) -> None:
    torch.manual_seed(0)
    model = _Branchy()
    _real_statistics(model, digits.train)
    assert train.inference_model(model.eval(), digits.val.device) is model
    torch.testing.assert_close(train.predict(model, digits.val), _unfolded(model, digits.val), rtol=1e-4, atol=1e-5)


def _without_batchnorm() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 10))


@pytest.mark.parametrize("folds", [True, False], ids=["folded", "no-batchnorm"])
def test_evaluated_networks_are_freed_and_hooks_stay_on_the_network(digits, folds: bool) -> None:
    """A study evaluates hundreds of students: none may be kept alive by the copies (on a GPU that is memory
    that never comes back), and a feature tap's hook on a student must not fire on its copy."""
    torch.manual_seed(0)
    model = build(SPEC, digits.input_shape, 10) if folds else _without_batchnorm()
    pool = model.feature_modules()["pool"] if folds else model[2]
    calls = []
    handle = pool.register_forward_hook(lambda *_: calls.append(1))
    assert train.predict(model, digits.val).shape == (len(digits.val), 10)
    copy = train.inference_model(model, digits.val.device)
    assert (copy is not model) == folds
    assert (len(calls) == 0) == folds  # the copy ran, without the network's hooks; or the network itself did
    assert not any(m._forward_hooks for m in copy.modules()) or not folds
    handle.remove()
    ref = weakref.ref(model)
    del model, pool, copy
    gc.collect()
    assert ref() is None, "the network outlived its evaluation"
