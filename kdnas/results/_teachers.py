"""Which teacher a candidate learned from, and each teacher choice's figures (issue #27).

A study may declare several teachers, and each distilled trial samples one teacher *choice*: a declared teacher
(``resnet20``) or an ensemble of several, distilled from the mean of their softened outputs, labelled by its
members joined by ``+`` (``resnet20+resnet8``). The study records every choice's figures in declared order
(``teachers``: params, MACs, latency, validation and test accuracy; an ensemble's costs are its members' sums).
The first is the *reference*: it normalises the hypervolume, and the distillation efficiency of a labels-only
student, which has no teacher, is taken against it.

A study with one teacher (the ``teacher:`` form, and every study from before) has one choice, labelled
``teacher``; a study that predates the ``teachers`` record has its ``teacher`` record alone. A trial from before
the ``teacher_name`` attribute learned from that one teacher unless it trained on labels only.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from kdnas.candidates import canonical

SINGLE = "teacher"  # the label of the one teacher of a single-teacher study


def teachers_of(attrs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{label: info}`` of every teacher choice of a study (its user attributes), reference first; {} when the
    study records no teacher."""
    teachers = attrs.get("teachers")
    if teachers:
        return dict(teachers)
    return {SINGLE: dict(attrs["teacher"])} if attrs.get("teacher") else {}


def reference(teachers: Mapping[str, Any]) -> str | None:
    """The reference teacher's label: the first declared."""
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


def choices_line(teachers: Mapping[str, Mapping[str, Any]]) -> str:
    """The summary's Teacher line of a study with several teacher choices: each with its params and accuracies."""
    parts = []
    for label, info in teachers.items():
        what = f"ensemble of {', '.join(f'`{m}`' for m in info['members'])}; " if info.get("members") else ""
        val, test = info.get("val_accuracy"), info.get("test_accuracy")
        parts.append(f"`{label}` ({what}{_num(info.get('params'), ',')} params, {_num(info.get('macs'), ',')} MACs, "
                     f"val {_num(val, '.1%')}, test {_num(test, '.1%')})")
    ref = reference(teachers)
    return (f"Teacher: {len(teachers)} choices, sampled per distilled trial: {'; '.join(parts)}. The first, `{ref}`, "
            "is the reference: it normalises the hypervolume and rates labels-only students; an ensemble's costs "
            "are its members' sums, its accuracy that of the mean of their probabilities (one training each).")
