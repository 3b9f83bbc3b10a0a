"""A large synthetic kdnas study in SQLite, shaped like a real one (benchmarks/bookkeeping.py measures on it).

The study file is ``studies/mnist5k.yaml`` (three families, an optional assistant; objectives ``accuracy,
params, latency``), its candidates sampled from the real search space, with the study and trial attributes
kdnas writes (kdnas/study/_resume.py, _runner.py, _trial.py). Each student architecture gets invented costs
and a true accuracy (the larger, the more accurate, with scatter: fronts of 10-30 candidates), each trial a
validation accuracy drawn around its candidate's (seed noise, then 1,000 binomial validation images). About
22 % of the trials re-evaluate one of the better earlier candidates (up to ``search.replicates``: intensification
at its default share, a quarter of the trainings), a few propose a candidate at its cap (``reused``, no
training), 7 % are pruned, 1 % failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

N_VAL = 1000  # mnist5k's validation images
GENERATOR = 4  # bump when the synthetic study changes: the cache is keyed by it
NAME = "bookkeeping"


def config(folder: Path):
    """The study file, written into ``folder``: mnist5k's, RandomSampler (the sampler is not what is measured)."""
    import _studies

    from kdnas.config import load_study

    path = _studies.derive("mnist5k.yaml", folder, {"name": NAME, "threads": 1, "search": {"sampler": "random"}})
    return load_study(path)


class World:
    """The synthetic truth: each student architecture's costs and accuracy, each candidate's accuracy."""

    def __init__(self, seed: int):
        self.seed = seed
        self.archs: dict[str, dict] = {}

    def arch(self, student: dict) -> dict:
        key = json.dumps(student, sort_keys=True)
        if key not in self.archs:
            rng = np.random.default_rng([self.seed, int(hashlib.sha1(key.encode()).hexdigest()[:8], 16)])
            size = rng.uniform(0, 1)  # log-scaled between 3k and 100k parameters
            params = int(3e3 * (1e5 / 3e3) ** size)
            latency = 0.02 * (params / 1e3) ** 0.5 * rng.lognormal(0, 0.5)
            self.archs[key] = {"params": params, "macs": int(params * rng.uniform(20, 200)), "latency_ms": latency,
                               "acc": 0.91 + 0.06 * size + rng.normal(0, 0.006)}
        return self.archs[key]

    def accuracy(self, cand: dict) -> float:
        """The candidate's true validation accuracy: its architecture's, the method's effect, the chain's."""
        m = cand["method"]
        if m["name"] == "none":
            effect = -0.008
        else:
            effect = 0.004 - 0.006 * abs(np.log(m.get("temperature", 4.0) / 4.0)) - 0.01 * abs(m.get("alpha", 0.7) - 0.7)
        return float(min(0.995, self.arch(cand["student"])["acc"] + effect + 0.002 * len(cand["chain"]["assistants"])))


def _sampled(space, mem):
    """One candidate from the real space: (params, distributions, candidate dict) or the family's refusal."""
    trial = mem.ask()
    try:
        cand = space.sample(trial).to_dict()
    except ValueError as err:
        return trial.params, trial.distributions, None, str(err).splitlines()[0]
    return trial.params, trial.distributions, cand, None


