"""Judging students on accuracy and cost together: Pareto fronts, the combined score, hypervolume.

The objectives a study measures are validation accuracy (maximised) and costs (minimised): ``params``
(count), ``macs`` (multiply-accumulates) and ``latency`` (``latency_ms``, ms per batch). A study either
keeps them apart (``score.mode: pareto``, one Optuna objective each) or folds them into one number
(``score.mode: score``), MnasNet's weighted product (Tan et al. 2019, eq. 2), one factor per cost target::

    score = accuracy * prod over targets c of (cost_c / target_c) ** w_c,   w_c = below if cost_c <= target_c
                                                                                   else above

With MnasNet's ``below = above = -0.07`` (the default), doubling a cost must buy about 5 % more accuracy
(2 ** -0.07 = 0.953) to keep the score: a soft constraint that still rewards being smaller than the target.
``below = 0, above = -1`` makes the target nearly hard (no reward under it, a steep penalty over it).
Hard limits (``score.limits``) are Optuna constraints, set on the trial (``trial.set_constraint``) right after
the latency is measured and before training: an architecture over a limit is never trained, and the
samplers that read constraints (TPE, NSGA-II, GP) learn to avoid it.

Hypervolume makes a whole front one number, comparable between studies (a pareto study and a score study of
the same objectives included). Each objective is normalised: ``1 - accuracy``, and each cost divided by the
teacher's. The reference point is 1 in every objective: a student only adds volume when it is more accurate
than 0 % and cheaper than its teacher, and a perfect free student would score 1. Computed by moocore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Optional, Sequence

import numpy as np

# Objective name -> (trial attribute that holds its value, Optuna direction).
OBJECTIVES = {
    "accuracy": ("val_accuracy", "maximize"),
    "params": ("params", "minimize"),
    "macs": ("macs", "minimize"),
    "latency": ("latency_ms", "minimize"),
}
DIRECTIONS = {name: d for name, (_, d) in OBJECTIVES.items()}
METRIC_NAMES = {name: attr for name, (attr, _) in OBJECTIVES.items()}
# MnasNet (Tan et al. 2019, sec. 3): a model with twice the latency and 5 % more accuracy scores the same.
MNASNET_EXPONENT = -0.07


@dataclass(frozen=True)
class Targets:
    """Soft targets of the combined score, each in its cost's unit; null = the cost does not enter the score."""

    params: Optional[float] = None  # count
    macs: Optional[float] = None  # multiply-accumulates
    latency_ms: Optional[float] = None  # ms per batch

    def check(self, report) -> None:
        for key, value in vars(self).items():
            if value is not None and not value > 0:
                report(key, f"`{key} > 0` must hold, but got {key}={value}")

    def items(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in vars(self).items() if v is not None]


@dataclass(frozen=True)
class Limits:
    """Hard limits, checked once the latency is measured (params and MACs: the search space's `limits`)."""

    max_latency_ms: Optional[float] = None

    def check(self, report) -> None:
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            report("max_latency_ms", f"`max_latency_ms > 0` must hold, but got max_latency_ms={self.max_latency_ms}")


@dataclass(frozen=True)
class ScoreConfig:
    """The study file's ``score`` section."""

    mode: Literal["pareto", "score"] = "pareto"  # pareto: one objective per `objectives` entry; score: one, maximised
    targets: Targets = field(default_factory=Targets)
    below: float = MNASNET_EXPONENT  # exponent for a cost at or under its target (0: no reward for being smaller)
    above: float = MNASNET_EXPONENT  # exponent for a cost over its target (-1: a steep penalty)
    limits: Limits = field(default_factory=Limits)

    def check(self, report) -> None:
        for key in ("below", "above"):
            if getattr(self, key) > 0:
                report(key, f"`{key} <= 0` must hold (a positive exponent would reward cost), but got "
                            f"{key}={getattr(self, key)}")


def combined_score(accuracy: float, costs: Mapping[str, float], cfg: ScoreConfig) -> float:
    """``accuracy * prod (cost / target) ** w`` over the targets set in ``cfg`` (module docstring)."""
    score = accuracy
    for key, target in cfg.targets.items():
        ratio = costs[key] / target
        score *= ratio ** (cfg.below if ratio <= 1 else cfg.above)
    return float(score)


