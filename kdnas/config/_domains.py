"""Parameter domains of search-space files, and the parser shared by every section made of them.

A domain is a fixed value or one of::

    {type: categorical, choices: [...]}
    {type: int,   low: L, high: H, step: S, log: false}
    {type: float, low: L, high: H, step: null, log: false}

Categorical choices may be lists (``channels: {type: categorical, choices: [[16, 32], [32, 64]]}``): Optuna
stores only scalars, so such choices are suggested by their JSON text and decoded back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import optuna

from kdnas.core import Collector


@dataclass(frozen=True)
class Domain:
    kind: str  # fixed | categorical | int | float
    value: Any = None
    choices: tuple = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.kind == "fixed":
            return self.value
        if self.kind == "categorical":
            if all(_is_scalar(c) for c in self.choices):
                return trial.suggest_categorical(name, list(self.choices))
            picked = trial.suggest_categorical(name, [json.dumps(c) for c in self.choices])
            return json.loads(picked)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list[Any]:
        """Values to check statically: the fixed value, every choice, or both ends of a range."""
        if self.kind == "fixed":
            return [self.value]
        if self.kind == "categorical":
            return list(self.choices)
        return [self.low, self.high]

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed {self.value!r}"
        if self.kind == "categorical":
            return "one of " + ", ".join(repr(c) for c in self.choices)
        extra = (f", step {self.step}" if self.step else "") + (", log scale" if self.log else "")
        return f"{self.kind} in [{self.low}, {self.high}]{extra}"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


_DOMAIN_KEYS = {"categorical": {"type", "choices"}, "int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"}}


def parse_domain(raw: Any, report) -> Domain | None:
    """The domain ``raw`` describes, or None. Every problem is reported, not only the first: a domain with an
    unknown key is still built (and its values checked by the caller), though the space it is in is rejected."""
    if not isinstance(raw, dict):
        if isinstance(raw, (list, tuple)):
            report("", f"a list is ambiguous here; write {{type: categorical, choices: {raw!r}}}")
            return None
        return Domain("fixed", value=raw)
    kind = raw.get("type")
    if kind not in _DOMAIN_KEYS:
        every = set().union(*_DOMAIN_KEYS.values())
        for key in sorted(set(raw) - every, key=str):  # `tpye:` is a misspelt key, not a missing type
            report(str(key), f"unknown key in a domain; valid keys: {', '.join(sorted(every))}")
        if "type" in raw:
            report("type", f"expected one of 'categorical', 'int', 'float', got {kind!r}")
        else:
            report("type", "required key is missing (one of 'categorical', 'int', 'float')")
        return None
    for key in sorted(set(raw) - _DOMAIN_KEYS[kind], key=str):
        report(str(key), f"unknown key for a {kind} domain; valid keys: {', '.join(sorted(_DOMAIN_KEYS[kind]))}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            report("choices", f"expected a non-empty list, got {choices!r}")
            return None
        return Domain("categorical", choices=tuple(choices))
    num = int if kind == "int" else (int, float)
    ends = True  # low and high are numbers: the range itself can be checked
    for key in ("low", "high"):
        if key not in raw:
            report(key, "required key is missing")
            ends = False
        elif not isinstance(raw[key], num) or isinstance(raw[key], bool):
            report(key, f"expected {'an integer' if kind == 'int' else 'a number'}, got {raw[key]!r}")
            ends = False
    step, log = raw.get("step"), raw.get("log", False)
    ok = ends
    if step is not None and (not isinstance(step, num) or isinstance(step, bool) or step <= 0):
        report("step", f"`step > 0` must hold ({'an integer' if kind == 'int' else 'a number'}), but got step={step!r}")
        ok = False
    if not isinstance(log, bool):
        report("log", f"expected true or false, got {log!r}")
        ok = False
    if not ends:
        return None
    low, high = raw["low"], raw["high"]
    if low > high:
        report("", f"empty range: `low <= high` must hold, but got low={low}, high={high}")
        ok = False
    if log is True and low <= 0:
        report("low", f"a log-scale range needs `low > 0`, but got low={low}")
        ok = False
    if log is True and step is not None and not (kind == "int" and step == 1):
        report("step", "a log-scale range cannot have a step")
        ok = False
    if not ok:
        return None
    return Domain(kind, low=float(low) if kind == "float" else low, high=float(high) if kind == "float" else high, step=step, log=log)


def parse_group(raw: Any, section: str, what: str, registry, valid_params, required_params, check_value,
                 problems: Collector) -> dict[str, dict[str, Domain]]:
    """Parse ``section`` (``students`` or ``methods``): registered names -> {parameter: domain}."""
    out: dict[str, dict[str, Domain]] = {}
    if not isinstance(raw, dict) or not raw:
        problems.add(section, f"expected a non-empty mapping of {what} -> parameter domains, got {raw!r}")
        return out
    for name, params in raw.items():
        key = f"{section}.{name}"
        if name not in registry:
            problems.add(key, f"unknown {what} {name!r}; valid names: {', '.join(registry.names())}")
            continue
        params = params or {}
        if not isinstance(params, dict):
            problems.add(key, f"expected a mapping of parameter -> domain, got {params!r}")
            continue
        valid = valid_params(name)
        for p in required_params(name):
            if p not in params:
                problems.add(f"{key}.{p}", "required parameter is missing")
        domains: dict[str, Domain] = {}
        for p, raw_dom in params.items():
            if p not in valid:
                problems.add(f"{key}.{p}", f"unknown parameter of {name}; valid: {', '.join(sorted(valid)) or 'none'}")
                continue
            dom = parse_domain(raw_dom, problems.under(f"{key}.{p}"))
            if dom is None:
                continue
            for v in dom.extremes():
                check_value(name, p, v, problems.under(key))
            domains[p] = dom
        out[name] = domains
    return out


