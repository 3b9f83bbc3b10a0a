"""The study's teachers, prepared once per process: every declared teacher a choice needs (each trained once per
study, content-addressed and shared by every trial, worker and later command, or loaded from its checkpoint),
its logit table, its costs; and each ensemble choice built from them (kdnas/distill/_ensemble.py).

A study of one teacher (``teacher:``) has one choice, named ``teacher``, and trials that do not sample it; a
study of several (``teachers:``) has the space's choices (kdnas/config/_teachers.py). What the study attribute
``teachers`` records, per choice: name, spec (an ensemble: ``members``), identity, params, MACs, latency,
validation and test accuracy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from kdnas.config import SINGLE, StudyConfig, members
from kdnas.core import ArtifactStore
from kdnas.costs import LatencyCache, count
from kdnas.data import DataSplit
from kdnas.distill import Guide, ensemble_guide, teacher_logits
from kdnas.models import digest
from kdnas.study import _resume as resume
from kdnas.study._teacher import evaluation, get_teacher

log = logging.getLogger("kdnas")


@dataclass
class Teachers:
    """Each teacher choice's guide (with its outputs on the training split) and description, by label."""

    guides: dict[str, Guide]
    infos: dict[str, dict]  # what the study attribute `teachers` holds
    reference: str  # the first declared teacher: labels-only students are measured against it

    def guide(self, label: str | None) -> Guide:
        """The choice ``label``'s guide; None (a one-teacher study, or a labels-only trial): the reference's."""
        return self.guides[label or self.reference]

    def info(self, label: str | None) -> dict:
        return self.infos[label or self.reference]


def teacher_suffix(attrs: Mapping[str, Any]) -> str:
    """`` from resnet20`` for a candidate of a study of several teachers (its ``candidate`` names the teacher),
    empty otherwise: what progress lines, the closing lines and ``--pick`` append to a candidate's description.
    ``attrs``: a trial's user attributes or a candidate table entry's."""
    teacher = (attrs.get("candidate") or {}).get("teacher")
    return f" from {teacher}" if teacher else ""


def teacher_labels(cfg: StudyConfig) -> list[str]:
    """The choices a trial's teacher comes from (a one-teacher study: its one teacher)."""
    return list(cfg.space.teachers) or [SINGLE]


def prepare_teachers(cfg: StudyConfig, split: DataSplit, store: ArtifactStore, device: torch.device,
                     latency: LatencyCache, resumed: dict | None) -> Teachers:
    """Train or load every declared teacher some choice needs, the reference first; then build the ensembles."""
    labels = teacher_labels(cfg)
    reference = next(iter(cfg.teacher_set))
    needed = [reference] + [n for n in cfg.teacher_set if n != reference and any(n in members(c) for c in labels)]
    shape, classes = split.input_shape, split.num_classes
    # Requested first: beside the training (a core spare) each is measured while the teachers train or load.
    pending = {n: latency.request(cfg.teacher_set[n].spec, shape, classes, cfg.costs.latency) for n in needed}
    augment = cfg.student.train.augment.active
    guides: dict[str, Guide] = {}
    infos: dict[str, dict] = {}
    for name in needed:
        model, info = get_teacher(cfg, split, store, device, None if name == reference else name)
        counts = count(cfg.teacher_set[name].spec, shape, classes, cfg.costs.counter)
        identity = info.get("cache_key") or info["checkpoint_sha256"]
        info.update(params=counts.params, macs=counts.macs, identity=identity)
        check_identity(cfg, resumed, name, identity, name == reference)
        logits = teacher_logits(model, identity, split, store, random_augment=augment)
        info.update(pending[name]())
        info["logits_cached"] = logits.cached
        guides[name] = Guide(name, identity, model, logits, info)
        infos[name] = info
    for label in labels:
        parts = members(label)
        if len(parts) > 1:
            guides[label], infos[label] = _ensemble(label, [guides[p] for p in parts], split, store)
    order = labels + [n for n in needed if n not in labels]
    return Teachers(guides, {k: infos[k] for k in order}, reference)


def check_identity(cfg: StudyConfig, resumed: dict | None, name: str, identity: str, is_reference: bool) -> None:
    """A resumed study must have the same teachers: the reference as its ``teacher`` attribute records it, every
    other by name in ``teachers``."""
    if is_reference:
        resume.check_inputs(cfg, resumed, teacher=identity)
        return
    stored = ((resumed or {}).get("teachers") or {}).get(name) or {}
    resume.check_inputs(cfg, {"teacher": {"cache_key": stored.get("identity")}} if stored else None, teacher=identity,
                        key=cfg.teacher_set[name].key)


def _ensemble(label: str, parts: list[Guide], split: DataSplit, store: ArtifactStore) -> tuple[Guide, dict]:
    """An ensemble choice: its guide and its description (costs summed over members: they all run; its own
    accuracy, from the mean of their probabilities)."""
    key = digest({"ensemble": [g.key for g in parts]})
    info = {"name": label, "members": [g.name for g in parts], "identity": key,
            **{k: sum(float(g.info[k]) for g in parts) for k in ("params", "macs", "latency_ms")},
            "logits_cached": all(g.info.get("logits_cached") for g in parts)}
    info["params"], info["macs"] = int(info["params"]), int(info["macs"])
    guide = ensemble_guide(label, key, parts, info)
    info.update(evaluation(guide.model, {"cache_key": key}, split, store))
    return guide, info
