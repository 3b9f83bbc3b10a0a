"""The study file: typed sections, validated completely before anything runs.

``load_study(path)`` returns a :class:`StudyConfig` or raises one :class:`ConfigError` that lists every
problem in the study file and the search space file it names, each with file and key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from kdnas._schema import Collector, is_missing, load_yaml, parse_section
from kdnas.costs import DEVICE, CostsConfig
from kdnas.data import DATASETS
from kdnas.models import ArchSpec, check_spec
from kdnas.score import METRIC_NAMES, ScoreConfig
from kdnas.space import SearchSpace, check_space
from kdnas.train import TrainRecipe

OBJECTIVES = tuple(METRIC_NAMES)  # accuracy, params, macs, latency


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    val_fraction: float = 0.2  # candidates are ranked on this split
    test_fraction: float = 0.2  # only reported, never used for selection
    seed: int = 0  # the split's seed; part of every cache key

    def check(self, report) -> None:
        if self.dataset not in DATASETS:
            report("dataset", f"unknown dataset {self.dataset!r}; valid names: {', '.join(DATASETS.names())}")
        for key in ("val_fraction", "test_fraction"):
            v = getattr(self, key)
            if not 0 < v < 1:
                report(key, f"`0 < {key} < 1` must hold, but got {key}={v}")
        if self.val_fraction + self.test_fraction >= 0.9:
            report("", f"val_fraction + test_fraction must leave at least 10% for training, but got "
                   f"{self.val_fraction} + {self.test_fraction}")


@dataclass(frozen=True)
class TeacherConfig:
    arch: dict[str, Any]  # an architecture spec: {family: NAME, <param>: value, ...}
    checkpoint: Optional[str] = None  # a state_dict to load instead of training (path relative to the study file)
    seed: int = 0
    train: TrainRecipe = field(default_factory=TrainRecipe)


@dataclass(frozen=True)
class StudentConfig:
    # Brief training: enough epochs to rank candidates, far fewer than a full run.
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=5))


@dataclass(frozen=True)
class SearchConfig:
    space: str  # path of the search space file, relative to the study file
    trials: int = 20  # trials added by each `kdnas search` run
    timeout: Optional[float] = None  # seconds; stop starting new trials after this
    sampler: Literal["tpe", "random"] = "tpe"

    def check(self, report) -> None:
        if self.trials < 1:
            report("trials", f"`trials >= 1` must hold, but got trials={self.trials}")
        if self.timeout is not None and not self.timeout > 0:
            report("timeout", f"`timeout > 0` must hold, but got timeout={self.timeout}")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DEVICE = DEVICE


@dataclass(frozen=True)
class StudyConfig:
    name: str  # the study's name: its run folder is runs/<name>/, its report reports/<name>/
    teacher: TeacherConfig
    search: SearchConfig
    seed: int = 0  # seeds the sampler and each trial's training
    device: str = "cpu"  # where training runs: cpu, cuda, cuda:N
    threads: Optional[int] = None  # torch threads for training; null = all cores
    storage: Optional[str] = None  # Optuna storage URL; null = sqlite:///runs/<name>/study.db
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "params", "latency"])
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    costs: CostsConfig = field(default_factory=CostsConfig)  # how MACs are counted, where latency is measured
    score: ScoreConfig = field(default_factory=ScoreConfig)  # pareto or one combined score; hard limits
    # Filled in by load_study, not read from the file:
    path: Path = field(default=Path("."), init=False, compare=False)
    space_obj: Optional[SearchSpace] = field(default=None, init=False, compare=False)
    teacher_spec: Optional[ArchSpec] = field(default=None, init=False, compare=False)

    def check(self, report) -> None:
        if not _NAME.match(self.name):
            report("name", f"must be letters, digits, '_', '.', '-' (it names folders), but got {self.name!r}")
        for key in ("device",):
            if not _DEVICE.match(self.device):
                report(key, f"expected cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.threads is not None and self.threads < 1:
            report("threads", f"`threads >= 1` must hold, but got threads={self.threads}")
        for i, obj in enumerate(self.objectives):
            if obj not in OBJECTIVES:
                report(f"objectives[{i}]", f"unknown objective {obj!r}; valid names: {', '.join(OBJECTIVES)}")
        if "accuracy" not in self.objectives:
            report("objectives", "must include 'accuracy'")
        if len(set(self.objectives)) != len(self.objectives):
            report("objectives", f"lists an objective twice: {self.objectives}")

    @property
    def space(self) -> SearchSpace:
        assert self.space_obj is not None
        return self.space_obj

    def resolve(self, rel: str) -> Path:
        """A path from the study file, relative to the study file's folder."""
        return _relative(self.path, rel)

    @property
    def run_dir(self) -> Path:
        return Path("runs") / self.name

    @property
    def report_dir(self) -> Path:
        return Path("reports") / self.name

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.run_dir / 'study.db'}"


def load_study(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Load and validate a study file (and its search space). ``overrides`` are top-level keys from flags."""
    path = Path(path)
    problems = Collector(path)
    raw = load_yaml(path, "study file")
    if not isinstance(raw, dict):
        problems.add("", f"expected a mapping of study settings, got {raw!r}")
        problems.raise_if_any()
    for key, value in (overrides or {}).items():  # flags win over the file; `search` merges key by key
        if key == "search" and isinstance(raw.get("search"), dict):
            raw = {**raw, "search": {**raw["search"], **value}}
        else:
            raw = {**raw, key: value}
    cfg = parse_section(StudyConfig, raw, "", problems.add)
    if is_missing(cfg):
        # Still look at the space file if the key is usable, so its problems are listed too.
        space = (raw.get("search") or {}).get("space") if isinstance(raw.get("search"), dict) else None
        if isinstance(space, str):
            check_space(_relative(path, space), problems)
        problems.raise_if_any()
    object.__setattr__(cfg, "path", path)
    teacher_spec = check_spec(cfg.teacher.arch, problems.under("teacher.arch"))
    object.__setattr__(cfg, "teacher_spec", teacher_spec)
    if cfg.teacher.checkpoint is not None and not cfg.resolve(cfg.teacher.checkpoint).is_file():
        problems.add("teacher.checkpoint", f"file not found: {cfg.resolve(cfg.teacher.checkpoint)}")
    space_path = cfg.resolve(cfg.search.space)
    object.__setattr__(cfg, "space_obj", check_space(space_path, problems))
    problems.raise_if_any()
    return cfg


def _relative(study: Path, rel: str) -> Path:
    p = Path(rel).expanduser()
    return p if p.is_absolute() else study.parent / p
