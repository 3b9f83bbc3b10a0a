"""The distillation-method contract: hyperparameter declarations, what a term sees per step, the ABC."""

from __future__ import annotations

import math
from abc import ABC
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal, Mapping

import torch
from torch import nn

from kdnas.core import KdnasError

Report = Callable[[str, str], None]

# What a method reads, besides the labels: nothing else ("labels"), the teacher's logits ("logits"), or features
# of paired stages: the middle pair ("hint"), every stage pair ("stages"), the last stage pair ("last_stage"),
# or the pooled vector before the classifier ("embedding").
Reads = Literal["labels", "logits", "hint", "stages", "last_stage", "embedding"]
FEATURE_READS = ("hint", "stages", "last_stage", "embedding")


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: its default (with the reason for it) and the rule a value must satisfy."""

    default: float
    why: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `low < value` instead of `low <= value`
    high_open: bool = False
    integer: bool = False

    def rule(self, name: str) -> str:
        lo = None if self.low is None else f"{self.low:g} {'<' if self.low_open else '<='} "
        hi = None if self.high is None else f" {'<' if self.high_open else '<='} {self.high:g}"
        if lo and hi:
            text = f"{lo}{name}{hi}"
        elif lo:  # "0 <= x" reads better as "x >= 0"
            text = f"{name} {'>' if self.low_open else '>='} {self.low:g}"
        elif hi:
            text = f"{name}{hi}"
        else:
            text = f"{name} is finite"
        return f"`{text}`" + (" (an integer)" if self.integer else "")

    def ok(self, value: float) -> bool:
        # An integer hyperparameter takes Python ints only, so that a float domain (whose sampled values would
        # not be whole) is rejected when the space is validated, by its float end points.
        if not math.isfinite(value) or (self.integer and not isinstance(value, int)):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))


# The hyperparameters several methods share, declared once so that their rules read the same everywhere.
def temperature(default: float, why: str) -> Hyper:
    return Hyper(default, why, low=0, low_open=True)


def alpha(default: float, why: str) -> Hyper:
    return Hyper(default, why, low=0, high=1)


def weight(default: float, why: str) -> Hyper:
    return Hyper(default, why, low=0)


@dataclass(frozen=True)
class Step:
    """What a distillation term sees in one training step.

    ``student_features[i]`` and ``teacher_features[i]`` are the outputs of the i-th stage pair the method
    reads (see :data:`Reads`), from this step's forward passes. Teacher tensors carry no gradient; student
    tensors do. ``idx`` indexes the training split; ``progress`` in [0, 1) is the position in the run.
    """

    student_logits: torch.Tensor
    teacher_logits: torch.Tensor | None
    labels: torch.Tensor
    idx: torch.Tensor
    progress: float
    student_features: tuple[torch.Tensor, ...] = ()
    teacher_features: tuple[torch.Tensor, ...] = ()


@dataclass(frozen=True)
class PairShape:
    """Shapes (without the batch dimension) of one paired student and teacher feature."""

    student: tuple[int, ...]
    teacher: tuple[int, ...]


class Method(ABC):
    """A distillation method, registered once in ``kdnas/distill/__init__.py``.

    When each part is used:

    - ``hyperparameters`` and :meth:`check`: when a study or search space file is validated, before anything
      runs, and again by :func:`kdnas.distill.make_loss` on the values it is given (missing ones take defaults).
    - ``reads``: by ``make_loss``, once per training run, to choose the stages whose outputs it hooks.
    - :meth:`build`: by ``make_loss``, once per training run, after the hooked features' shapes are probed
      on the meta device. It returns the module that computes the distillation term ``D``: it holds the
      method's trainable adapters (trained with the student, never part of it) and any state across steps.
    - that module's ``forward(step: Step) -> Tensor``: once per training step, after the student's and the
      teacher's forward passes; it returns ``D``, which enters ``(1 - alpha) * CE + alpha * D``.
    """

    name: ClassVar[str]
    reads: ClassVar[Reads]
    hyperparameters: ClassVar[Mapping[str, Hyper]]
    # The module computing D, built from the resolved hyperparameters by the default `build`.
    term: ClassVar[Callable[[Mapping[str, float]], nn.Module]]

    @property
    def uses_teacher(self) -> bool:
        return self.reads != "labels"

    def check(self, values: Mapping[str, Any], report: Report) -> None:
        """Report every unknown name and every value outside its rule, as ``report(name, message)``."""
        for name, value in values.items():
            hyper = self.hyperparameters.get(name)
            if hyper is None:
                valid = ", ".join(sorted(self.hyperparameters)) or "none"
                report(name, f"unknown hyperparameter of {self.name}; valid: {valid}")
            elif not isinstance(value, (int, float)) or isinstance(value, bool):
                report(name, f"expected a number, got {value!r}")
            elif not hyper.ok(value):
                report(name, f"{hyper.rule(name)} must hold, but got {name}={value}")

    def resolve(self, values: Mapping[str, Any]) -> dict[str, float]:
        """``values`` completed with the defaults; raises :class:`KdnasError` listing every problem."""
        problems: list[str] = []
        self.check(values, lambda key, msg: problems.append(f"{key}: {msg}"))
        if problems:
            raise KdnasError(f"distillation method {self.name!r}: " + "; ".join(problems))
        return {name: values.get(name, h.default) for name, h in self.hyperparameters.items()}

    def build(self, hp: Mapping[str, float], shapes: list[PairShape], num_train: int) -> nn.Module:
        """The module computing ``D`` for one training run; ``shapes`` has one entry per feature pair read.

        The default is ``term(hp)``; a method whose module needs the feature shapes (for adapters) or the
        size of the training split (for a memory bank) overrides it.
        """
        return type(self).term(hp)
