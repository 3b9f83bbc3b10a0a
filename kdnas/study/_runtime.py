"""What every trial of one process needs, prepared once: the data split, the teacher and its outputs, the
assistant pool, the latency cache (and its child process), cached counts."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from kdnas.candidates import CandidateTable, Ladder
from kdnas.config import StudyConfig
from kdnas.core import ArtifactStore
from kdnas.costs import (AFTER, HERE, Counts, LatencyCache, LatencyService, combined_score, count, measuring_place,
                         resolve_device)
from kdnas.data import DataSplit, load_split
from kdnas.distill import AssistantPool, Guide, MethodSpec
from kdnas.models import ArchSpec
from kdnas.train import resolve_precision
from kdnas.study import _resume as resume
from kdnas.study._store import open_store
from kdnas.study._teachers import Teachers, prepare_teachers


@dataclass
class Runtime:
    """Everything the objective needs, prepared once per `kdnas search` process."""

    cfg: StudyConfig
    split: DataSplit  # on the training device
    device: torch.device
    store: ArtifactStore
    latency: LatencyCache
    teachers: Teachers  # every teacher choice's guide (outputs on the training split computed once) and info
    assistants: AssistantPool
    recipe: dict  # the study's training recipe: part of every candidate's key
    ladder: Ladder  # the study's candidates at each rung (one rung without search.rungs), updated from its trials
    precision: str = "fp32"  # the study's precision as it runs on `device` (kdnas/train/_precision.py)
    _counts: dict = field(default_factory=dict)

    @property
    def teacher(self) -> Guide:
        """The reference teacher (the first declared): a one-teacher study's teacher."""
        return self.teachers.guide(None)

    @property
    def teacher_info(self) -> dict:
        return self.teachers.info(None)

    @property
    def table(self) -> CandidateTable:
        """The candidates at the first budget: where every run starts, and what the replicate cap counts."""
        return self.ladder.first

    def close(self) -> None:
        self.latency.close()

    def counts(self, spec: ArchSpec) -> Counts:
        if spec not in self._counts:
            self._counts[spec] = count(spec, self.split.input_shape, self.split.num_classes, self.cfg.costs.counter)
        return self._counts[spec]


def prepare(cfg: StudyConfig, threads: int | None = None, workers: int = 1,
            resumed: dict | None = None) -> Runtime:
    """What every trial of this process needs; ``threads`` per process, ``workers`` processes in all.
    ``resumed``: the stored study's attributes, whose split and teacher these must be (kdnas.study._resume)."""
    device = resolve_device(cfg.device)
    resolve_device(cfg.costs.latency.device)
    if device.type == "cuda" and device.index is not None:
        # The worker's GPU is the process's current one (kdnas/study/_placement.py): a latency measured on plain
        # `cuda` (costs.latency.device) and any allocation without an index land there, not on GPU 0.
        torch.cuda.set_device(device)
    torch.set_num_threads(threads or cfg.threads or os.cpu_count() or 1)
    # Started first: the child's imports overlap with loading the data and the teacher.
    place = measuring_place(cfg.costs.latency, device, torch.get_num_threads() * workers)
    latency = LatencyCache(cfg.run_dir / "latency_cache.json", None if place == HERE else LatencyService(),
                           after=place == AFTER)
    try:
        return _prepare(cfg, device, latency, resumed)
    except BaseException:
        latency.close()
        raise


def _prepare(cfg: StudyConfig, device: torch.device, latency: LatencyCache, resumed: dict | None) -> Runtime:
    split = load_split(cfg.data, device, cfg.path)
    resume.check_inputs(cfg, resumed, fingerprint=split.fingerprint)  # before a teacher is trained for it
    store = open_store(cfg)  # the run folder's, or one every machine of the study reaches
    teachers = prepare_teachers(cfg, split, store, device, latency, resumed)
    augment = cfg.student.train.augment.active
    a = cfg.assistants
    precision = resolve_precision(cfg.precision, device)
    pool = AssistantPool(split, store, device, a.train, MethodSpec.from_dict(a.method), a.drop_rate, a.seed,
                         random_augment=augment, precision=precision)
    recipe = resume.recipe(cfg)["study"]
    return Runtime(cfg, split, device, store, latency, teachers, pool, recipe, ladder_for(cfg, len(split.val), recipe),
                   precision)


def ladder_for(cfg: StudyConfig, n_val: int, recipe: dict | None) -> Ladder:
    """The study's :class:`Ladder`: its rungs, and in score mode the combined score as the ranking at a rung."""
    rungs = cfg.search.rungs

    def score(e) -> float:
        costs = {k: e.attrs[k] for k in ("params", "macs", "latency_ms")}
        return combined_score(e.estimate.mean, costs, cfg.score)

    scalar = score if cfg.score.mode == "score" else None
    return Ladder(n_val, cfg.objectives, recipe, rungs.epochs if rungs.enabled else (), rungs.keep, scalar,
                  rungs.baselines)
