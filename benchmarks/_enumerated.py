"""Enumerated spaces trained under several seeds: the ground truth the yardstick (search_reliability.py) scores against.

A space small enough to list is trained candidate by candidate through kdnas's own trial code
(``search_efficiency.train_all``: ``make_objective(prepare(cfg))`` on an ``optuna.trial.FixedTrial`` numbered by
the candidate's index, so its training seed is kdnas's ``trial_seed(study seed, index)``), once per study seed.
Each seed's figures are cached (``search_efficiency``'s format: ``{"setup", "teacher", "candidates": {key: rec}}``),
so a rerun trains only what is missing, and the digits caches of ``search_efficiency.py --train-seed S`` are read
as they are.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna

from kdnas.config import load_study
from kdnas.distill import METHODS

import _studies  # noqa: E402  (benchmarks/ is on sys.path: the caller's folder)
import search_efficiency as se  # noqa: E402


def domain_values(domain) -> list:
    """Every value of an enumerable domain, as the Optuna parameter holds it (list choices as JSON text, the way
    ``Domain.suggest`` passes them to Optuna)."""
    vals = se.domain_values(domain)
    if domain.kind == "categorical" and not all(isinstance(v, (bool, int, float, str)) or v is None for v in vals):
        vals = [json.dumps(v) for v in vals]
    return vals


def _arch_axes(prefix: str, families: dict) -> list[dict]:
    """Every architecture of ``families`` as Optuna parameters named like ``SearchSpace.sample`` names them."""
    out = []
    for fam in sorted(families):
        doms = families[fam]
        names = [p for p, d in doms.items() if d.kind != "fixed"]  # fixed values are not Optuna parameters
        head = {f"{prefix}.family": fam} if len(families) > 1 else {}
        for combo in itertools.product(*(domain_values(doms[p]) for p in names)):
            out.append({**head, **{f"{prefix}.{fam}.{p}": v for p, v in zip(names, combo)}})
    return out


def enumerate_space(space) -> list[dict]:
    """Every candidate of ``space`` as Optuna parameters: any students, methods and teachers, and a chain of at most one
    assistant (``chain.length`` 0 or 1, each mode, each assistant); label-only methods get no chain, as in
    ``SearchSpace.sample``."""
    c = space.chain
    if c.max_assistants > 1:
        raise SystemExit("the benchmark space may have at most one assistant (chain.max_assistants <= 1)")
    students = _arch_axes("student", space.families)
    assistants = _arch_axes("chain.0", space.assistant_families) if c.max_assistants else []
    grid = []
    for method in sorted(space.methods):
        doms = space.methods[method]
        names = [p for p, d in doms.items() if d.kind != "fixed"]
        head = {"method": method} if len(space.methods) > 1 else {}
        methods = [{**head, **{f"method.{method}.{p}": v for p, v in zip(names, combo)}}
                   for combo in itertools.product(*(domain_values(doms[p]) for p in names))]
        chains: list[dict] = [{}]
        teachers: list[dict] = [{}]
        if len(getattr(space, "teachers", ())) > 1 and METHODS.get(method).uses_teacher:  # several teachers
            teachers = [{"teacher": t} for t in space.teachers]
        if c.max_assistants and METHODS.get(method).uses_teacher:
            lengths = [n for n in (0, 1) if c.min_assistants <= n <= c.max_assistants]
            length = (lambda n: {"chain.length": n}) if len(lengths) > 1 else (lambda n: {})
            modes = sorted(set(c.modes))
            chains = [length(0)] if 0 in lengths else []
            chains += [{**length(1), **({"chain.mode": m} if len(modes) > 1 else {}), **a}
                       for m in modes for a in assistants]
        grid += [{**s, **m, **t, **ch} for s in students for m in methods for t in teachers for ch in chains]
    # Check every point against the space's own sampler: a parameter it does not ask for, or one it asks for that
    # is missing, is a bug here (FixedTrial raises on a missing one; an extra one would be silently ignored).
    for p in grid:
        t = optuna.trial.FixedTrial(p)
        space.sample(t)
        if set(t.params) != set(p):
            raise AssertionError(f"enumerated {sorted(p)}, the space samples {sorted(t.params)}")
    return grid


@dataclass
class Truth:
    """An enumerated space's candidates under K seeds: ``acc[i, s]`` validation accuracy of candidate ``i`` under
    seed ``s`` (``keys[i]`` its ``key_of``), its costs (from the first seed's cache) and the teacher's."""

    name: str
    keys: list[str]
    grid: list[dict]  # Optuna parameters, by candidate
    acc: np.ndarray  # (candidates, seeds)
    costs: list[dict]  # params, macs, latency_ms per candidate
    labels: list[str]
    teacher: dict
    n_val: int
    objectives: list[str]
    cfg: Any  # the study config (of the first seed)

    @property
    def seeds(self) -> int:
        return self.acc.shape[1]


@dataclass
class SpaceDef:
    """An enumerated space: how to build its study config for one training seed, and where that seed's cache is."""

    name: str
    make_cfg: Callable[[Path, int], Any]  # (cache dir, seed) -> StudyConfig
    cache_file: Callable[[Path, int], Path]


def load_truth(sd: SpaceDef, cache: Path, seeds: list[int], train: bool) -> Truth:
    """Read (and with ``train``, complete) every seed's cache of ``sd``; candidates that failed under any seed are
    left out (none do in the shipped spaces)."""
    per_seed, cfg0, teacher0 = [], None, None
    for s in seeds:
        cfg = sd.make_cfg(cache, s)
        grid = enumerate_space(cfg.space)
        path = sd.cache_file(cache, s)
        if train:
            teacher, lookup = se.train_all(cfg, grid, path)
        elif path.exists():
            data = json.loads(path.read_text())
            teacher, lookup = data["teacher"], data["candidates"]
        else:
            raise SystemExit(f"{path}: no cache for seed {s} (run without --no-train to train it)")
        keys = [se.key_of(cfg.space.sample(optuna.trial.FixedTrial(p))) for p in grid]
        missing = [k for k in keys if k not in lookup]
        if missing:
            raise SystemExit(f"{path}: {len(missing)} of {len(keys)} candidates missing (run without --no-train)")
        per_seed.append(lookup)
        if cfg0 is None:
            cfg0, teacher0, grid0, keys0 = cfg, teacher, grid, keys
    ok = [i for i, k in enumerate(keys0) if all("failed" not in lk[k] for lk in per_seed)]
    acc = np.array([[lk[keys0[i]]["val_accuracy"] for lk in per_seed] for i in ok])
    first = per_seed[0]
    costs = [{m: first[keys0[i]][m] for m in ("params", "macs", "latency_ms")} for i in ok]
    labels = [f"{first[keys0[i]]['student']} {first[keys0[i]]['method']}" + _chain_label(grid0[i]) for i in ok]
    from kdnas.data import load_split  # the validation set's size: the binomial part of every interval

    n_val = len(load_split(cfg0.data, "cpu", cfg0.path).val)
    return Truth(sd.name, [keys0[i] for i in ok], [grid0[i] for i in ok], acc, costs, labels, teacher0, n_val,
                 list(cfg0.objectives), cfg0)


def _chain_label(params: dict) -> str:
    fam = {k: v for k, v in params.items() if k.startswith("chain.0.")}
    return (" via " + ",".join(f"{k.split('.')[-1]}={v}" for k, v in fam.items())) if fam else ""


# --- the digits space: search_efficiency.py's, in its own cache layout (runs/search_efficiency[_seedS]/) ---------

def _digits_dir(cache: Path, seed: int) -> Path:
    return cache / ("search_efficiency" + (f"_seed{seed}" if seed else ""))


def _digits_cfg(cache: Path, seed: int):
    """search_efficiency.py's study for ``--train-seed seed`` exactly, so that its caches are valid here."""
    run_dir = _digits_dir(cache, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    space_path = run_dir / "space.yaml"
    space_path.write_text(se.SPACE)
    overrides = {"name": run_dir.name, "seed": seed,
                 "search": {"space": str(space_path.resolve()), "early_stopping": {"enabled": False}}}
    return load_study(_studies.derive(se.STUDY, run_dir, overrides))


DIGITS = SpaceDef("digits", _digits_cfg, lambda cache, seed: _digits_dir(cache, seed) / "candidates.json")

# --- the MNIST-5k space: small students (438 to 19,074 params), labels only or Hinton KD, direct or through one of
# two assistants. 7 students x (labels only, KD direct, KD via either assistant) = 28 candidates. Every seed's study
# shares one run folder (its teacher, assistants and latency figures: the same for every seed), with a cache file
# per seed. The students are far apart in capacity (accuracies tens of points apart) and the smallest are at the
# mercy of their seed (several points): the case where one lucky training makes the front.
MNIST_SPACE = """\
students:
  plain_cnn:
    channels: {type: categorical, choices: [[4, 8], [8, 16], [4, 8, 16], [8, 8, 16, 16], [16, 16, 32, 32]]}
    pool_every: 1
    kernel_size: 3
  resnet_cifar:
    depth: 8
    width: {type: categorical, choices: [0.25, 0.5]}
methods:
  none: {}
  hinton: {temperature: 4.0, alpha: 0.9}
chain:
  max_assistants: 1
  modes: [takd]
  assistants:
    resnet_cifar: {depth: 14, width: 0.5}
    plain_cnn: {channels: {type: categorical, choices: [[32, 32, 64, 64]]}, pool_every: 1, kernel_size: 3}
"""
# --smoke: one student, three candidates (labels only, KD direct, KD through one assistant), on digits (_studies.SMOKE).
SMOKE_SPACE = """\
students:
  plain_cnn: {channels: {type: categorical, choices: [[4, 8]]}, pool_every: 1, kernel_size: 3}
methods:
  none: {}
  hinton: {temperature: 4.0, alpha: 0.9}
chain:
  max_assistants: 1
  assistants:
    resnet_cifar: {depth: 8, width: 0.5}
"""
MNIST_NAME, SMOKE_NAME = "search_reliability_mnist5k", "search_reliability_smoke"


def _mnist_cfg(name: str, space: str, smoke: bool) -> Callable[[Path, int], Any]:
    def make(cache: Path, seed: int):
        run_dir = cache / name
        run_dir.mkdir(parents=True, exist_ok=True)
        space_path = run_dir / "space.yaml"
        space_path.write_text(space)
        # studies/mnist5k.yaml's split, teacher (ResNet-20, 10 epochs) and assistants' recipe (5 epochs); students
        # trained 3 epochs (brief), one thread, early stopping off (every candidate trains to the end).
        overrides = {"name": name, "seed": seed, "threads": 1, "student": {"train": {"epochs": 3}},
                     "search": {"space": str(space_path.resolve()), "early_stopping": {"enabled": False}}}
        return load_study(_studies.derive(_studies.STUDIES / "mnist5k.yaml", run_dir, overrides, smoke=smoke))
    return make


MNIST = SpaceDef("mnist5k", _mnist_cfg(MNIST_NAME, MNIST_SPACE, False),
                 lambda cache, seed: cache / MNIST_NAME / f"candidates_seed{seed}.json")
SMOKE = SpaceDef("smoke", _mnist_cfg(SMOKE_NAME, SMOKE_SPACE, True),
                 lambda cache, seed: cache / SMOKE_NAME / f"candidates_seed{seed}.json")
SPACES = {"digits": DIGITS, "mnist5k": MNIST, "smoke": SMOKE}