def synthetic_trials(cfg, n: int, seed: int) -> list:
    """``n`` FrozenTrials in trial order, shaped like a real search's (module docstring)."""
    import optuna
    from optuna.trial import TrialState, create_trial

    from kdnas.candidates import candidate_key
    from kdnas.study._resume import recipe

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rng = np.random.default_rng(seed)
    world = World(seed)
    mem = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    study_recipe = recipe(cfg)["study"]
    cap = cfg.search.replicates
    done: dict[str, dict] = {}  # candidate key -> params, distributions, candidate, true accuracy, replicates
    out = []
    for number in range(n):
        u = rng.uniform()
        ua: dict = {}
        sa = {"kdnas:worker": {"host": "bench", "pid": 1000 + number % 4, "lock": f"/runs/w{number % 4}.lock"}}
        redo = [c for c in done.values() if c["n"] < cap] if 0.07 <= u < 0.29 else []
        if redo:  # a re-evaluation, of one of the better candidates, as intensification picks them
            c = max(rng.choice(redo, size=min(5, len(redo))), key=lambda c: c["acc"])
            ua.update(intensify="front" if rng.uniform() < 0.6 else "challenger")
            sa["fixed_params"] = dict(c["params"])
        else:
            for _ in range(10):  # a candidate at its cap: proposed again now and then (a few reused trials)
                params, dists, cand, refused = _sampled(cfg.space, mem)
                key = candidate_key(cand, study_recipe) if cand is not None else None
                if key not in done or done[key]["n"] < cap or rng.uniform() < 0.1:
                    break
            if cand is None:
                out.append(create_trial(state=TrialState.FAIL, params=params, distributions=dists, system_attrs=sa,
                                        user_attrs={"fail_reason": f"ValueError: {refused}"}))
                continue
            c = done.get(key) or {"key": key, "params": params, "dists": dists, "cand": cand, "n": 0,
                                  "acc": world.accuracy(cand), "vals": [], "tests": []}
        cand, arch = c["cand"], world.arch(c["cand"]["student"])
        chain = cand["chain"]["assistants"]
        ua.update(candidate=cand, candidate_key=c["key"], student=_label(cand["student"]),
                  method=_label(cand["method"]), chain=f"takd[{_label(chain[0])}]" if chain else "direct",
                  chain_length=len(chain), params=arch["params"], macs=arch["macs"])
        latency = {"latency_ms": arch["latency_ms"], "latency_iqr_ms": 0.02 * arch["latency_ms"],
                   "latency_median_ms": 1.03 * arch["latency_ms"], "latency_stable": True}
        cons = {"max_params": arch["params"] / 1e5 - 1, "max_macs": arch["macs"] / 2e7 - 1, "chain_order": 0.0}
        if c["n"] >= cap and not redo:  # at its replicate cap: answered from its replicates, without training
            val, test = float(np.mean(c["vals"])), float(np.mean(c["tests"]))
            ua.update(reused=True, replicates=c["n"], replicate=c["n"] + 1, val_accuracy=val, val_accuracy_se=0.005,
                      test_accuracy=test, score=val, **latency)
            out.append(create_trial(values=[val, arch["params"], arch["latency_ms"]], params=c["params"],
                                    distributions=c["dists"], user_attrs=ua, system_attrs=sa, constraints=cons))
            continue
        s = int(rng.integers(2**31))
        ua.update(seed=s, replicate=c["n"] + 1, teacher="8f7dd11609355520", method_hyperparameters={
            k: v for k, v in cand["method"].items() if k != "name"})
        ua["assistants"] = [{"spec": a, "key": f"{number:016x}", "trained_now": False, "guides": ["8f7dd11609355520"],
                             "val_accuracy": 0.97, "seconds": 12.5} for a in chain]
        if u < 0.07 and not redo:  # stopped early: trailing its peers at a checkpoint
            epoch = int(rng.integers(1, 4))
            ua.update(prune_reason=f"early stopping at epoch {epoch}: val accuracy below the median of its peers",
                      loss_history=list(rng.uniform(0.1, 2.0, epoch)), **latency)
            out.append(create_trial(state=TrialState.PRUNED, params=c["params"], distributions=c["dists"],
                                    user_attrs=ua, system_attrs=sa, constraints=cons))
            continue
        if 0.30 <= u < 0.31:
            ua["fail_reason"] = "out of memory: CUDA out of memory. Tried to allocate 20.00 MiB"
            out.append(create_trial(state=TrialState.FAIL, params=c["params"], distributions=c["dists"],
                                    user_attrs=ua, system_attrs=sa, constraints=cons))
            continue
        p = float(np.clip(c["acc"] + rng.normal(0, 0.004), 0, 1))
        val, test = rng.binomial(N_VAL, p) / N_VAL, rng.binomial(N_VAL, p) / N_VAL
        c["n"] += 1
        c["vals"].append(val)
        c["tests"].append(test)
        done[c["key"]] = c
        ua.update(weights=f"{s:016x}", val_accuracy=val, test_accuracy=test, score=val,
                  loss_history=sorted(rng.uniform(0.05, 2.0, 4), reverse=True), train_seconds=8.0 + 4 * u,
                  trial_seconds=9.0 + 4 * u, latency_calls=500, latency_raw_ms=arch["latency_ms"],
                  latency_probe_ms=0.9 * arch["latency_ms"], latency_seconds=0.5, **latency)
        out.append(create_trial(values=[val, arch["params"], arch["latency_ms"]], params=c["params"],
                                distributions=c["dists"], user_attrs=ua, system_attrs=sa, constraints=cons))
    return out


