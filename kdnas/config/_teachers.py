"""The study's teachers: one (``teacher:``), or several the search chooses from (``teachers:``).

    teacher:   {arch: {...}, train: {...}, seed: 0}                # one teacher, as before
    teachers:                                                      # or several, each by name:
      resnet20: {arch: {...}, train: {...}}
      resnet8:  {arch: {...}, checkpoint: r8.pt}

With ``teachers:``, each distilled trial samples its teacher (the Optuna parameter ``teacher``) among the
search space's ``teachers`` list: a name, or a list of names for an ensemble (distilled from the mean of its
members' softened outputs, kdnas/distill/_ensemble.py). Without that list, each declared teacher alone is a
choice. An ensemble is named by its members in the study file's order, joined by ``+`` (``resnet20+resnet8``).
The first declared teacher is the study's *reference*: labels-only students, the hypervolume and the report's
teacher line are measured against it.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from kdnas.core import Collector, parse_section
from kdnas.models import ArchSpec, check_spec
from kdnas.train import TrainRecipe

_TEACHER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # no `+`: it joins an ensemble's members
SINGLE = "teacher"  # the name of the one teacher of a `teacher:` study


@dataclass(frozen=True)
class TeacherConfig:
    arch: dict[str, Any]  # an architecture spec: {family: NAME, <param>: value, ...}
    checkpoint: Optional[str] = None  # a state_dict to load instead of training (path relative to the study file)
    seed: int = 0
    train: TrainRecipe = field(default_factory=TrainRecipe)


@dataclass(frozen=True)
class DeclaredTeacher:
    """One teacher the study file declares, with its parsed architecture and where the file declares it."""

    name: str  # its name under `teachers:`, or "teacher" for the one teacher of a `teacher:` study
    config: TeacherConfig
    spec: ArchSpec
    key: str  # the study file's key: "teacher" or "teachers.<name>"


def members(label: str) -> list[str]:
    """The declared teachers a choice label names: ``resnet20`` -> [resnet20]; ``a+b`` -> [a, b]."""
    return label.split("+")


def parse_teachers(cfg: Any, raw: dict, problems: Collector) -> dict[str, DeclaredTeacher]:
    """The study's declared teachers by name, from ``teacher:`` or ``teachers:`` (exactly one must be given); every
    problem goes to ``problems``. An empty result means a problem was reported."""
    single, several = raw.get("teacher"), raw.get("teachers")
    if single is not None and several is not None:
        problems.add("teachers", "declare one `teacher` or several `teachers`, not both")
        return {}
    if single is None and several is None:
        problems.add("teacher", "required key is missing (or declare several under `teachers`)")
        return {}
    if single is not None:
        if cfg.teacher is None:  # it did not parse: its problems are listed
            return {}
        return _declared(cfg, {SINGLE: (cfg.teacher, "teacher")}, problems)
    if not isinstance(several, dict) or not several:
        problems.add("teachers", f"expected a mapping of teacher names to teachers, got {several!r}")
        return {}
    parsed = {}
    for name, entry in several.items():
        key = f"teachers.{name}"
        if not isinstance(name, str) or not _TEACHER_NAME.match(name):
            problems.add(key, "a teacher's name must start with a letter or digit, then letters, digits, '_', '.', "
                         "'-' (`+` joins the members of an ensemble)")
            continue
        t = parse_section(TeacherConfig, entry, key, problems.add)
        if dataclasses.is_dataclass(t):
            parsed[name] = (t, key)
    return _declared(cfg, parsed, problems)


def _declared(cfg: Any, parsed: dict[str, tuple[TeacherConfig, str]], problems: Collector) -> dict[str, DeclaredTeacher]:
    out = {}
    for name, (t, key) in parsed.items():
        spec = check_spec(t.arch, problems.under(f"{key}.arch"))
        if t.checkpoint is not None and not cfg.resolve(t.checkpoint).is_file():
            problems.add(f"{key}.checkpoint", f"file not found: {cfg.resolve(t.checkpoint)}")
        if spec is not None:
            out[name] = DeclaredTeacher(name, t, spec, key)
    return out


def teacher_choices(declared: dict[str, DeclaredTeacher], listed: Optional[list], named: bool, space_file: str,
                    problems: Collector) -> tuple[str, ...]:
    """The labels a trial's ``teacher`` is sampled from: the space's ``teachers`` list (each entry a name or a
    list of names), members in declared order; by default each declared teacher alone. ``()`` for a
    ``teacher:`` study: its one teacher is not a choice (candidate keys stay what they were)."""
    space = Collector(space_file)
    order = list(declared)
    if listed is None:
        return tuple(order) if named else ()
    if not named:
        space.add("teachers", "the study file declares one `teacher`; declare several under `teachers: {name: "
                  "...}` in it to search teachers")
    labels: list[str] = []
    for i, entry in enumerate(listed):
        names = [entry] if isinstance(entry, str) else entry
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            space.add(f"teachers[{i}]", f"expected a teacher's name or a list of names (an ensemble), got {entry!r}")
            continue
        unknown = [n for n in names if n not in declared]
        if unknown and named:
            space.add(f"teachers[{i}]", f"unknown teacher {unknown[0]!r}; the study file declares: {', '.join(order)}")
            continue
        if len(set(names)) != len(names):
            space.add(f"teachers[{i}]", f"an ensemble lists a teacher twice: {names}")
            continue
        label = "+".join(sorted(names, key=lambda n: order.index(n) if n in order else 0))
        if label in labels:
            space.add(f"teachers[{i}]", f"lists the choice {label!r} twice")
            continue
        labels.append(label)
    problems.problems.extend(space.problems)
    return tuple(labels)
