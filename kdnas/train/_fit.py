"""The brief-training loop and evaluation, reading batches from a :class:`~kdnas.data.BatchSource`."""

from __future__ import annotations

import copy
import itertools
import math
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from kdnas.core import TrialFailure
from kdnas.data import Augment, BatchSource, augment_batch
from kdnas.train._precision import Mixed


@dataclass(frozen=True)
class TrainRecipe:
    """How one network is trained. Also a config section (``teacher.train``, ``student.train``)."""

    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup: float = 0.0  # fraction of the run with a linear warm-up, so brief and full runs share the recipe
    # Random augmentation of the training inputs. Off by default: with it, a teacher's outputs cannot be
    # cached and the teacher runs on every student batch (see docs/data.md).
    augment: Augment = field(default_factory=Augment)

    def check(self, report) -> None:
        if self.epochs < 1:
            report("epochs", f"`epochs >= 1` must hold, but got epochs={self.epochs}")
        if self.batch_size < 1:
            report("batch_size", f"`batch_size >= 1` must hold, but got batch_size={self.batch_size}")
        if not self.lr > 0:
            report("lr", f"`lr > 0` must hold, but got lr={self.lr}")
        if not 0 <= self.momentum < 1:
            report("momentum", f"`0 <= momentum < 1` must hold, but got momentum={self.momentum}")
        if self.weight_decay < 0:
            report("weight_decay", f"`weight_decay >= 0` must hold, but got weight_decay={self.weight_decay}")
        if not 0 <= self.warmup < 1:
            report("warmup", f"`0 <= warmup < 1` must hold, but got warmup={self.warmup}")

    def to_dict(self) -> dict:
        return {**vars(self), "augment": self.augment.to_dict()}


def lr_factor(recipe: TrainRecipe, progress: float) -> float:
    """Learning-rate multiplier at ``progress`` in [0, 1): a pure function of progress."""
    if progress < recipe.warmup:
        return (progress + 1e-3) / recipe.warmup
    if recipe.schedule == "constant":
        return 1.0
    p = (progress - recipe.warmup) / (1.0 - recipe.warmup)
    return 0.5 * (1.0 + math.cos(math.pi * p))


def make_optimizer(model: nn.Module, recipe: TrainRecipe) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm and bias parameters: the usual practice for small CNNs.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.momentum > 0)
    return torch.optim.AdamW(groups, lr=recipe.lr)


@dataclass(frozen=True)
class Batch:
    """One training batch, as a loss sees it.

    ``idx`` indexes the training split, so that outputs cached per sample (a teacher's logits on inputs
    without random augmentation) can be looked up; ``progress`` in [0, 1) is the position in the run, for
    losses with schedules of their own (a warm-up as a fraction of the run, not a fixed epoch count).
    """

    x: torch.Tensor
    y: torch.Tensor
    idx: torch.Tensor
    progress: float


# loss_fn(student_logits, batch) -> scalar loss
LossFn = Callable[[torch.Tensor, Batch], torch.Tensor]


