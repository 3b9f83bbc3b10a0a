"""Typed config sections from plain YAML data, with every problem collected.

A section is a dataclass. Its fields' annotations say which values are accepted; fields without a default
are required; unknown keys are rejected. A section may define ``check(self, report)`` for rules across
fields; ``report(key, message)`` records a problem for ``key`` inside that section. Nothing is ever
evaluated: values are only compared with the declared types.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml

from kdnas.core._errors import ConfigError, Problem

Report = Callable[[str, str], None]


class Collector:
    """Collects problems for one file; ``raise_if_any`` turns them into one :class:`ConfigError`."""

    def __init__(self, file: str | Path):
        self.file = str(file)
        self.problems: list[Problem] = []

    def add(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.file, key, message))

    def under(self, prefix: str) -> Report:
        return lambda key, message: self.add(join(prefix, key), message)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError(self.problems)


def join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    if not key:
        return prefix
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def load_yaml(path: Path, what: str) -> Any:
    """``yaml.safe_load`` with file-level problems (missing, unreadable, malformed) as ConfigError."""
    if not path.is_file():
        raise ConfigError([Problem(str(path), "", f"{what} not found")])
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError([Problem(str(path), "", f"cannot read {what}: {err}")]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError([Problem(str(path), "", f"malformed YAML: {where}{problem}")]) from None


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " or ".join(type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(typing.get_args(tp)) else inner
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"a list of {type_name(arg)}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


_MISSING = object()


def convert(tp: Any, value: Any, key: str, report: Report) -> Any:
    """Return ``value`` as ``tp``, or record a problem and return ``_MISSING``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            quiet: list[str] = []
            out = convert(arg, value, key, lambda k, m: quiet.append(m))
            if not quiet:
                return out
        report(key, f"expected {type_name(tp)}, got {value!r}")
        return _MISSING
    if origin is Literal:
        if value in typing.get_args(tp) and not isinstance(value, bool):
            return value
        report(key, f"expected {type_name(tp)}, got {value!r}")
        return _MISSING
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(value, list):
            report(key, f"expected {type_name(tp)}, got {value!r}")
            return _MISSING
        items = [convert(arg, v, f"{key}[{i}]", report) for i, v in enumerate(value)]
        return _MISSING if any(i is _MISSING for i in items) else items
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            report(key, f"expected a mapping with string keys, got {value!r}")
            return _MISSING
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return parse_section(tp, value, key, report)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `5e-4` (no dot) as a string; accept what is clearly a number
            try:
                return float(value)
            except ValueError:
                pass
            if re.fullmatch(r"\s*\d+\s*/\s*[1-9]\d*\s*", value):  # a fraction, `keep: 1/3`: read, never evaluated
                num, den = value.split("/")
                return int(num) / int(den)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is Any:
        return value
    report(key, f"expected {type_name(tp)}, got {value!r}")
    return _MISSING


def parse_section(cls: type, raw: Any, prefix: str, report: Report) -> Any:
    """Build dataclass ``cls`` from mapping ``raw``; problems go to ``report`` with dotted keys."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        report(prefix, f"expected a mapping, got {raw!r}")
        return _MISSING
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in raw:
        if key not in fields:
            report(join(prefix, str(key)), f"unknown key; valid keys: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    ok = True
    for name, field in fields.items():
        key = join(prefix, name)
        if name in raw:
            value = convert(hints[name], raw[name], key, report)
        elif field.default is not dataclasses.MISSING:
            value = field.default
        elif field.default_factory is not dataclasses.MISSING:
            # Nested sections with defaults are parsed from {} so their own defaults apply.
            value = field.default_factory()
        else:
            report(key, "required key is missing")
            value = _MISSING
        if value is _MISSING:
            ok = False
        else:
            values[name] = value
    if ok:
        obj = cls(**values)
    else:
        # The section's own rules still run on the keys that parsed, so that every problem of a file is listed
        # at once (not a chain's `min > max` only after a misspelt mode is fixed). The object is never returned.
        obj = object.__new__(cls)
        for name in fields:
            object.__setattr__(obj, name, values.get(name, _UNPARSED))
    check = getattr(obj, "check", None)
    if check is not None:
        try:
            check(lambda key, message: report(join(prefix, key), message))
        except _Skip:
            pass  # a rule used a key that did not parse (its problem is reported): the rules after it are skipped
    return obj if ok else _MISSING


class _Skip(Exception):
    pass


class _Unparsed:
    """The value of a key that did not parse, seen by a section's ``check``: using it in any way (comparing,
    formatting, testing its truth) stops that check, so that no rule judges a default the user did not write."""

    def _skip(self, *args: Any) -> Any:
        raise _Skip


for _op in ("lt", "le", "gt", "ge", "eq", "ne", "bool", "hash", "format", "str", "repr", "len", "iter", "contains",
            "add", "radd", "sub", "rsub", "mul", "rmul", "truediv", "rtruediv", "floordiv", "mod", "pow", "neg", "abs",
            "float", "int", "index", "getitem", "getattr", "call"):
    setattr(_Unparsed, f"__{_op}__", _Unparsed._skip)
_UNPARSED = _Unparsed()


def is_missing(value: Any) -> bool:
    return value is _MISSING