def _label(spec: dict) -> str:
    name = spec.get("family") or spec.get("name")
    return f"{name}(" + ",".join(f"{k}={v}" for k, v in sorted(spec.items()) if k not in ("family", "name")) + ")"


def study_attrs(cfg) -> dict:
    """The study's user attributes, as `kdnas search` records them."""
    from kdnas.study._resume import recipe

    return {
        "objectives": list(cfg.objectives), "score_mode": cfg.score.mode, "comparable": recipe(cfg),
        "teacher": {"spec": {"family": "resnet_cifar", "depth": 20, "width": 1.0}, "cache_key": "8f7dd11609355520",
                    "trained_now": False, "val_accuracy": 0.985, "test_accuracy": 0.981, "seconds": 2.1,
                    "params": 272474, "macs": 40813184, "latency_ms": 2.35, "latency_median_ms": 2.4,
                    "latency_iqr_ms": 0.03, "latency_stable": True, "logits_cached": True},
        "data": {"dataset": "mnist5k", "train": 3000, "val": N_VAL, "test": 1000, "fingerprint": "5c1f0e4a9b7d2e31",
                 "input_shape": [1, 28, 28], "num_classes": 10},
        "preprocess": {"format": 1, "input_shape": [1, 28, 28], "color": "L", "resize": None, "pixel_scale": 255.0,
                       "mean": [0.13], "std": [0.31], "classes": [str(i) for i in range(10)]},
    }



def _insert(db: Path, study_id: int, trials: list, started: float) -> None:
    """Append ``trials`` to the study in one SQLite transaction, in Optuna's schema and encodings.

    Why not ``study.add_trials`` for all: Optuna writes a trial's attributes one ORM statement each, about
    30 ms a trial here (2.5 minutes for 5,000). :func:`build` writes the first trials through Optuna and checks
    that every trial written here reads back as it was meant (a schema change stops the benchmark)."""
    from datetime import datetime

    from optuna.distributions import distribution_to_json

    con = sqlite3.connect(db)
    try:
        with con:
            number = con.execute("SELECT COUNT(*) FROM trials WHERE study_id = ?", (study_id,)).fetchone()[0]
            for t in trials:
                start = datetime.fromtimestamp(started + 12 * number).strftime("%Y-%m-%d %H:%M:%S.%f")
                end = datetime.fromtimestamp(started + 12 * number + 10).strftime("%Y-%m-%d %H:%M:%S.%f")
                tid = con.execute("INSERT INTO trials (number, study_id, state, datetime_start, datetime_complete) "
                                  "VALUES (?, ?, ?, ?, ?)", (number, study_id, t.state.name, start, end)).lastrowid
                number += 1
                con.executemany("INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) "
                                "VALUES (?, ?, ?, ?)", [(tid, k, t.distributions[k].to_internal_repr(v),
                                                         distribution_to_json(t.distributions[k]))
                                                        for k, v in t.params.items()])
                con.executemany("INSERT INTO trial_values (trial_id, objective, value, value_type) VALUES (?, ?, ?, ?)",
                                [(tid, i, float(v), "FINITE") for i, v in enumerate(t.values or [])])
                for table, attrs in (("trial_user_attributes", t.user_attrs), ("trial_system_attributes", t.system_attrs)):
                    con.executemany(f"INSERT INTO {table} (trial_id, key, value_json) VALUES (?, ?, ?)",
                                    [(tid, k, json.dumps(v)) for k, v in attrs.items()])
    finally:
        con.close()


