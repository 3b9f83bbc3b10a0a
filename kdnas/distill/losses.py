"""Distillation losses: one registry, one weighting convention.

Convention (used by every method): ``loss = (1 - alpha) * CE(student, labels) + alpha * D``, where ``D`` is
the method's distillation term. For soft-target methods ``D`` already carries the ``T**2`` factor of Hinton
et al. (2015), which keeps its gradient scale independent of the temperature. ``alpha = 0`` is training on
labels only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from kdnas.registry import Registry


def hinton_kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T**2 * KL(softmax(t / T) || softmax(s / T))``, averaged over the batch (Hinton et al. 2015)."""
    t = temperature
    log_p_s = F.log_softmax(student_logits / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.detach() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


@dataclass(frozen=True)
class Method:
    """A distillation method: its hyperparameters' names and its loss."""

    name: str
    hyperparameters: tuple[str, ...]
    uses_teacher: bool
    # loss(student_logits, teacher_logits or None, labels, **hyperparameters) -> scalar
    loss: Callable[..., torch.Tensor]


def _hinton(student_logits, teacher_logits, labels, *, temperature: float, alpha: float) -> torch.Tensor:
    ce = F.cross_entropy(student_logits, labels)
    return (1.0 - alpha) * ce + alpha * hinton_kd_term(student_logits, teacher_logits, temperature)


def _labels_only(student_logits, teacher_logits, labels) -> torch.Tensor:
    return F.cross_entropy(student_logits, labels)


METHODS: Registry[Method] = Registry("distillation method")
# The one place where methods are registered.
METHODS.register("hinton", Method("hinton", ("temperature", "alpha"), True, _hinton))
METHODS.register("none", Method("none", (), False, _labels_only))


def check_hyperparameters(method: str, values: dict[str, float], report) -> None:
    """Rules for hyperparameter values, shared by study files, search spaces and recipes."""
    if "temperature" in values and not values["temperature"] > 0:
        report("temperature", f"`temperature > 0` must hold, but got temperature={values['temperature']}")
    if "alpha" in values and not 0 <= values["alpha"] <= 1:
        report("alpha", f"`0 <= alpha <= 1` must hold, but got alpha={values['alpha']}")
