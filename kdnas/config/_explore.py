"""Look at a search space before spending compute: its domains, the sizes it spans, sampled candidates."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from kdnas.config._space import SearchSpace, load_space, screen
from kdnas.config._teachers import members
from kdnas.core import KdnasError, load_yaml
from kdnas.costs import count
from kdnas.models import ArchSpec, check_spec

MAX_GRID = 512  # corner combinations counted per family; counting is milliseconds each on the meta device


@dataclass(frozen=True)
class Target:
    """What sizes depend on: the input shape, the class count, and the teacher (for chain ordering)."""

    input_shape: tuple[int, int, int]
    num_classes: int
    teacher: ArchSpec | None = None  # the reference teacher
    teachers: dict[str, ArchSpec] | None = None  # every declared teacher by name (a study of several teachers)


def open_space(path: str | Path, input_shape: tuple[int, int, int] | None, num_classes: int | None) -> tuple[SearchSpace, Target]:
    """A space file, or a study file (its space, its dataset's input shape and classes, its teacher)."""
    raw = load_yaml(Path(path), "space or study file")
    if isinstance(raw, dict) and "search" in raw:
        from kdnas.config._study import load_study
        from kdnas.data import load_split

        cfg = load_study(path)
        split = load_split(cfg.data, "cpu", cfg.path)
        return cfg.space, Target(input_shape or split.input_shape, num_classes or split.num_classes, cfg.teacher_spec,
                                 {name: d.spec for name, d in cfg.teacher_set.items()})
    return load_space(path), Target(input_shape or (3, 32, 32), num_classes or 10)


class _Counter:
    def __init__(self, target: Target):
        self.target, self._cache = target, {}

    def __call__(self, spec: ArchSpec) -> tuple[int, int]:
        if spec not in self._cache:
            c = count(spec, self.target.input_shape, self.target.num_classes)
            self._cache[spec] = (c.params, c.macs)
        return self._cache[spec]


def size_range(space: SearchSpace, target: Target) -> dict[str, Any]:
    """Params and MACs over the corners of every student family's domains (each range at its two ends,
    every categorical choice), with how many corners the limits reject."""
    counter = _Counter(target)
    out: dict[str, Any] = {}
    for family, domains in sorted(space.families.items()):
        names = sorted(domains)
        grids = [domains[n].extremes() for n in names]
        combos = list(itertools.islice(itertools.product(*grids), MAX_GRID))
        sizes = []
        for combo in combos:
            spec = check_spec({"family": family, **dict(zip(names, combo))}, lambda k, m: None)
            if spec is not None:
                sizes.append(counter(spec))
        lim = space.limits
        over = sum(1 for p, m in sizes if (lim.max_params and p > lim.max_params) or (lim.max_macs and m > lim.max_macs))
        out[family] = {
            "corners": len(sizes),
            "params": [min(p for p, _ in sizes), max(p for p, _ in sizes)] if sizes else None,
            "macs": [min(m for _, m in sizes), max(m for _, m in sizes)] if sizes else None,
            "corners_over_limits": over,
        }
    return out


def sample_candidates(space: SearchSpace, target: Target, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` feasible candidates drawn at random (screened like a search does), with their sizes."""
    counter = _Counter(target)
    teacher_params = counter(target.teacher)[0] if target.teacher else None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out: list[dict[str, Any]] = []
    attempts, rejected = 0, 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n:
            raise KdnasError(f"{space.path}: only {len(out)} of {n} candidates passed the limits and chain ordering in "
                             f"{attempts - 1} draws ({rejected} rejected); loosen `limits` or the chain's domains")
        trial = study.ask()
        cand = space.sample(trial)
        own = teacher_params
        if cand.teacher is not None and target.teachers:  # its own teacher (an ensemble: its members together)
            own = sum(counter(target.teachers[m])[0] for m in members(cand.teacher))
        s = screen(cand, space.limits, counter, own)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        if not s.ok:
            rejected += 1
            continue
        c = s.candidate
        params, macs = counter(c.student)
        out.append({
            "student": c.student.to_dict(), "params": params, "macs": macs, "method": c.method.to_dict(),
            "chain": {"mode": c.chain.mode, "assistants": [{"spec": a.to_dict(), "params": counter(a)[0]}
                                                          for a in c.chain.assistants]},
            **({"teacher": c.teacher} if c.teacher else {}),
            "label": f"{c.student.label()} {c.method.label()} {c.chain.label()}" + (f" from {c.teacher}" if c.teacher else ""),
        })
    return out
