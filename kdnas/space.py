"""Search spaces: which students and which distillation methods a study may sample.

A space file maps each allowed model family to its parameter domains, and each allowed method to its
hyperparameter domains. A domain is a fixed value or one of::

    {type: categorical, choices: [...]}
    {type: int,   low: L, high: H, step: S, log: false}
    {type: float, low: L, high: H, step: null, log: false}

When a space allows several families (or methods), the family (method) is itself a categorical choice and
each family's parameters are conditional on it. Optuna parameter names are ``student.family``,
``student.<family>.<param>``, ``method`` and ``method.<name>.<param>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from kdnas._schema import Collector, load_yaml
from kdnas.distill import METHODS, check_hyperparameters
from kdnas.models import FAMILIES, ArchSpec, check_spec


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
            return trial.suggest_categorical(name, list(self.choices))
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


_DOMAIN_KEYS = {"categorical": {"type", "choices"}, "int": {"type", "low", "high", "step", "log"}, "float": {"type", "low", "high", "step", "log"}}


def parse_domain(raw: Any, report) -> Domain | None:
    if not isinstance(raw, dict):
        if isinstance(raw, (list, tuple)):
            report("", f"a list is ambiguous here; write {{type: categorical, choices: {raw!r}}}")
            return None
        return Domain("fixed", value=raw)
    kind = raw.get("type")
    if kind not in _DOMAIN_KEYS:
        report("type", f"expected one of 'categorical', 'int', 'float', got {kind!r}")
        return None
    unknown = sorted(set(raw) - _DOMAIN_KEYS[kind])
    for key in unknown:
        report(key, f"unknown key for a {kind} domain; valid keys: {', '.join(sorted(_DOMAIN_KEYS[kind]))}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            report("choices", f"expected a non-empty list, got {choices!r}")
            return None
        return None if unknown else Domain("categorical", choices=tuple(choices))
    num = int if kind == "int" else (int, float)
    ok = not unknown
    for key in ("low", "high"):
        if key not in raw:
            report(key, "required key is missing")
            ok = False
        elif not isinstance(raw[key], num) or isinstance(raw[key], bool):
            report(key, f"expected {'an integer' if kind == 'int' else 'a number'}, got {raw[key]!r}")
            ok = False
    step, log = raw.get("step"), raw.get("log", False)
    if step is not None and (not isinstance(step, num) or isinstance(step, bool) or step <= 0):
        report("step", f"`step > 0` must hold ({'an integer' if kind == 'int' else 'a number'}), but got step={step!r}")
        ok = False
    if not isinstance(log, bool):
        report("log", f"expected true or false, got {log!r}")
        ok = False
    if not ok:
        return None
    low, high = raw["low"], raw["high"]
    if low > high:
        report("", f"empty range: `low <= high` must hold, but got low={low}, high={high}")
        return None
    if log and low <= 0:
        report("low", f"a log-scale range needs `low > 0`, but got low={low}")
        return None
    if log and step is not None and not (kind == "int" and step == 1):
        report("step", "a log-scale range cannot have a step")
        return None
    return Domain(kind, low=float(low) if kind == "float" else low, high=float(high) if kind == "float" else high, step=step, log=log)


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
class Candidate:
    """One sampled point of the space: a student architecture and how it is distilled."""

    student: ArchSpec
    method: MethodSpec

    def to_dict(self) -> dict[str, Any]:
        return {"student": self.student.to_dict(), "method": self.method.to_dict()}


@dataclass(frozen=True)
class SearchSpace:
    path: str
    families: dict[str, dict[str, Domain]]
    methods: dict[str, dict[str, Domain]]

    def sample(self, trial: optuna.Trial) -> Candidate:
        """Sample a candidate. A sampled student that its family rejects raises ``ValueError``."""
        family = _choose(trial, "student.family", sorted(self.families))
        values = {p: d.suggest(trial, f"student.{family}.{p}") for p, d in self.families[family].items()}
        problems: list[str] = []
        spec = check_spec({"family": family, **values}, lambda k, m: problems.append(f"{k}: {m}"))
        if spec is None:
            raise ValueError("sampled an invalid student: " + "; ".join(problems))
        method = _choose(trial, "method", sorted(self.methods))
        hp = {p: d.suggest(trial, f"method.{method}.{p}") for p, d in self.methods[method].items()}
        return Candidate(spec, MethodSpec(method, hp))

    def describe(self) -> list[tuple[str, str]]:
        rows = []
        if len(self.families) > 1:
            rows.append(("student.family", "one of " + ", ".join(sorted(self.families))))
        for fam, doms in sorted(self.families.items()):
            rows += [(f"student.{fam}.{p}", d.describe()) for p, d in sorted(doms.items())]
        if len(self.methods) > 1:
            rows.append(("method", "one of " + ", ".join(sorted(self.methods))))
        for m, doms in sorted(self.methods.items()):
            rows += [(f"method.{m}.{p}", d.describe()) for p, d in sorted(doms.items())]
        return rows


def _choose(trial: optuna.Trial, name: str, options: list[str]) -> str:
    return options[0] if len(options) == 1 else trial.suggest_categorical(name, options)


def _check_student_value(name: str, param: str, value: Any, report) -> None:
    check_spec({"family": name, param: value}, report)  # every edge value of a domain must build


def _check_method_value(name: str, param: str, value: Any, report) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        report(param, f"expected a number, got {value!r}")
    else:
        check_hyperparameters(name, {param: value}, report)


def _parse_group(raw: Any, section: str, what: str, registry, valid_params, required_params, check_value,
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


def _parse_families(raw: Any, problems: Collector) -> dict[str, dict[str, Domain]]:
    return _parse_group(raw, "students", "model family", FAMILIES, lambda n: set(vars(FAMILIES.get(n).Params())),
                        lambda n: (), _check_student_value, problems)


def _parse_methods(raw: Any, problems: Collector) -> dict[str, dict[str, Domain]]:
    # No hyperparameter is required: each has a default (kdnas.distill), used where the space leaves it out.
    return _parse_group(raw, "methods", "distillation method", METHODS, lambda n: set(METHODS.get(n).hyperparameters),
                        lambda n: (), _check_method_value, problems)


_SPACE_KEYS = ("methods", "students")


def check_space(path: Path, problems: Collector) -> SearchSpace | None:
    """Parse the space file at ``path``, adding problems (under the space file's name) to ``problems``."""
    local = Collector(path)
    try:
        raw = load_yaml(path, "search space file")
    except Exception as err:  # ConfigError for a missing or malformed file
        problems.problems.extend(getattr(err, "problems", []))
        return None
    if not isinstance(raw, dict):
        local.add("", f"expected a mapping with keys {', '.join(_SPACE_KEYS)}, got {raw!r}")
    else:
        for key in raw:
            if key not in _SPACE_KEYS:
                local.add(str(key), f"unknown key; valid keys: {', '.join(_SPACE_KEYS)}")
        families = _parse_families(raw.get("students"), local)
        methods = _parse_methods(raw.get("methods"), local)
    problems.problems.extend(local.problems)
    if local.problems:
        return None
    return SearchSpace(str(path), families, methods)


def load_space(path: str | Path) -> SearchSpace:
    problems = Collector(path)
    space = check_space(Path(path), problems)
    problems.raise_if_any()
    assert space is not None
    return space
