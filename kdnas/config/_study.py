"""The study file: typed sections, validated completely before anything runs.

``load_study(path)`` returns a :class:`StudyConfig` or raises one :class:`ConfigError` that lists every
problem in the study file and the search space file it names, each with file and key.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from kdnas.config._artifacts import ArtifactsConfig
from kdnas.config._space import SearchSpace, check_space
from kdnas.config._teachers import DeclaredTeacher, TeacherConfig, parse_teachers, teacher_choices
from kdnas.core import Collector, Problem, is_missing, load_yaml, parse_section
from kdnas.costs import DEVICE, METRIC_NAMES, CostsConfig, ScoreConfig
from kdnas.data import DataConfig, check_data_root
from kdnas.models import ArchSpec
from kdnas.train import PRECISIONS, EarlyStopping, TrainRecipe

OBJECTIVES = tuple(METRIC_NAMES)  # accuracy, params, macs, latency


@dataclass(frozen=True)
class StudentConfig:
    # Brief training: enough epochs to rank candidates, far fewer than a full run.
    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=5))


@dataclass(frozen=True)
class AssistantConfig:
    """How teacher assistants are trained. Fixed for the study (not searched), so that an assistant trained
    for one trial is the same network every later trial needs, and is trained once."""

    train: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=10))
    # Hinton KD with a high weight on the soft targets: an assistant's job is to pass the teacher on.
    method: dict[str, Any] = field(default_factory=lambda: {"name": "hinton", "temperature": 4.0, "alpha": 0.9})
    drop_rate: float = 0.5  # DGKD: per batch, each guide is dropped with this probability (one always stays)
    seed: int = 0

    def check(self, report) -> None:
        if not 0 <= self.drop_rate < 1:
            report("drop_rate", f"`0 <= drop_rate < 1` must hold, but got drop_rate={self.drop_rate}")
        check_method(self.method, report)


def check_method(raw: dict[str, Any], report) -> None:
    """A fixed method: ``{name: NAME, <hyperparameter>: value, ...}``; hyperparameters left out take defaults."""
    from kdnas.distill import METHODS, check_hyperparameters

    name = raw.get("name")
    if name not in METHODS:
        report("method.name", f"unknown distillation method {name!r}; valid names: {', '.join(METHODS.names())}")
        return
    check_hyperparameters(name, {k: v for k, v in raw.items() if k != "name"}, lambda key, msg: report(f"method.{key}", msg))


@dataclass(frozen=True)
class Intensify:
    """``search.intensify``: re-evaluate the candidates that decide the front (kdnas/candidates/_intensify.py)."""

    enabled: bool = True
    after: int = 10  # trainings before the first re-evaluation: explore first
    share: float = 0.25  # of the trainings after those, the share spent on re-evaluations

    def check(self, report) -> None:
        if self.after < 0:
            report("after", f"`after >= 0` must hold, but got after={self.after}")
        if not 0 <= self.share < 1:
            report("share", f"`0 <= share < 1` must hold, but got share={self.share}")


@dataclass(frozen=True)
class Rungs:
    """``search.rungs``: budgets of training a candidate climbs while it stays among the best (docs/search.md,
    "Rungs"). Every candidate trains ``epochs[0]`` epochs; at each rung the best ``keep`` share of the candidates
    that reached it (non-dominated sorting on their means there, crowding distance between equals) continues
    from its checkpoint to the next budget. One learning-rate schedule spans ``epochs[-1]``: a promoted run is
    the very run a flat study of that budget would train. None declared: every candidate trains
    ``student.train.epochs``, as before."""

    epochs: list[int] = field(default_factory=list)
    keep: float = 1 / 3
    # A kept distilled candidate takes its labels-only twin (same student, method `none`) along, so that what
    # its method adds is measured at the budget it reached (docs/search.md, "Rungs").
    baselines: bool = True

    @property
    def enabled(self) -> bool:
        return len(self.epochs) >= 2

    def check(self, report) -> None:
        if len(self.epochs) == 1:
            report("epochs", f"needs at least two budgets (one is `student.train.epochs`), but got {self.epochs}")
        if any(e < 1 for e in self.epochs):
            report("epochs", f"every budget must be at least 1 epoch, but got {self.epochs}")
        if any(b <= a for a, b in zip(self.epochs, self.epochs[1:])):
            report("epochs", f"budgets must increase strictly, but got {self.epochs}")
        if not 0 < self.keep < 1:
            report("keep", f"`0 < keep < 1` (the share promoted at each rung, e.g. 1/3) must hold, but got {self.keep}")


@dataclass(frozen=True)
class SearchConfig:
    space: str  # path of the search space file, relative to the study file
    trials: int = 20  # trials added by each `kdnas search` run
    timeout: Optional[float] = None  # seconds from the start of the command; no trial starts after it
    sampler: Literal["tpe", "random"] = "tpe"
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)  # stop trials that trail their peers
    # A candidate proposed again is trained again with a new seed (a replicate) up to this many times; past it,
    # the mean of its replicates answers the sampler without training (docs/search.md, "Replicates").
    replicates: int = 5  # docs/search.md, "The yardstick": 5 halves the --pick winner's optimism where 3 does not
    intensify: Intensify = field(default_factory=Intensify)
    rungs: Rungs = field(default_factory=Rungs)

    def check(self, report) -> None:
        if self.replicates < 1:
            report("replicates", f"`replicates >= 1` must hold, but got replicates={self.replicates}")
        if self.trials < 1:
            report("trials", f"`trials >= 1` must hold, but got trials={self.trials}")
        if self.timeout is not None and not self.timeout > 0:
            report("timeout", f"`timeout > 0` must hold, but got timeout={self.timeout}")


@dataclass(frozen=True)
class ParallelConfig:
    """How the workers of a study share it (see README, "Many workers")."""

    workers: int = 1  # worker processes `kdnas search` starts on this machine (flag: --workers)
    # RDB heartbeat (SQLite and PostgreSQL): a running trial writes one every `heartbeat_interval` seconds; a
    # RUNNING trial silent for `grace_period` seconds lost its worker and is failed, then retried up to
    # `max_retry` times. The grace period spans many intervals so that a busy machine is not taken for dead.
    heartbeat_interval: int = 15
    grace_period: int = 120
    max_retry: int = 1  # a candidate that killed its worker twice (out of memory?) is not tried again
    # A database server that goes away (a restart, a failover, a dropped connection): each worker retries with
    # backoff for up to this many seconds, then stops cleanly; `kdnas search` resumes (kdnas/study/_retry.py).
    storage_outage: float = 300
    # With `device: cuda`, the GPUs the workers go to, round robin (kdnas/study/_placement.py); null = every one.
    gpus: Optional[list[int]] = None
    # With `device: cuda`, at most this many workers per GPU: the workers take only as many of those GPUs as they
    # need (8 workers at 4 per GPU: two GPUs, the others left free); null = spread over every one.
    workers_per_gpu: Optional[int] = None

    def check(self, report) -> None:
        if self.workers_per_gpu is not None and self.workers_per_gpu < 1:
            report("workers_per_gpu", f"`workers_per_gpu >= 1` must hold, or null, but got {self.workers_per_gpu}")
        if self.gpus is not None and (not self.gpus or any(g < 0 for g in self.gpus) or
                                      len(set(self.gpus)) != len(self.gpus)):
            report("gpus", f"expected distinct GPU indices >= 0 (e.g. [0, 1]), or null for every GPU, got {self.gpus}")
        for key in ("workers", "heartbeat_interval"):
            if getattr(self, key) < 1:
                report(key, f"`{key} >= 1` must hold, but got {key}={getattr(self, key)}")
        if self.grace_period < 2 * self.heartbeat_interval:
            report("grace_period", f"`grace_period >= 2 * heartbeat_interval` must hold, but got "
                   f"grace_period={self.grace_period}, heartbeat_interval={self.heartbeat_interval}")
        if not self.storage_outage > 0:
            report("storage_outage", f"`storage_outage > 0` (seconds) must hold, but got {self.storage_outage}")
        if self.max_retry < 0:
            report("max_retry", f"`max_retry >= 0` must hold, but got max_retry={self.max_retry}")


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_DEVICE = DEVICE
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class StudyConfig:
    name: str  # the study's name: its run folder is runs/<name>/, its report reports/<name>/, beside the study file
    search: SearchConfig
    # One teacher, or several by name that the search chooses from (kdnas/config/_teachers.py). After loading,
    # `teacher` is the reference teacher (the first declared) either way.
    teacher: Optional[TeacherConfig] = None
    teachers: dict[str, Any] = field(default_factory=dict)
    seed: int = 0  # seeds the sampler and each trial's training
    device: str = "cpu"  # where training runs: cpu, cuda, cuda:N
    threads: Optional[int] = None  # torch threads for training; null = all cores
    # Training arithmetic: fp32, or bf16/fp16 autocast (auto: bf16 on a GPU that has it, fp16 on an older one, fp32
    # on a CPU). Evaluation and latency are unaffected (kdnas/train/_precision.py).
    precision: str = "fp32"
    storage: Optional[str] = None  # Optuna storage URL; null = sqlite in runs/<name>/study.db beside the study file
    objectives: list[str] = field(default_factory=lambda: ["accuracy", "params", "latency"])
    data: DataConfig = field(default_factory=DataConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    assistants: AssistantConfig = field(default_factory=AssistantConfig)
    costs: CostsConfig = field(default_factory=CostsConfig)  # how MACs are counted, where latency is measured
    score: ScoreConfig = field(default_factory=ScoreConfig)  # pareto or one combined score; hard limits
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    artifacts: ArtifactsConfig = field(default_factory=ArtifactsConfig)  # where weights live (config/_artifacts.py)
    # Filled in by load_study, not read from the file:
    path: Path = field(default=Path("."), init=False, compare=False)
    space_obj: Optional[SearchSpace] = field(default=None, init=False, compare=False)
    teacher_spec: Optional[ArchSpec] = field(default=None, init=False, compare=False)  # the reference teacher's
    teacher_set: dict[str, DeclaredTeacher] = field(default_factory=dict, init=False, compare=False)  # by name
    overrides: dict = field(default_factory=dict, init=False, compare=False)  # from flags; worker processes reload with them
    home: Path = field(default=Path("."), init=False, compare=False)  # the folder holding runs/ and reports/

    def check(self, report) -> None:
        if not _NAME.match(self.name):
            report("name", f"must start with a letter or digit, then letters, digits, '_', '.', '-' (it names the "
                   f"folders runs/<name>/ and reports/<name>/), but got {self.name!r}")
        for key in ("device",):
            if not _DEVICE.match(self.device):
                report(key, f"expected cpu, cuda, cuda:N or mps, got {self.device!r}")
        if self.precision not in PRECISIONS:
            report("precision", f"expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.storage is not None and not _URL.match(self.storage):
            shown = "***@" + self.storage.rsplit("@", 1)[1] if "@" in self.storage else self.storage  # may hold a password
            report("storage", "expected a database URL such as sqlite:///path/study.db or "
                   f"postgresql://user:password@host/db, got {shown!r}")
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
        return self.home / "runs" / self.name

    @property
    def report_dir(self) -> Path:
        return self.home / "reports" / self.name

    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.run_dir / 'study.db'}"


# The study keys that flags (and the notebook API's keyword arguments) set, and the flag each is typed as: a
# problem with a value given that way names the flag, not the study file.
FLAGS = {"seed": "--seed", "device": "--device", "precision": "--precision", "storage": "--storage", "search.trials": "--trials",
         "search.timeout": "--timeout", "parallel.workers": "--workers"}


def flag_overrides(**flags: Any) -> dict[str, Any]:
    """Study-file overrides from flag values (``trials=5, workers=2, ...``; None means not given), nested as the
    study file nests them (``{"search": {"trials": 5}}``)."""
    out: dict[str, Any] = {}
    for key, flag in FLAGS.items():
        value = flags.get(flag.removeprefix("--"))
        if value is None:
            continue
        section, _, sub = key.rpartition(".")
        if section:
            out.setdefault(section, {})[sub] = value
        else:
            out[key] = value
    return out


def load_study(path: str | Path, overrides: dict[str, Any] | None = None,
               flags: dict[str, str] | None = None) -> StudyConfig:
    """Load and validate a study file (and its search space). ``overrides`` are top-level keys from flags;
    ``flags`` maps the dotted keys they set (``search.trials``) to the flags, which messages name instead."""
    path = Path(path)
    problems = Collector(path)
    raw = load_yaml(path, "study file")
    if not isinstance(raw, dict):
        problems.add("", f"expected a mapping of study settings, got {raw!r}")
        problems.raise_if_any()
    if isinstance(raw.get("artifacts"), str):  # `artifacts: /shared/path` for `artifacts: {url: /shared/path}`
        raw = {**raw, "artifacts": {"url": raw["artifacts"]}}
    for key, value in (overrides or {}).items():  # flags win over the file; sections merge key by key
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw = {**raw, key: {**raw[key], **value}}
        else:
            raw = {**raw, key: value}
    cfg = parse_section(StudyConfig, raw, "", problems.add)
    _name_flags(problems, overrides or {}, flags or {})
    if is_missing(cfg):
        # Still look at the space file if the key is usable, so its problems are listed too.
        space = (raw.get("search") or {}).get("space") if isinstance(raw.get("search"), dict) else None
        if isinstance(space, str):
            check_space(_relative(path, space), problems)
        problems.raise_if_any()
    object.__setattr__(cfg, "path", path)
    object.__setattr__(cfg, "overrides", dict(overrides or {}))
    declared = parse_teachers(cfg, raw, problems)
    if declared:
        first = next(iter(declared.values()))
        for key, value in (("teacher_set", declared), ("teacher", first.config), ("teacher_spec", first.spec)):
            object.__setattr__(cfg, key, value)
    check_data_root(cfg.data, path, problems.add)
    _rung_budget(cfg, raw, problems)
    space_path = cfg.resolve(cfg.search.space)
    space = check_space(space_path, problems)
    if space is not None and declared:
        choices = teacher_choices(declared, space.teacher_lists, raw.get("teachers") is not None, str(space_path),
                                  problems)
        space = dataclasses.replace(space, teachers=choices)
    object.__setattr__(cfg, "space_obj", space)
    problems.raise_if_any()
    object.__setattr__(cfg, "home", study_home(path, cfg.name))
    return cfg


def _rung_budget(cfg: StudyConfig, raw: dict, problems: Collector) -> None:
    """With rungs, the student's schedule spans the last rung: ``student.train.epochs`` is that budget when the
    file leaves it out, and a different value is refused (it would say one budget and train another). Rungs are
    the study's stopping rule: early stopping, asked for explicitly beside them, is refused (off otherwise)."""
    rungs = cfg.search.rungs
    if not rungs.enabled:
        return
    stopping = ((raw.get("search") or {}).get("early_stopping") or {})
    if isinstance(stopping, dict) and stopping.get("enabled") is True:
        problems.add("search.early_stopping", "rungs replace early stopping (candidates are compared at the end of "
                     "each rung, and only the best go on): remove `early_stopping` or `rungs`")
    given = ((raw.get("student") or {}).get("train") or {}).get("epochs")
    if given is not None and given != rungs.epochs[-1]:
        problems.add("student.train.epochs", f"is {given}, but search.rungs.epochs ends at {rungs.epochs[-1]}: with "
                     "rungs the schedule spans the last rung; leave student.train.epochs out or make them equal")
        return
    train = dataclasses.replace(cfg.student.train, epochs=rungs.epochs[-1])
    object.__setattr__(cfg, "student", dataclasses.replace(cfg.student, train=train))


