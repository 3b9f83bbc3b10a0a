"""What a candidate distils with, as data: the method (registered name and hyperparameter values) and the chain
of teacher assistants between the teacher and the student."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdnas.models import ArchSpec


@dataclass(frozen=True)
class MethodSpec:
    """A distillation method and its hyperparameter values."""

    name: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.hyperparameters}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MethodSpec":
        d = dict(d)
        return cls(d.pop("name"), d)

    def label(self) -> str:
        inner = ",".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(self.hyperparameters.items()))
        return f"{self.name}({inner})"


@dataclass(frozen=True)
class Chain:
    """Teacher assistants between teacher and student, largest first (after :func:`screen`)."""

    mode: str = "takd"
    assistants: tuple[ArchSpec, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "assistants": [a.to_dict() for a in self.assistants]}

    def label(self) -> str:
        if not self.assistants:
            return "direct"
        return f"{self.mode}[" + " > ".join(a.label() for a in self.assistants) + "]"
