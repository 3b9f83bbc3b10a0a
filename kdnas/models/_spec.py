"""ArchSpec: an architecture as plain data (family name + parameters)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping


def _freeze(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the text that content hashes are taken over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any, length: int = 16) -> str:
    """Content hash of a JSON-able object (hex, ``length`` characters)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class ArchSpec:
    """A student, assistant or teacher architecture: hashable, JSON round-trippable.

    ``params`` holds every parameter of the family with defaults filled in (see
    :func:`kdnas.models.make_spec`), so two specs that build the same network compare equal.
    """

    family: str
    params: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, family: str, params: Mapping[str, Any]) -> "ArchSpec":
        return cls(family, tuple(sorted((k, _freeze(v)) for k, v in params.items())))

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, **{k: _thaw(v) for k, v in self.params}}

    def param_dict(self) -> dict[str, Any]:
        return {k: _thaw(v) for k, v in self.params}

    def digest(self) -> str:
        return digest(self.to_dict())

    def label(self) -> str:
        """Short human-readable form, e.g. ``resnet_cifar(depth=8,width=0.5)``."""
        inner = ",".join(f"{k}={_thaw(v)}" for k, v in self.params)
        return f"{self.family}({inner})"
