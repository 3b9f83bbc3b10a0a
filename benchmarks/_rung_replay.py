"""The rung yardstick's simulation (benchmarks/rungs.py): a kdnas search replayed at equal CPU time against
cached trainings, flat (every training to one budget) or with rungs (``search.rungs``).

As in benchmarks/_yardstick.py, everything that decides what is trained is kdnas's own code: the sampler
(``make_sampler``), the space's ``sample``, the replicate cap (``replicates``, ``answer_from_replicates``), the
trial loop (``optimize``, tickets), ``when_stuck``, and before each trial ``plan_next`` (a promotion by
``promote`` from the :class:`~kdnas.candidates.Ladder` that ``ladder_for`` builds, else a re-evaluation by
``intensify``). A promotion is a trial kdnas enqueued; the replay reads its carried attributes
(``continuation``) and continues the very run (its seed index) that earned it. The reported front is
``ladder.view().front()`` (with rungs: ``Merged``, each pair compared at the highest rung both reached).

Only the training is a lookup. A new run of candidate c draws the next of c's cached seeds in a per-run random
order (without replacement) and keeps that seed index as it climbs; its figure at rung r is the cached run's
validation accuracy at epoch ``epochs[r]`` of the one schedule over the last budget (``candidates_curve*``), or
for the flat brief arm the 3-epoch annealed run's (``candidates_seed*``). What a training costs: the epochs it
adds times c's seconds per epoch (its 18-epoch ``train_seconds`` / 18, mean over seeds); evaluation and
latency are left out (a validation pass is a small fraction of an epoch, and every arm measures each
candidate's latency once).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna

from kdnas.candidates import EPOCHS, KEY, PROMOTED_FROM, REUSED, RUN, RUNG, CHECKPOINT, candidate_key, difference
from kdnas.candidates._estimate import Z
from kdnas.config import SINGLE
from kdnas.config._study import Rungs
from kdnas.costs import DIRECTIONS
from kdnas.study._rung_trial import DUPLICATE, check_duplicate, continuation
from kdnas.study._runner import plan_next, when_stuck
from kdnas.study._runtime import ladder_for
from kdnas.study._teachers import Teachers
from kdnas.study._trial import answer_from_replicates, objective_values, replicates, Sampled
from kdnas.study._workers import Tickets, optimize

import _enumerated  # noqa: E402
import _rung_truth  # noqa: E402
import _yardstick as ys  # noqa: E402

MAX_TRIALS = 3000  # a run ends here whatever it has spent (a sampler stuck on capped candidates)


@dataclass(frozen=True)
class Strategy:
    """How a search spends its CPU: ``epochs`` one budget (flat) or the rungs; ``source`` the cached runs it
    reads: ``brief`` (the flat brief search's own annealed runs), ``curve`` (the one long schedule) or
    ``restarts`` (each rung's stretch annealed, then restarted: _rung_truth.py --restarts)."""

    name: str
    epochs: tuple[int, ...]
    source: str
    keep: float = 1 / 3
    baselines: bool = True  # search.rungs.baselines: a kept distilled candidate's labels-only twin goes on with it

    @property
    def laddered(self) -> bool:
        return len(self.epochs) > 1


def strategy(spec: str, brief: int, curve: list[int]) -> Strategy:
    """``flat`` (the brief budget, its own runs), ``flatE`` (E epochs of the long schedule; E a curve epoch),
    ``rungsA-B-C`` (rungs at those epochs of the long schedule), ``restarts`` (rungs at every curve epoch, a
    schedule annealed within each rung); the last two with an optional ``_kK`` (keep share K) and ``_nobase`` (no
    labels-only twin taken along: search.rungs.baselines false)."""
    if spec.endswith("_nobase"):
        return dataclasses.replace(strategy(spec.removesuffix("_nobase"), brief, curve), name=spec, baselines=False)
    base, _, keep = spec.partition("_k")
    try:
        k = float(keep) if keep else 1 / 3
        if base == "flat":
            return Strategy(spec, (brief,), "brief")
        if base.startswith("flat"):
            e = int(base[4:])
            if e not in curve:
                raise ValueError
            return Strategy(spec, (e,), "curve")
        if base.startswith("rungs"):
            epochs = tuple(int(x) for x in base[5:].split("-"))
            if len(epochs) < 2 or any(e not in curve for e in epochs) or list(epochs) != sorted(set(epochs)) \
                    or not 0 < k < 1:
                raise ValueError
            return Strategy(spec, epochs, "curve", k)
        if base == "restarts" and 0 < k < 1:
            return Strategy(spec, tuple(curve), "restarts", k)
        raise ValueError
    except ValueError:
        raise ValueError(f"strategy {spec!r}: write flat, flatE, rungsA-B-C[_kK] or restarts[_kK], epochs among the cached "
                         f"curve's {curve} (e.g. flat{curve[-1]}, rungs{'-'.join(map(str, curve))})") from None


@dataclass
class RungTruth:
    """``base``: the flat brief truth (``_enumerated.Truth``: costs, config, brief accuracies by seed);
    ``curve[i, s, r]``: candidate i, seed s, at epoch ``epochs[r]`` of one schedule over ``epochs[-1]``;
    ``annealed[i, s]``: ``epochs[0]`` epochs alone, annealed (None when not cached); ``epoch_cost[i]``: CPU
    seconds per epoch; ``restarts[i, j, r]``: the restarted schedule's figures under seed ``restart_seeds[j]``
    (None when not cached)."""

    base: object
    epochs: list[int]
    curve: np.ndarray
    annealed: np.ndarray | None
    epoch_cost: np.ndarray
    restarts: np.ndarray | None = None
    restart_seeds: tuple[int, ...] = ()

    @property
    def brief_epochs(self) -> int:
        return int(self.base.cfg.student.train.epochs)

    @property
    def long(self):
        """The truth the fronts are scored against: every candidate at the last epoch, by seed."""
        return dataclasses.replace(self.base, acc=self.curve[:, :, -1])

    @property
    def unit(self) -> float:
        """CPU seconds of one flat brief training of the average candidate: the budgets' unit."""
        return float(self.brief_epochs * self.epoch_cost.mean())


def kd_pairs(rt: RungTruth) -> list[tuple[str, int, int]]:
    """(student, its labels-only candidate, its direct Hinton candidate) for each student that has both."""
    by: dict[str, dict[str, int]] = {}
    for i, p in enumerate(rt.base.grid):
        cand = rt.base.cfg.space.sample(optuna.trial.FixedTrial(p))
        arm = "none" if cand.method.name == "none" else "kd" if not cand.chain.assistants else None
        if arm:
            by.setdefault(cand.student.label(), {})[arm] = i
    return [(s, d["none"], d["kd"]) for s, d in sorted(by.items()) if len(d) == 2]


def simulate(rt: RungTruth, scorer, st: Strategy, seed: int, budgets: list[float]) -> dict[float, dict]:
    """One run of strategy ``st`` under sampler seed ``seed``: the scored report at each budget (in units of
    ``rt.unit``: the report after the last training whose CPU fits in it)."""
    t = rt.base
    search = dataclasses.replace(t.cfg.search, rungs=Rungs(list(st.epochs), st.keep, st.baselines) if st.laddered
                                 else Rungs())
    cfg = dataclasses.replace(t.cfg, search=search)
    object.__setattr__(cfg, "space_obj", t.cfg.space_obj)  # not an init field: replace() drops it
    recipe = {"space": t.name}
    ladder = ladder_for(cfg, t.n_val, recipe)
    # The one teacher's figures: what an answer from replicates rates its distillation efficiency against.
    teachers = Teachers({}, {SINGLE: dict(t.teacher)}, SINGLE)
    runtime = types.SimpleNamespace(cfg=cfg, table=ladder.first, recipe=recipe, teachers=teachers)
    index = {k: i for i, k in enumerate(t.keys)}
    acc = {"curve": lambda: rt.curve[:, :, [rt.epochs.index(e) for e in st.epochs]], "restarts": lambda: rt.restarts,
           "brief": lambda: t.acc[:, :, None]}[st.source]()
    if acc is None:
        raise SystemExit(f"strategy {st.name}: no valid {st.source} cache")
    K, K_long = acc.shape[1], rt.curve.shape[1]
    ids = rt.restart_seeds if st.source == "restarts" else tuple(range(K))  # position -> study seed
    gained = np.diff([0, *st.epochs]) * rt.epoch_cost[:, None]  # [i, r]: CPU of the training that reaches rung r
    rng = np.random.default_rng([seed, 20261])
    orders: dict[int, list[int]] = {}
    drawn: dict[int, list[int]] = {}
    ran: dict[int, tuple[int, int, int]] = {}  # trial -> (candidate, seed index, rung) of what it trained
    spent, trainings, promotions, in_a_row = 0.0, 0, 0, 0
    pending = sorted(budgets)
    out: dict[float, dict] = {}
    pairs = kd_pairs(rt)
    true = rt.long.acc.mean(axis=1)
    kkey = {k: candidate_key(json.loads(k), recipe) for k in t.keys}  # the yardstick's key -> kdnas's

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        nonlocal spent, trainings, promotions
        cand = cfg.space.sample(trial)
        i = index[json.dumps(cand.to_dict(), sort_keys=True)]  # search_efficiency.key_of's form
        costs = t.costs[i]
        for k, v in (("candidate", cand.to_dict()), ("student", cand.student.label()), ("method", cand.method.label()),
                     ("chain", cand.chain.label()), ("chain_length", len(cand.chain.assistants)), *costs.items()):
            trial.set_user_attr(k, v)
        promo = continuation(trial)  # kdnas's promotion, enqueued by plan_next: the run it continues
        if promo is not None:
            trial.set_user_attr(KEY, candidate_key(cand.to_dict(), recipe))
            check_duplicate(trial, promo[PROMOTED_FROM])
            s, rung, run = int(promo["seed"]), int(promo[RUNG]), int(promo[RUN])
            # kdnas's promotion must continue the very run it ranked: same candidate, seed, previous rung.
            if ran.get(promo[PROMOTED_FROM]) != (i, s, rung - 1):
                raise AssertionError(f"promotion of trial {promo[PROMOTED_FROM]} {ran.get(promo[PROMOTED_FROM])} "
                                     f"is not the run it continues {(i, s, rung - 1)}")
        else:
            full = replicates(runtime, trial, cand)
            if full is not None:
                return answer_from_replicates(runtime, trial, Sampled(cand, None, None, 0, reuse=full))
            s, rung, run = None, 0, trial.number
        cost = float(gained[i, rung])
        while pending and spent + cost > pending[0] * rt.unit:  # the report at a budget: before this training
            out[pending.pop(0)] = snapshot()
        if s is None:  # a new run: the next of the candidate's seeds in this replay's order for it
            d = drawn.setdefault(i, [])
            if len(d) % K == 0:
                orders[i] = list(rng.permutation(K))
            s = int(orders[i][len(d) % K])
            d.append(s)
        else:
            promotions += 1
        spent += cost
        trainings += 1
        ran[trial.number] = (i, s, rung)
        val = float(acc[i, s, rung])
        trial.set_user_attr("seed", s)
        trial.set_user_attr(EPOCHS, st.epochs[rung])
        if st.laddered:  # what kdnas's train() sets with rungs
            trial.set_user_attr(RUNG, rung)
            trial.set_user_attr(RUN, run)
            if rung < len(st.epochs) - 1:
                trial.set_user_attr(CHECKPOINT, f"replay:{i}:{s}:{rung}")
        for k, v in (("val_accuracy", val), ("train_seconds", cost), ("cindex", i)):
            trial.set_user_attr(k, v)
        return objective_values(cfg, val, costs, 0.0)

    def snapshot() -> dict:
        ladder.update(study.get_trials(deepcopy=False))
        members = [(index[json.dumps(e.attrs["candidate"], sort_keys=True)], e.estimate.mean, e.estimate.lo,
                    e.estimate.hi, e.n, Z * math.sqrt(e.estimate.seed_var / e.n), e.rung)
                   for e in ladder.view().front()]
        held = {}
        for i, d in drawn.items():  # a flat brief seed s shares its start with the long run of seed s: left out too
            rest = sorted(set(range(K_long)) - {ids[x] for x in d})
            held[i] = float(rt.long.acc[i, rest].mean()) if rest else float("nan")
        res = scorer.score([m[:6] for m in members], held)
        top = len(st.epochs) - 1
        res.update(cpu=spent / rt.unit, trainings=trainings, promotions=promotions, trials=len(study.trials),
                   runs=sum(len(d) for d in drawn.values()), distinct=len(drawn),
                   abs_error=float(np.mean([abs(m[1] - true[m[0]]) for m in members])) if members else float("nan"),
                   top_share=float(np.mean([m[6] == top for m in members])) if members else float("nan"),
                   member_epochs=float(np.mean([st.epochs[m[6]] for m in members])) if members else float("nan"))
        res.update(effects(ladder, pairs, true, kkey, t.keys))
        return res

    study = optuna.create_study(directions=[DIRECTIONS[o] for o in t.objectives],
                                sampler=ys.sampler_for(ys.Arm(st.name, cfg.search.replicates), cfg, seed))
    study.set_user_attr("objectives", t.objectives)
    tickets = Tickets(MAX_TRIALS, shared=False)

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal in_a_row
        ua = trial.user_attrs
        reused = bool(ua.get(REUSED))
        if reused or ua.get(DUPLICATE):
            tickets.give_back()  # as kdnas's runner: an answer from replicates (or a duplicate) is free
        in_a_row = in_a_row + 1 if reused else 0
        if trial.state == optuna.trial.TrialState.COMPLETE:  # as kdnas's runner (kdnas/study/_runner.py)
            ladder.update(study.get_trials(deepcopy=False))
            for table in ladder.tables:  # as its progress line leaves them: every rung's estimates up to date
                table.estimates()
            if when_stuck(cfg, study, ladder, in_a_row):
                study.stop()
        if not pending or len(study.trials) >= MAX_TRIALS:
            study.stop()

    optimize(study, objective, tickets, None, on_trial, lambda: plan_next(cfg, study, ladder))
    final = None
    for b in budgets:  # a run that stopped first (stuck) reports its last front at the budgets it did not reach
        if b not in out:
            final = final or {**snapshot(), "stopped_early": 1.0}
            out[b] = final
        out[b].setdefault("stopped_early", 0.0)
    return out


def effects(ladder, pairs: list[tuple[str, int, int]], true: np.ndarray, kkey: dict[str, str],
            keys: list[str]) -> dict:
    """The direct Hinton gain over labels-only of each student as the study would report it: at the highest rung
    where both candidates have a replicate (a flat study: its one rung), a paired difference with its 90 %
    interval (kdnas.candidates.difference), against the true gain (the long budget's means); like the report,
    only the students whose arms met at the highest rung any students' did."""
    per: dict[str, tuple] = {}
    for student, b, k in pairs:
        for r in range(ladder.rungs - 1, -1, -1):
            eb, ek = (ladder.tables[r].entries.get(kkey[keys[x]]) for x in (b, k))
            if eb is not None and ek is not None and eb.estimate is not None and ek.estimate is not None:
                d = difference(ek.estimate, eb.estimate)
                per[student] = (d.mean, d.lo, d.hi, r, float(true[k] - true[b]))
                break
    # As the report does (kdnas/results/_effects.py): the students whose arms met at the highest rung any did.
    top = max((p[3] for p in per.values()), default=0)
    per = {s: p for s, p in per.items() if p[3] == top}
    if not per:
        return {"kd_measured": 0.0, "kd_sign": float("nan"), "kd_mae": float("nan"), "kd_bias": float("nan"),
                "kd_covered": float("nan"), "kd_per_student": {}}
    v = np.array([p[:3] + (p[4],) for p in per.values()])
    return {"kd_measured": float(len(per)), "kd_sign": float(np.mean(np.sign(v[:, 0]) == np.sign(v[:, 3]))),
            "kd_mae": float(np.mean(np.abs(v[:, 0] - v[:, 3]))), "kd_bias": float(np.mean(v[:, 0] - v[:, 3])),
            "kd_covered": float(np.mean((v[:, 1] <= v[:, 3]) & (v[:, 3] <= v[:, 2]))),
            "kd_per_student": {s: list(p) for s, p in per.items()}}


def load(sd, cache: Path, brief_seeds: list[int], curve_seeds: list[int], epochs: list[int], train: bool,
         smoke: bool = False, restarts: bool = False) -> RungTruth:
    """The flat brief truth (``_enumerated.load_truth``) and the long curves and annealed first rungs of
    ``_rung_truth.py`` (trained first when ``train``; the annealed table is optional without it), and with
    ``restarts`` the restarted schedules of the seeds whose cache is complete and sound."""
    base = _enumerated.load_truth(sd, cache, brief_seeds, train=train)
    tables = {}
    for curve in (True, False):
        rows = []
        for s in curve_seeds:
            if train:
                _rung_truth.train(cache, s, epochs, curve=curve, smoke=smoke)
            data = _read(_rung_truth.cache_file(cache, s, epochs, curve, smoke=smoke), base.keys, required=curve)
            if data is None:
                break
            rows.append([[data[k]["curve"][str(e)] for e in (epochs if curve else epochs[:1])]
                         + [data[k]["train_seconds"]] for k in base.keys])
        tables[curve] = np.array(rows).transpose(1, 0, 2) if len(rows) == len(curve_seeds) else None
    c, ann = tables[True], tables[False]
    rt = RungTruth(base, list(epochs), c[:, :, :-1], None if ann is None else ann[:, :, 0],
                   c[:, :, -1].mean(axis=1) / epochs[-1])
    if restarts:
        rt.restarts, rt.restart_seeds = _restarts(rt, cache, curve_seeds, train, smoke)
    return rt


def _read(path: Path, keys: list[str], required: bool) -> dict | None:
    """A cache's candidates; None when it is missing or incomplete and not ``required``."""
    data = json.loads(path.read_text())["candidates"] if path.exists() else {}
    bad = [k for k in keys if k not in data or "failed" in data[k]]
    if not bad:
        return data
    if required:
        raise SystemExit(f"{path}: {len(bad)} of {len(keys)} candidates missing or failed (train them with "
                         "benchmarks/_rung_truth.py, or run without --no-train)")
    return None


def _restarts(rt: RungTruth, cache: Path, seeds: list[int], train: bool, smoke: bool):
    """The restarted schedules by seed. A seed's cache is left out when incomplete, or when its first rung is not
    the annealed first-rung run of the same seed: the two are the same training, so a difference means the
    cache was made by something else (seeds after the first of one --restarts command, before the fix)."""
    rows, used = [], []
    for j, s in enumerate(seeds):
        if train:
            _rung_truth.train(cache, s, rt.epochs, curve=False, restarts=True, smoke=smoke)
        path = _rung_truth.cache_file(cache, s, rt.epochs, False, restarts=True, smoke=smoke)
        data = _read(path, rt.base.keys, required=False)
        if data is None:
            print(f"{path}: missing or incomplete: seed {s} left out of the restarts", flush=True)
            continue
        a = np.array([[data[k]["curve"][str(e)] for e in rt.epochs] for k in rt.base.keys])
        if rt.annealed is not None and not np.allclose(a[:, 0], rt.annealed[:, j], rtol=0, atol=1e-9):
            print(f"{path}: its first rung is not the annealed {rt.epochs[0]}-epoch run of seed {s} (differs for "
                  f"{int((np.abs(a[:, 0] - rt.annealed[:, j]) > 1e-9).sum())} candidates): left out", flush=True)
            continue
        rows.append(a)
        used.append(s)
    return (np.stack(rows, axis=1), tuple(used)) if rows else (None, ())
