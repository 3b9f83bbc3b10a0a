"""A candidate's identity: the key of everything that decides how its student is trained.

Two trials with the same key train the same network the same way (student architecture, assistant chain,
distillation method with every hyperparameter, defaults filled in, in a study of several teachers the teacher
choice, and the study's recipe: the student's training, the assistants' and the teachers'); only the seed
differs. A one-teacher study's candidates name no teacher, so their keys are what they were before teachers
could be searched. So the second is a *replicate* of the
first, and the candidate's figure is the mean over its replicates (kdnas/candidates/_table.py).

The recipe is part of the key although a resumed study refuses a changed one (kdnas/study/_resume.py): a key
stays meaningful outside its study, e.g. when two studies' candidate tables are compared.
"""

from __future__ import annotations

from typing import Any, Mapping

from kdnas.distill import resolve_hyperparameters
from kdnas.models import digest


def canonical(candidate: Mapping[str, Any]) -> dict[str, Any]:
    """``Candidate.to_dict()`` with the method's hyperparameters completed by their defaults: ``hinton`` and
    ``hinton(temperature=4)`` (its default) are one candidate."""
    method = dict(candidate["method"])
    name = method.pop("name")
    chain = candidate.get("chain") or {"mode": "takd", "assistants": []}
    if not chain.get("assistants"):
        chain = {"mode": "takd", "assistants": []}  # without assistants the mode means nothing
    out = {"student": candidate["student"], "method": {"name": name, **resolve_hyperparameters(name, method)},
           "chain": chain}
    if candidate.get("teacher"):  # a study of several teachers: the teacher is part of what is trained
        out["teacher"] = candidate["teacher"]
    return out


def candidate_key(candidate: Mapping[str, Any], recipe: Mapping[str, Any] | None) -> str:
    """16 hex characters naming the candidate (``Candidate.to_dict()``) trained under ``recipe`` (the study's
    ``comparable["study"]`` record: student, assistant and teacher training)."""
    return digest({"candidate": canonical(candidate), "recipe": dict(recipe or {})}, 16)
