"""``make_loss``: one distillation method, hooked up for one training run of ``kdnas.train._fit.fit``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from kdnas.data import BatchSource, TensorSource
from kdnas.distill._base import FEATURE_READS, PairShape, Step
from kdnas.distill._hooks import FeatureTap, probe_shapes, select_pairs
from kdnas.distill._methods import METHODS
from kdnas.train import Batch, LossFn, predict


def _in_float32(term: nn.Module, step: Step) -> torch.Tensor:
    """``term(step)`` in float32, also under mixed precision (kdnas/train/_precision.py): the terms' arithmetic
    (pairwise distances, angles, Gram matrices, normalised kernels, softmax ratios) loses its precision in half
    precision (RKD's distances gave NaN in float16 on the method contract's digits run), and it costs little next
    to the networks' passes. The casts are differentiable; outside autocast they are no-ops."""
    device_type = step.student_logits.device.type
    if not torch.is_autocast_enabled(device_type):  # fp32 training, the default: nothing to undo (0.2 us, not 5)
        return term(step)

    def up(t):
        return t.float() if t is not None and t.is_floating_point() else t

    with torch.autocast(device_type, enabled=False):
        return term(Step(up(step.student_logits), up(step.teacher_logits), step.labels, step.idx, step.progress,
                         tuple(up(f) for f in step.student_features), tuple(up(f) for f in step.teacher_features)))


def _spec(method: Any) -> tuple[str, Mapping[str, Any]]:
    """A ``MethodSpec`` (``.name``, ``.hyperparameters``) or a ``(name, hyperparameters)`` pair."""
    if isinstance(method, tuple):
        return method
    return method.name, method.hyperparameters


@contextmanager
def make_loss(
    method: Any,
    student: nn.Module,
    teacher: nn.Module | None,
    train_x: "torch.Tensor | BatchSource",
    teacher_logits: "torch.Tensor | Callable[[Batch], torch.Tensor] | None" = None,
) -> Iterator[tuple[LossFn, nn.Module | None]]:
    """Hook ``method`` up between ``student`` and ``teacher`` for one run of ``kdnas.train._fit.fit``.

    Use it as a context manager; it yields ``(loss_fn, adapters)``::

        with make_loss(spec, student, teacher, split.train, teacher_logits=cached) as (loss_fn, adapters):
            fit(student, split.train, recipe, loss_fn, seed, extra=adapters)

    ``method`` is a ``MethodSpec`` (or a ``(name, {hyperparameter: value})`` pair); missing hyperparameters
    take their defaults, bad ones raise :class:`~kdnas.core._errors.KdnasError`. ``loss_fn(student_logits, batch)``
    returns ``(1 - alpha) * CE + alpha * D`` (see the package docstring); it must be called right after the
    student's forward pass on ``batch.x``, whose features the hooks kept. ``adapters`` holds the method's
    trainable modules (``None`` when it has none): pass it to ``fit(..., extra=adapters)``; it is never part of
    the student, so the student's ``state_dict`` and any export are unchanged.

    The teacher is put in eval mode for the run (its mode is restored on exit) and only ever runs under
    ``torch.no_grad()``: no gradient reaches it. Methods that read only logits use ``teacher_logits``, the
    teacher's logits on ``train_x`` indexed by ``batch.idx``, computed once here unless the caller passes
    them (the study caches them; it may also pass a callable ``batch -> logits``, which runs the teacher on the
    batch when inputs are randomly augmented); feature methods run the teacher on ``batch.x`` with hooks
    every step. ``train_x`` is the training split: a :class:`~kdnas.data.BatchSource` or a tensor of inputs.
    ``teacher`` may be ``None`` for ``none``. On exit every hook is removed.
    """
    name, values = _spec(method)
    m = METHODS.get(name)
    hp = m.resolve(values)
    if m.uses_teacher and teacher is None:
        raise ValueError(f"distillation method {name!r} needs a teacher, but teacher=None")
    if isinstance(train_x, torch.Tensor):
        train_x = TensorSource(train_x, torch.zeros(len(train_x), dtype=torch.long))
    if isinstance(teacher_logits, torch.Tensor) and len(teacher_logits) != len(train_x):
        raise ValueError(f"teacher_logits has {len(teacher_logits)} rows, but train_x has {len(train_x)} samples")
    pairs = select_pairs(m.reads, student, teacher) if m.reads in FEATURE_READS else []
    s_names, t_names = [s for s, _ in pairs], [t for _, t in pairs]
    input_shape = tuple(next(iter(train_x.batches(1, torch.arange(1))))[0].shape[1:])
    shapes = [PairShape(s, t) for s, t in zip(probe_shapes(student, s_names, input_shape),
                                                probe_shapes(teacher, t_names, input_shape) if pairs else [])]
    device = next(student.parameters()).device
    term = m.build(hp, shapes, len(train_x)).to(device)
    adapters = term if next(term.parameters(), None) is not None else None
    alpha = hp.get("alpha", 0.0)
    was_training = teacher.training if teacher is not None else False
    s_tap: FeatureTap | None = None
    t_tap: FeatureTap | None = None

    def loss_fn(student_logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        ce = F.cross_entropy(student_logits, batch.y)
        if alpha == 0:
            return ce
        s_feats: tuple[torch.Tensor, ...] = ()
        t_feats: tuple[torch.Tensor, ...] = ()
        if pairs:
            s_feats = s_tap.take()
            with torch.no_grad():  # features need the teacher's forward pass; no gradient may reach it
                t_logits = teacher(batch.x)
            t_feats = t_tap.take()
        else:
            if callable(teacher_logits):
                t_logits = teacher_logits(batch)
            else:
                t_logits = teacher_logits[batch.idx] if teacher_logits is not None else None
        step = Step(student_logits, t_logits, batch.y, batch.idx, batch.progress, s_feats, t_feats)
        return (1.0 - alpha) * ce + alpha * _in_float32(term, step)

    try:
        if teacher is not None:
            teacher.eval()  # BatchNorm must use the teacher's running statistics, never update them
        if m.reads == "logits" and teacher_logits is None:
            # The training split has no random augmentation, so the teacher's logits on it are fixed.
            teacher_logits = predict(teacher, train_x)
        if pairs:
            s_tap, t_tap = FeatureTap(student, s_names), FeatureTap(teacher, t_names)
        yield loss_fn, adapters
    finally:
        for tap in (s_tap, t_tap):
            if tap is not None:
                tap.close()
        if teacher is not None:
            teacher.train(was_training)