def build(cfg, n: int, seed: int, cache: Path) -> Path:
    """The synthetic study's SQLite file (from ``cache`` when it holds one of this size, seed and generator)."""
    from kdnas.study._runner import open_study
    from kdnas.study._storage import rdb_storage

    db = cache / f"{NAME}-{n}-{seed}-g{GENERATOR}.db"
    if db.is_file():
        return db
    cache.mkdir(parents=True, exist_ok=True)
    part = db.with_suffix(".part")
    part.unlink(missing_ok=True)
    t0 = time.perf_counter()
    trials = synthetic_trials(cfg, n, seed)
    study = open_study(cfg, create=True, storage=rdb_storage(f"sqlite:///{part}"))
    for key, value in study_attrs(cfg).items():
        study.set_user_attr(key, value)
    head = 3  # through Optuna: what the rows written by _insert must look like
    study.add_trials(trials[:head])
    study._storage._backend.engine.dispose()
    _insert(part, study._study_id, trials[head:], time.time() - 12 * n)
    check = optuna_load(part)
    stored = check.get_trials(deepcopy=False)
    check._storage._backend.engine.dispose()
    fields = ("state", "params", "distributions", "user_attrs", "system_attrs", "values")
    bad = [(t.number, f) for t, want in zip(stored, trials) for f in fields if getattr(t, f) != getattr(want, f)]
    if len(stored) != n or bad:
        sys.exit(f"bookkeeping.py: the synthetic study does not read back as written (Optuna's schema changed?): "
                 f"{len(stored)} trials of {n}; differences (trial, field): {bad[:5]}")
    with contextlib.closing(sqlite3.connect(part)) as con:  # everything into the file, which then moves alone
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    for suffix in ("-wal", "-shm"):
        Path(f"{part}{suffix}").unlink(missing_ok=True)
    part.rename(db)
    print(f"wrote a {n}-trial synthetic study in {time.perf_counter() - t0:.1f}s: {db}", flush=True)
    return db


def optuna_load(db: Path):
    """The stored study, opened as kdnas opens it (WAL, its connection settings)."""
    import optuna

    from kdnas.study._storage import rdb_storage

    return optuna.load_study(study_name=NAME, storage=rdb_storage(f"sqlite:///{db}"))


def objective(cfg, rt, lock, batched: bool, bookkeeping: bool, seed: int = 0):
    """A trial of this study for Optuna, without training: it samples the real space and records what
    kdnas/study/_trial.py's phases record (one attribute at a time, as kdnas writes them, or ``batched``: one
    statement per phase, benchmarks/_proposals.py) and, with ``bookkeeping``, calls ``replicates()`` (which reads
    the study; ``rt``: what it needs of a Runtime); without, writes the two attributes it writes."""
    import optuna
    from _proposals import set_user_attrs

    from kdnas.candidates import KEY, candidate_key
    from kdnas.study import _trial
    from kdnas.study._liveness import mark

    world = World(seed)  # the study's: the same architectures, costs and accuracies
    rng = np.random.default_rng(seed + 1)

    def put(trial: optuna.Trial, attrs: dict) -> None:
        if batched:
            set_user_attrs(trial, attrs)
        else:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)

    def objective(trial: optuna.Trial):
        mark(trial, lock)
        cand = cfg.space.sample(trial)
        arch = world.arch(cand.to_dict()["student"])
        for key, value in {"max_params": arch["params"] / 1e5 - 1, "max_macs": 0.0, "chain_order": 0.0}.items():
            trial.set_constraint(key, value)
        put(trial, {"candidate": cand.to_dict(), "student": cand.student.label(), "method": cand.method.label(),
                    "chain": cand.chain.label(), "chain_length": len(cand.chain.assistants), "params": arch["params"],
                    "macs": arch["macs"], **({"teacher_name": "teacher"} if cand.method.name != "none" else {})})
        if bookkeeping:
            full = _trial.replicates(rt, trial, cand)
            if full is not None:
                return _trial.answer_from_replicates(rt, trial, _trial.Sampled(cand, None, None, 0, reuse=full))
        else:
            trial.set_user_attr(KEY, candidate_key(cand.to_dict(), rt.recipe))
            trial.set_user_attr("replicate", 1)
        val = rng.binomial(N_VAL, float(np.clip(world.accuracy(cand.to_dict()) + rng.normal(0, 0.004), 0, 1))) / N_VAL
        put(trial, {"seed": trial.number, "latency_ms": arch["latency_ms"], "latency_iqr_ms": 0.01,
                    "latency_median_ms": arch["latency_ms"], "latency_stable": True, "teacher": "8f7dd11609355520",
                    "assistants": [], "method_hyperparameters": {}})
        put(trial, {"weights": f"{trial.number:016x}", "val_accuracy": val, "test_accuracy": val,
                    "loss_history": [1.0, 0.5, 0.3, 0.2], "train_seconds": 8.0, "trial_seconds": 9.0, "score": val,
                    "distillation": _trial.efficiency(rt, cand, val, {k: arch[k] for k in ("params", "macs", "latency_ms")})})
        return val, arch["params"], arch["latency_ms"]

    return objective