def constraints(costs: Mapping[str, float], limits: Limits) -> dict[str, float]:
    """Optuna constraint values, feasible when <= 0: the relative excess over each limit that is set."""
    out = {}
    if limits.max_latency_ms is not None:
        out["max_latency_ms"] = costs["latency_ms"] / limits.max_latency_ms - 1
    return out


def pareto_mask(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (``directions``: 'maximize' / 'minimize').

    A row is dominated when another row is at least as good in every objective and better in one.
    Duplicated rows do not dominate each other.

    Why not every pair: a report of 5,000 trials compared 25 million pairs (0.6 s, and memory to match) after
    every trial. In lexicographic order a row can only be dominated by a row before it, and a row dominated by
    anything is dominated by a front member (dominance is transitive). So the rows are taken in that order; the
    first one left is on the front, and every row it dominates is struck out at once (one array operation per
    front member, not one Python step per row): O(rows x front) comparisons, and fronts are small.
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return np.zeros(len(v), dtype=bool)
    sign = np.array([-1.0 if d.lower().startswith("max") else 1.0 for d in directions])
    order = np.lexsort((v * sign).T[::-1])  # by the first column, then the second, ...
    cols = (v * sign)[order].T.copy()  # now everything is minimised, in that order; one array per objective
    left = np.ones(len(v), dtype=bool)  # not struck out yet
    on_front = []
    i = 0
    while True:
        rest = np.flatnonzero(left[i:])
        if not len(rest):
            break
        i += int(rest[0])
        on_front.append(i)
        # The rows after it that it dominates: at least as good in every objective, better in one.
        all_le = np.ones(len(v) - i - 1, dtype=bool)
        any_lt = np.zeros(len(v) - i - 1, dtype=bool)
        for col in cols:
            all_le &= col[i] <= col[i + 1:]
            any_lt |= col[i] < col[i + 1:]
        left[i + 1:] &= ~(all_le & any_lt)
        i += 1
    mask = np.zeros(len(v), dtype=bool)
    mask[order[on_front]] = True
    return mask


def measured_front(rows: Sequence[Mapping[str, float]], objectives: Sequence[str]) -> np.ndarray:
    """Pareto mask of ``rows`` (trial attributes) over the measured ``objectives`` (names of ``OBJECTIVES``)."""
    values = [[r[METRIC_NAMES[o]] for o in objectives] for r in rows]
    return pareto_mask(values, [DIRECTIONS[o] for o in objectives])


def feasible(trial) -> bool:
    """Whether an Optuna trial meets all its constraints (none set: feasible)."""
    return all(v <= 0 for v in trial.constraints.values())


def normalise(rows: Sequence[Mapping[str, float]], objectives: Sequence[str], teacher: Mapping[str, float]) -> np.ndarray:
    """Rows of trial attributes -> points to minimise: ``1 - accuracy``, each cost / the teacher's cost."""
    points = np.empty((len(rows), len(objectives)))
    for j, name in enumerate(objectives):
        attr = METRIC_NAMES[name]
        col = np.array([float(r[attr]) for r in rows])
        points[:, j] = 1 - col if DIRECTIONS[name] == "maximize" else col / float(teacher[attr])
    return points


def hypervolume(points: np.ndarray) -> float:
    """Hypervolume of normalised points (to minimise) against the reference point 1 in every objective."""
    import moocore

    points = np.asarray(points, dtype=float)
    if points.size == 0:
        return 0.0
    return float(moocore.hypervolume(points, ref=np.ones(points.shape[1])))


def hypervolume_history(points: np.ndarray) -> list[float]:
    """``h[n]`` = hypervolume of points ``0..n`` (rows in trial order): how the front grew, trial by trial."""
    points = np.asarray(points, dtype=float)
    out: list[float] = []
    front = points[:0]
    for p in points:
        # A point the running front dominates leaves it, and its hypervolume, as they are: moocore (exact, not
        # incremental) runs only when the front changes, a few hundred times in 5,000 trials.
        if out and ((front <= p).all(axis=1) & (front < p).any(axis=1)).any():
            out.append(out[-1])
            continue
        front = np.vstack([front, p])
        front = front[pareto_mask(front, ["minimize"] * points.shape[1])]
        out.append(hypervolume(front))
    return out