def study_home(path: Path, name: str) -> Path:
    """Where a study's ``runs/`` and ``reports/`` live: beside its study file, like every other path the file
    names (``data.root``, ``search.space``), so that any command finds them from any working folder.

    Earlier versions of kdnas put them in the working folder. A study found only there is used where it is, with a
    notice, so that no completed trial or cached weight is left behind by the change of rule."""
    home = path.parent
    legacy = Path(".")
    if (legacy / "runs" / name).is_dir() and not (home / "runs" / name).exists() and \
            legacy.resolve() != home.resolve():
        import logging

        logging.getLogger("kdnas").warning(
            "note: using runs/%s in the working folder, where earlier versions of kdnas kept it; runs/ and "
            "reports/ now live beside the study file: move them to %s to silence this", name, (home / "runs").resolve())
        return legacy
    return home


def _name_flags(problems: Collector, overrides: dict[str, Any], flags: dict[str, str]) -> None:
    """A problem with a value given by a flag names the flag (``--trials``), not the study file, which may hold
    a good value."""
    given = {f"{key}.{sub}" for key, value in overrides.items() if isinstance(value, dict) for sub in value}
    given |= {key for key, value in overrides.items() if not isinstance(value, dict)}
    problems.problems = [Problem(flags[p.key], "", p.message) if p.file == problems.file and p.key in given
                         and p.key in flags else p for p in problems.problems]


def _relative(study: Path, rel: str) -> Path:
    p = Path(rel).expanduser()
    return p if p.is_absolute() else study.parent / p