def fit(
    model: nn.Module,
    data: BatchSource,
    recipe: TrainRecipe,
    loss_fn: LossFn,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    extra: nn.Module | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    resume: dict | None = None,
    until: int | None = None,
    precision: str = "fp32",
) -> list[float]:
    """Train ``model`` in place on the batches of ``data``; return the mean loss of each epoch.

    ``seed`` fixes the order of the samples and the random augmentation. ``extra`` holds trainable modules
    that are not part of the model but train with it (a distillation method's adapters); the optimizer
    updates them too.

    ``checkpoint(state)``, when given, is called after every epoch with everything needed to continue (model,
    adapters, optimizer, shuffling generator, progress); ``resume=state`` continues from such a state, and
    the run then ends exactly as an uninterrupted one would. ``until`` ends the run after that many epochs (a
    rung's budget), mid-schedule: the learning rate follows ``recipe.epochs`` whatever ``until`` is.
    ``precision``: ``fp32``, ``bf16`` or ``fp16``, resolved for the device (kdnas/train/_precision.py); the
    forward pass and the loss run under autocast, and with fp16 the gradients are scaled.

    Raises :class:`TrialFailure` when the loss stops being finite. The check runs once per epoch on the
    summed loss, so it costs no device synchronisation per step.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    trained = model if extra is None else nn.ModuleList([model, extra])
    with fast_layout(trained, data.device) as layout:
        return _fit(model, trained, data, recipe, loss_fn, gen, layout, on_epoch, extra, checkpoint, resume,
                    recipe.epochs if until is None else until, Mixed(precision, data.device))


def fast_memory_format(device: torch.device) -> torch.memory_format:
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


@contextmanager
def fast_layout(module: nn.Module, device: torch.device) -> Iterator[torch.memory_format]:
    """Run ``module`` in the memory layout that is fastest on ``device``; yield it for the inputs.

    On CPU, oneDNN's convolutions and BatchNorm mostly run faster on channels-last (NHWC) tensors: up to
    1.7x for a training step and 1.9x for inference, at worst 7% slower in a noisy measurement
    (docs/performance.md). On CUDA in float32 the gain depends on cuDNN and
    was not measured, so the layout stays as it is there. The module leaves in the usual layout: latency measurement, export and users see
    no difference. Not inside ``inference_mode``: parameters converted there could not train again.
    Nested uses (an evaluation at an epoch's end, inside ``fit``) leave the layout to the outer one.
    """
    layout = fast_memory_format(device)
    if getattr(module, "_kdnas_layout", None) is not None:
        yield module._kdnas_layout
        return
    module.to(memory_format=layout)
    inner = list(module.modules())
    for m in inner:
        m._kdnas_layout = layout
    try:
        yield layout
    finally:
        for m in inner:
            del m._kdnas_layout
        module.to(memory_format=torch.contiguous_format)


def _fit(model, trained, data, recipe, loss_fn, gen, layout, on_epoch, extra, checkpoint, resume, until,
         mixed: Mixed) -> list[float]:
    opt = make_optimizer(trained, recipe)
    n = len(data)
    steps_per_epoch = max(1, math.ceil(n / recipe.batch_size))
    total = recipe.epochs * steps_per_epoch
    base_lrs = [g["lr"] for g in opt.param_groups]
    history: list[float] = []
    step, start = 0, 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        if extra is not None and resume.get("extra") is not None:
            extra.load_state_dict(resume["extra"])
        opt.load_state_dict(resume["optimizer"])
        gen.set_state(resume["generator"])
        mixed.load_state_dict(resume.get("scaler"))
        history, step, start = list(resume["history"]), int(resume["step"]), int(resume["epoch"])
    trained.train()
    for epoch in range(start, until):
        loss_sum = torch.zeros((), device=data.device)
        for xb, idx in data.batches(recipe.batch_size, torch.randperm(n, generator=gen)):
            if len(idx) < 2 and n >= 2:  # a batch of one breaks BatchNorm; fold it away
                continue
            if recipe.augment.active:
                xb = augment_batch(xb, recipe.augment, data.fill, gen)
            xb = xb.contiguous(memory_format=layout)
            factor = lr_factor(recipe, step / total)
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * factor
            with mixed.autocast():
                loss = loss_fn(model(xb), Batch(xb, data.y[idx], idx, step / total))
            opt.zero_grad(set_to_none=True)
            mixed.step(loss, opt)
            loss_sum += loss.detach()
            step += 1
        mean = float(loss_sum) / steps_per_epoch
        if not math.isfinite(mean):
            raise TrialFailure(f"training loss became {mean} in epoch {epoch + 1}/{recipe.epochs}")
        history.append(mean)
        if checkpoint is not None:
            # Deep copies, in the usual layout: state_dicts share storage with the live tensors.
            checkpoint(copy.deepcopy({
                "epoch": epoch + 1, "step": step, "history": list(history),
                "model": {k: v.contiguous() for k, v in model.state_dict().items()},
                "extra": {k: v.contiguous() for k, v in extra.state_dict().items()} if extra is not None else None,
                "optimizer": opt.state_dict(), "generator": gen.get_state(), "scaler": mixed.state_dict()}))
        if on_epoch is not None:
            on_epoch(epoch, mean)
    return history


def inference_batch_size(device: torch.device) -> int:
    """Batch size of inference passes: on CPU small, so that a layer's activations stay in the caches (1,000
    MNIST images at 32 rather than 512: 1.1-3.9x faster on one thread, MobileNetV2 gaining most; 0.9-3.3x on
    two; docs/performance.md); on a GPU large, to fill it."""
    return 32 if device.type == "cpu" else 512


def predict(model: nn.Module, data: BatchSource, batch_size: int | None = None) -> torch.Tensor:
    """Logits of ``model`` in eval mode for every sample of ``data``, in index order, without augmentation.

    The passes run on :func:`inference_model`'s copy of ``model`` (BatchNorm folded into the layer before it)
    where there is one; the logits agree with ``model``'s own to float rounding.
    """
    batch_size = batch_size or inference_batch_size(data.device)
    was_training = model.training
    model.eval()
    try:
        folded = inference_model(model, data.device)
        if folded is model:
            with fast_layout(model, data.device) as layout, torch.inference_mode():
                out = torch.cat([model(x.contiguous(memory_format=layout)) for x, _ in data.batches(batch_size)])
        else:
            layout = fast_memory_format(data.device)  # the copy is kept in it
            with torch.inference_mode():
                out = torch.cat([folded(x.contiguous(memory_format=layout)) for x, _ in data.batches(batch_size)])
    finally:
        model.train(was_training)
    return out.clone()  # out of inference mode: callers may use it as a training target


# A model's folded copy, with the device and state it was made for: (signature, copy or the model itself).
_FOLDED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, nn.Module]]" = weakref.WeakKeyDictionary()
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def inference_model(model: nn.Module, device: torch.device) -> nn.Module:
    """A copy of ``model`` (in eval mode) for inference on ``device``, each BatchNorm folded into the
    convolution or linear layer before it, in the fastest layout; or ``model`` itself.

    Folding makes inference 1.0-1.4x faster on CPU for the search space's students (one thread, batches of
    32; docs/performance.md): a BatchNorm in eval mode is a fixed per-channel affine map, and
    the convolution before it can apply it in its own weights and bias. Only the graph's order decides what
    folds (``torch.fx``): a layer whose output anything else also reads keeps its BatchNorm. ``model`` itself
    comes back when it has no BatchNorm or cannot be traced (Python control flow on tensor values, say),
    and on a GPU: there the copy's cost (a deep copy and a trace, 10-30 ms) is more than the passes save
    (an H200 evaluated 5,000 MNIST images 0.36-0.59x as fast with a copy made per call).

    The copy is kept while ``model`` lives and made again when any of its weights or buffers changed (a
    training step, ``load_state_dict``, moving it): a frozen teacher is folded once per study, a student
    once per evaluation. Forward hooks on ``model`` do not run on the copy.
    """
    state = _state_signature(model)
    signature = None if state is None else (device, state)
    hit = _FOLDED.get(model)
    if hit is not None and signature is not None and hit[0] == signature:
        return model if hit[1] is None else hit[1]
    folded = _fold(model, device)
    if signature is not None:
        # Never the model itself as the value: it would keep its own key, and so itself, alive for good.
        _FOLDED[model] = (signature, None if folded is model else folded)
    return folded


def _fold(model: nn.Module, device: torch.device) -> nn.Module:
    if device.type != "cpu" or not any(isinstance(m, _BATCHNORM) for m in model.modules()):
        return model
    from torch.fx.experimental.optimization import fuse

    clone = copy.deepcopy(model)  # in eval mode, as model is here
    for m in clone.modules():  # a deep copy takes the hooks along (a distillation's feature taps, say) ...
        for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks, m._backward_pre_hooks):
            hooks.clear()  # ... which tracing would call with its placeholders, and the passes with features
    try:
        folded = fuse(clone, inplace=True)
    except Exception:  # noqa: BLE001 - any model fx cannot trace is evaluated as it is: the exact answer
        return model
    return folded.to(memory_format=fast_memory_format(device)).eval()


def _state_signature(model: nn.Module) -> tuple | None:
    """Where each weight and buffer lives and how often it was changed in place; None when that cannot be
    read (tensors made in inference mode keep no version counter)."""
    try:
        return tuple((t.data_ptr(), t._version) for t in itertools.chain(model.parameters(), model.buffers()))
    except RuntimeError:
        return None


def accuracy(model: nn.Module, data: BatchSource) -> float:
    return float((predict(model, data).argmax(1) == data.y).float().mean())
