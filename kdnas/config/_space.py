"""Search spaces: which students, teacher-assistant chains and distillation methods a study may sample.

A space file holds::

    students:   {<family>: {<param>: <domain>, ...}, ...}      # the student architectures
    methods:    {<method>: {<hyperparameter>: <domain>}, ...}   # how the student is distilled
    limits:     {max_params: N, max_macs: N}                    # hard limits on the student (optional)
    teachers: [resnet20, [resnet20, resnet8]]                   # teachers a trial samples (optional; a list is an
                                                                #   ensemble; names from the study's `teachers:`)
    chain:                                                      # teacher assistants (optional; none without it)
      max_assistants: 2                                         # chains of 0..2 assistants are sampled
      modes: [takd, dgkd]                                       # TAKD: each learner distils from the one before;
                                                                #   DGKD: from all larger ones
      assistants: {<family>: {<param>: <domain>}}               # default: the students' domains

Domains are described in :mod:`kdnas.config._domains`. When a section allows several families (or methods), the
choice is itself categorical and each family's parameters are conditional on it. Optuna parameter names are
``student.family``, ``student.<family>.<param>``, ``method``, ``method.<name>.<param>``, ``chain.length``,
``chain.mode``, ``chain.<i>.family`` and ``chain.<i>.<family>.<param>``.

Sampling never looks at costs; :func:`screen` does, before any training: it orders a chain by capacity
(parameter count), and rejects candidates over the limits or whose chain is not strictly decreasing in
capacity from teacher to student, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import optuna

from kdnas.config._domains import Domain, parse_group
from kdnas.core import Collector, load_yaml, parse_section
from kdnas.distill import METHODS, Chain, MethodSpec, check_hyperparameters
from kdnas.models import FAMILIES, ArchSpec, check_spec

CHAIN_MODES = ("takd", "dgkd")


@dataclass(frozen=True)
class Candidate:
    """One sampled point of the space: a student, the chain that teaches it, and how it is distilled; in a study
    of several teachers, which one teaches (a label, kdnas/config/_teachers.py; None: the study's one teacher,
    or no teacher for a labels-only method)."""

    student: ArchSpec
    method: MethodSpec
    chain: Chain = Chain()
    teacher: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        out = {"student": self.student.to_dict(), "method": self.method.to_dict(), "chain": self.chain.to_dict()}
        if self.teacher is not None:  # absent otherwise: a one-teacher study's candidate keys stay as they were
            out["teacher"] = self.teacher
        return out


@dataclass(frozen=True)
class Limits:
    max_params: Optional[int] = None  # hard limit on the student's parameter count
    max_macs: Optional[int] = None  # hard limit on the student's multiply-accumulates per image

    def check(self, report) -> None:
        for key in ("max_params", "max_macs"):
            v = getattr(self, key)
            if v is not None and v < 1:
                report(key, f"`{key} >= 1` must hold, but got {key}={v}")


@dataclass(frozen=True)
class ChainSettings:
    max_assistants: int = 1
    min_assistants: int = 0  # 0 lets the search compare against direct distillation
    modes: list[Literal["takd", "dgkd"]] = field(default_factory=lambda: ["takd"])
    assistants: Optional[dict[str, Any]] = None  # family -> domains; None = the students' domains

    def check(self, report) -> None:
        if not 0 <= self.min_assistants <= self.max_assistants:
            report("", f"`0 <= min_assistants <= max_assistants` must hold, but got "
                       f"min_assistants={self.min_assistants}, max_assistants={self.max_assistants}")
        if self.max_assistants > 8:
            report("max_assistants", f"`max_assistants <= 8` must hold, but got max_assistants={self.max_assistants}")
        if not self.modes:
            report("modes", "expected at least one of 'takd', 'dgkd'")


@dataclass(frozen=True)
class SearchSpace:
    path: str
    families: dict[str, dict[str, Domain]]
    methods: dict[str, dict[str, Domain]]
    limits: Limits = Limits()
    chain: ChainSettings = ChainSettings(max_assistants=0)
    assistant_families: dict[str, dict[str, Domain]] = field(default_factory=dict)
    teacher_lists: Optional[list] = None  # the file's `teachers` as written (checked against the study file)
    teachers: tuple[str, ...] = ()  # the teacher choices' labels, set by load_study; () = the study's one teacher

    def sample(self, trial: optuna.Trial) -> Candidate:
        """Sample a candidate. A sampled architecture that its family rejects raises ``ValueError``."""
        student = _sample_arch(trial, "student", self.families)
        method = _choose(trial, "method", sorted(self.methods))
        hp = {p: d.suggest(trial, f"method.{method}.{p}") for p, d in self.methods[method].items()}
        c = self.chain
        chain = Chain()
        teaches = METHODS.get(method).uses_teacher
        teacher = _choose(trial, "teacher", list(self.teachers)) if teaches and self.teachers else None
        if c.max_assistants and teaches:  # a label-only baseline has no use for a chain
            n = c.min_assistants if c.min_assistants == c.max_assistants else \
                trial.suggest_int("chain.length", c.min_assistants, c.max_assistants)
            if n:
                mode = _choose(trial, "chain.mode", sorted(set(c.modes)))
                chain = Chain(mode, tuple(_sample_arch(trial, f"chain.{i}", self.assistant_families) for i in range(n)))
        return Candidate(student, MethodSpec(method, hp), chain, teacher)

    def describe(self) -> list[tuple[str, str]]:
        rows = _describe_arch("student", self.families)
        if len(self.methods) > 1:
            rows.append(("method", "one of " + ", ".join(sorted(self.methods))))
        for m, doms in sorted(self.methods.items()):
            rows += [(f"method.{m}.{p}", d.describe()) for p, d in sorted(doms.items())]
        if len(self.teachers) > 1:
            rows.append(("teacher", "one of " + ", ".join(self.teachers)))
        c = self.chain
        if c.max_assistants:
            rows.append(("chain.length", f"int in [{c.min_assistants}, {c.max_assistants}]"))
            rows.append(("chain.mode", "one of " + ", ".join(sorted(set(c.modes)))))
            rows += _describe_arch("chain.<i>", self.assistant_families)
        return rows


def _sample_arch(trial: optuna.Trial, prefix: str, families: dict[str, dict[str, Domain]]) -> ArchSpec:
    family = _choose(trial, f"{prefix}.family", sorted(families))
    values = {p: d.suggest(trial, f"{prefix}.{family}.{p}") for p, d in families[family].items()}
    problems: list[str] = []
    spec = check_spec({"family": family, **values}, lambda k, m: problems.append(f"{k}: {m}"))
    if spec is None:
        raise ValueError(f"sampled an invalid {prefix} architecture: " + "; ".join(problems))
    return spec


def _describe_arch(prefix: str, families: dict[str, dict[str, Domain]]) -> list[tuple[str, str]]:
    rows = []
    if len(families) > 1:
        rows.append((f"{prefix}.family", "one of " + ", ".join(sorted(families))))
    for fam, doms in sorted(families.items()):
        rows += [(f"{prefix}.{fam}.{p}", d.describe()) for p, d in sorted(doms.items())]
    return rows


def _choose(trial: optuna.Trial, name: str, options: list[str]) -> str:
    return options[0] if len(options) == 1 else trial.suggest_categorical(name, options)


@dataclass(frozen=True)
class Screened:
    """What :func:`screen` decided: the candidate with its chain ordered, or the reason it was rejected."""

    candidate: Candidate
    params: dict[str, int]  # "student", "teacher" and each assistant's label -> parameter count
    reason: Optional[str] = None  # None when feasible
    constraints: dict[str, float] = field(default_factory=dict)  # Optuna constraint values: > 0 violated

    @property
    def ok(self) -> bool:
        return self.reason is None


def screen(cand: Candidate, limits: Limits, counts: Callable[[ArchSpec], tuple[int, int]],
           teacher_params: int | None) -> Screened:
    """Order the chain by capacity and check limits and ordering, using ``counts(spec) -> (params, macs)``.

    Capacity is the parameter count. A chain is valid when teacher > assistant_1 > ... > student holds
    strictly; the sampled order of assistants does not matter (they are sorted), duplicates are invalid.
    A candidate without assistants is not ordered against its teacher.
    """
    s_params, s_macs = counts(cand.student)
    sizes = {a: counts(a)[0] for a in cand.chain.assistants}
    ordered = tuple(sorted(cand.chain.assistants, key=lambda a: -sizes[a]))
    out = Candidate(cand.student, cand.method, Chain(cand.chain.mode, ordered), cand.teacher)
    params = {"student": s_params, **{a.label(): sizes[a] for a in ordered}}
    if teacher_params is not None:
        params["teacher"] = teacher_params
    constraints = {
        "max_params": float(s_params - limits.max_params) if limits.max_params else 0.0,
        "max_macs": float(s_macs - limits.max_macs) if limits.max_macs else 0.0,
    }
    reasons = []
    if constraints["max_params"] > 0:
        reasons.append(f"student has {s_params:,} params, over limits.max_params={limits.max_params:,}")
    if constraints["max_macs"] > 0:
        reasons.append(f"student has {s_macs:,} MACs, over limits.max_macs={limits.max_macs:,}")
    chain_sizes = ([teacher_params] if teacher_params is not None else []) + [sizes[a] for a in ordered] + [s_params]
    # How far the chain is from strictly decreasing: the sum of the non-decreasing steps (+1 for ties).
    # Without assistants there is no chain to order: a student as large as its teacher (born-again networks)
    # is a legitimate direct distillation.
    disorder = sum(max(0, b - a + 1) for a, b in zip(chain_sizes, chain_sizes[1:])) if ordered else 0
    constraints["chain_order"] = float(disorder)
    if disorder > 0:
        labels = (["teacher"] if teacher_params is not None else []) + [a.label() for a in ordered] + ["student"]
        steps = " > ".join(f"{n} ({p:,})" for n, p in zip(labels, chain_sizes))
        reasons.append(f"not ordered by capacity: need {steps} strictly")
    return Screened(out, params, "; ".join(reasons) or None, constraints)


def _check_student_value(name: str, param: str, value: Any, report) -> None:
    check_spec({"family": name, param: value}, report)  # every edge value of a domain must build


def _check_method_value(name: str, param: str, value: Any, report) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        report(param, f"expected a number, got {value!r}")
    else:
        check_hyperparameters(name, {param: value}, report)


def _parse_families(raw: Any, problems: Collector, section: str = "students") -> dict[str, dict[str, Domain]]:
    return parse_group(raw, section, "model family", FAMILIES, lambda n: set(vars(FAMILIES.get(n).Params())),
                        lambda n: (), _check_student_value, problems)


def _parse_methods(raw: Any, problems: Collector) -> dict[str, dict[str, Domain]]:
    # No hyperparameter is required: each has a default (kdnas.distill), used where the space leaves it out.
    return parse_group(raw, "methods", "distillation method", METHODS, lambda n: set(METHODS.get(n).hyperparameters),
                       lambda n: (), _check_method_value, problems)


_SPACE_KEYS = ("chain", "limits", "methods", "students", "teachers")


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
        limits = parse_section(Limits, raw.get("limits"), "limits", local.add)
        chain = parse_section(ChainSettings, raw.get("chain") or {"max_assistants": 0}, "chain", local.add)
        assistants = families
        # Read from the file, not the parsed section: the assistants' problems are listed even when another
        # key of `chain` has one (a chain section that does not parse is itself reported).
        raw_assistants = raw["chain"].get("assistants") if isinstance(raw.get("chain"), dict) else None
        if isinstance(raw_assistants, dict):
            assistants = _parse_families(raw_assistants, local, "chain.assistants")
        teachers = raw.get("teachers")
        if teachers is not None and (not isinstance(teachers, list) or not teachers):
            local.add("teachers", f"expected a list of teacher names (a name, or a list of names for an ensemble), "
                      f"got {teachers!r}")
    problems.problems.extend(local.problems)
    if local.problems:
        return None
    return SearchSpace(str(path), families, methods, limits, chain, assistants, teachers)


def load_space(path: str | Path) -> SearchSpace:
    problems = Collector(path)
    space = check_space(Path(path), problems)
    problems.raise_if_any()
    assert space is not None
    return space
