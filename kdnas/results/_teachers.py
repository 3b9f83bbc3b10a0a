"""Which teacher a candidate learned from, and each teacher choice's figures (issue #27).

A study may declare several teachers, and each distilled trial samples one teacher *choice*: a declared teacher
(``resnet20``) or an ensemble of several, distilled from the mean of their softened outputs, labelled by its
members joined by ``+`` (``resnet20+resnet8``). The study records each teacher's figures (``teachers``: params,
MACs, latency, validation and test accuracy, identity; an ensemble's costs are its members' sums): the space's
choices in the space's order, then the declared teachers no trial samples alone (an ensemble's members, the
reference). The *reference* is the first declared teacher, whose figures the study's ``teacher`` attribute holds:
it normalises the hypervolume, and the distillation efficiency of a labels-only student, which has no teacher, is
taken against it. The report lists and compares teachers with the reference first.

A study with one teacher (the ``teacher:`` form, and every study from before) has one choice, labelled
``teacher``; a study that predates the ``teachers`` record has its ``teacher`` record alone. A trial from before
the ``teacher_name`` attribute learned from that one teacher unless it trained on labels only.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from kdnas.candidates import canonical
from kdnas.config import SINGLE  # the label of the one teacher of a single-teacher study


def _identity(info: Mapping[str, Any]) -> Any:
    return info.get("identity") or info.get("cache_key") or info.get("checkpoint_sha256")


def teachers_of(attrs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{label: info}`` of every teacher a study records (its user attributes), the reference first, then in the
    recorded order (the space's choices, then declared teachers that are only ensemble members or the reference);
    {} when the study records no teacher. The reference is the one whose identity the study's ``teacher``
    attribute holds."""
    teachers = dict(attrs.get("teachers") or {})
    ref = attrs.get("teacher")
    if not teachers:
        return {SINGLE: dict(ref)} if ref else {}
    first = next((k for k, v in teachers.items() if ref and _identity(v) is not None
                  and _identity(v) == _identity(ref)), next(iter(teachers)))
    return {first: teachers[first], **{k: v for k, v in teachers.items() if k != first}}


def choices_of(attrs: Mapping[str, Any], teachers: Mapping[str, Any]) -> list[str]:
    """The teacher choices a trial samples (the study's recorded space; an older record: every recorded teacher),
    the reference first where it is one of them."""
    space = ((attrs.get("comparable") or {}).get("space") or {}).get("teachers")
    labels = [str(x) for x in space] if space else list(teachers)
    ref = reference(teachers)
    return [ref] + [x for x in labels if x != ref] if ref in labels else labels


def reference(teachers: Mapping[str, Any]) -> str | None:
    """The reference teacher's label: first in ``teachers_of``."""
    return next(iter(teachers), None)


def method_of(attrs: Mapping[str, Any]) -> str:
    return str(attrs.get("method") or "").split("(")[0]


def label_of(attrs: Mapping[str, Any]) -> str | None:
    """The teacher choice of a trial (its user attributes) or a candidate (``Entry.attrs``); None for labels-only
    training, and for a trial that says nothing of its method (made by hand, or by another tool)."""
    if attrs.get("teacher_name"):
        return str(attrs["teacher_name"])
    method = method_of(attrs)
    if method in ("", "none"):
        return None
    return str((attrs.get("candidate") or {}).get("teacher") or SINGLE)  # recorded before `teacher_name`


def twin_key(attrs: Mapping[str, Any]) -> str:
    """What a candidate is apart from its teacher (``Entry.attrs``): student, method with every hyperparameter
    (defaults filled in), chain. Two candidates with one twin key differ only in the teacher they learned from."""
    cand = {k: v for k, v in (attrs.get("candidate") or {}).items() if k != "teacher"}
    return json.dumps(canonical(cand), sort_keys=True)


def _num(v: Any, fmt: str) -> str:
    return "?" if v is None else format(v, fmt)


def _describe(label: str, info: Mapping[str, Any]) -> str:
    what = f"ensemble of {', '.join(f'`{m}`' for m in info['members'])}; " if info.get("members") else ""
    return (f"`{label}` ({what}{_num(info.get('params'), ',')} params, {_num(info.get('macs'), ',')} MACs, "
            f"val {_num(info.get('val_accuracy'), '.1%')}, test {_num(info.get('test_accuracy'), '.1%')})")


def choices_line(teachers: Mapping[str, Mapping[str, Any]], choices: list[str]) -> str:
    """The summary's Teacher line of a study with several teacher choices: each with its params and accuracies,
    then the recorded teachers no trial samples (the reference, or an ensemble's members)."""
    ref = reference(teachers)
    line = (f"Teacher: {len(choices)} choices, sampled per distilled trial: "
            f"{'; '.join(_describe(c, teachers[c]) for c in choices if c in teachers)}.")
    rest = [k for k in teachers if k not in choices]
    if rest:
        line += f" Not sampled alone: {'; '.join(_describe(k, teachers[k]) for k in rest)}."
    return (line + f" The reference teacher is `{ref}`: it normalises the hypervolume and rates labels-only "
            "students. An ensemble's costs are its members' sums, its accuracy that of the mean of their "
            "probabilities (one training each).")
