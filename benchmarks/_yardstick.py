"""The yardstick's simulation: a kdnas search replayed against an enumerated space trained under K seeds.

One run = one arm (how kdnas spends its trainings) x one sampler x one sampler seed, in an in-memory Optuna
study. Everything that decides what is trained is kdnas's own code: the sampler as ``make_sampler`` builds it,
proposals through the space's real ``sample``, candidates named by ``candidate_key`` (inside
``kdnas.study._trial.replicates``, which also applies the replicate cap), answers past the cap by
``answer_from_replicates``, re-evaluations by ``kdnas.study._runner.intensify`` (``due``/``choose``), the
trial loop by ``kdnas.study._workers.optimize`` with its tickets (an answer past the cap gives its ticket back),
and the front by ``CandidateTable.front()``. Only the training is replaced: the r-th training of candidate c in
a run returns c's validation accuracy under the r-th of its K cached seeds in a per-run random order (without
replacement; past K, a new order).

The one-seed arm is kdnas before #25: every proposal trained (no cap, no re-evaluation), the front the Pareto
front of the trials' values, each member's interval the binomial one of its single training (p ± z sqrt(p(1-p)/n),
the only interval one training can give).
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import warnings
from dataclasses import dataclass

import numpy as np
import optuna

from kdnas.candidates import REUSED, CandidateTable
from kdnas.candidates._estimate import Z, binomial_variance
from kdnas.config._study import Intensify
from kdnas.costs import DIRECTIONS, METRIC_NAMES, hypervolume, normalise, pareto_mask
from kdnas.study import make_sampler
from kdnas.study._runner import intensify, when_stuck
from kdnas.study._trial import Sampled, answer_from_replicates, objective_values, replicates
from kdnas.study._workers import Tickets, optimize

import search_efficiency as se  # noqa: E402

NO_CAP = 10**9  # the one-seed arm: every proposal trained
MAX_TRIALS = 2000  # a run ends here whatever it has trained (a sampler stuck on capped candidates)


@dataclass(frozen=True)
class Arm:
    name: str
    cap: int  # search.replicates; NO_CAP: one seed per trial (the trials' front)
    after: int = 10
    share: float = 0.0  # 0: no intensification
    sampler: str = "tpe"  # "tpe" (kdnas's make_sampler) or "tpe_mv" (multivariate, group: item 5)


def arm(spec: str) -> Arm:
    """``one_seed``, ``rep3`` (cap 3, no re-evaluation), ``rep3_a10_s0.25`` (cap 3, after 10, share 0.25);
    a ``+mv`` suffix: multivariate grouped TPE."""
    base, _, mv = spec.partition("+")
    sampler = "tpe_mv" if mv == "mv" else "tpe"
    if mv not in ("", "mv"):
        raise ValueError(f"arm {spec!r}: the only suffix is +mv")
    if base == "one_seed":
        return Arm(spec, NO_CAP, sampler=sampler)
    parts = base.split("_")
    try:
        if not parts[0].startswith("rep"):
            raise ValueError
        cap = int(parts[0][3:])
        after = int(parts[1][1:]) if len(parts) > 1 else 10
        share = float(parts[2][1:]) if len(parts) > 2 else 0.0
        if len(parts) not in (1, 3) or (len(parts) == 3 and (parts[1][0] != "a" or parts[2][0] != "s")) or cap < 1:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f"arm {spec!r}: write one_seed, repN or repN_aA_sS (e.g. rep3_a10_s0.25), "
                         f"optionally with +mv") from None
    return Arm(spec, cap, after, share, sampler)


def sampler_for(a: Arm, cfg, seed: int) -> optuna.samplers.BaseSampler:
    if a.sampler == "tpe":  # kdnas's own construction, the study seed replaced by the run's
        return make_sampler(dataclasses.replace(cfg, seed=seed, search=dataclasses.replace(cfg.search, sampler="tpe")), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # `multivariate`/`group` are flagged experimental
        # What OptunaHub's AutoSampler picks for a conditional space under 250 trials.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True, group=True)


class Scorer:
    """Truth-scored figures of a reported front (module docstring of search_reliability.py)."""

    def __init__(self, truth, pick_params: float):
        self.t = truth
        self.true = truth.acc.mean(axis=1)
        self.dirs = ["minimize"] * len(truth.objectives)
        pts = self.points(range(len(self.true)), self.true)
        self.true_hv = hypervolume(pts[pareto_mask(pts, self.dirs)])
        self.pick_params = pick_params
        within = [i for i, c in enumerate(truth.costs) if c["params"] <= pick_params]
        self.best_within = float(max(self.true[i] for i in within)) if within else float("nan")

    def points(self, idx, accs) -> np.ndarray:
        rows = [{**self.t.costs[i], "val_accuracy": float(a)} for i, a in zip(idx, accs)]
        return normalise(rows, self.t.objectives, self.t.teacher) if rows else np.zeros((0, len(self.t.objectives)))

    def score(self, members: list[tuple], held: dict[int, float]) -> dict:
        """``members``: (candidate, reported accuracy, lo, hi, replicates, seed half-width or NaN); ``held``: each
        candidate's mean over the seeds this run has not drawn (NaN when every seed was drawn)."""
        idx = [m[0] for m in members]
        rep = np.array([m[1] for m in members])
        true = self.true[idx]
        pts = self.points(idx, true)
        h = np.array([held.get(i, np.nan) for i in idx])
        ok = ~np.isnan(h)
        seed_hw = np.array([m[5] for m in members])
        out = {"front": len(members), "hv_regret": self.true_hv - (hypervolume(pts) if len(pts) else 0.0),
               "optimism": float(np.mean(rep - true)),
               "coverage": float(np.mean([m[2] <= self.true[m[0]] <= m[3] for m in members])),
               # The interval's seed part alone (mean ± z sqrt(seed_var / n)): the truth is measured on the same
               # validation images, so the binomial part of the interval is not what it has to cover.
               "coverage_seed": float(np.mean(np.abs(rep - true) <= seed_hw)) if not np.isnan(seed_hw).any() else float("nan"),
               "member_reps": float(np.mean([m[4] for m in members])),
               "optimism_heldout": float(np.mean(rep[ok] - h[ok])) if ok.any() else float("nan"),
               "coverage_heldout": float(np.mean([m[2] <= v <= m[3] for m, v, k in zip(members, h, ok) if k]))
               if ok.any() else float("nan")}
        # Scored by the held-out truth instead (the all-seeds truth where every seed was drawn): selection on the
        # drawn seeds cannot flatter it.
        h_or_true = np.where(ok, h, true)
        pts = self.points(idx, h_or_true)
        out["hv_regret_heldout"] = self.true_hv - (hypervolume(pts) if len(pts) else 0.0)
        within = [m for m in members if self.t.costs[m[0]]["params"] <= self.pick_params]
        if within:
            w = max(within, key=lambda m: (m[1], -self.t.costs[m[0]]["params"]))
            hw = h_or_true[idx.index(w[0])]
            out.update(pick_optimism=w[1] - self.true[w[0]], pick_regret=self.best_within - self.true[w[0]],
                       pick_optimism_heldout=w[1] - hw, pick_regret_heldout=self.best_within - hw,
                       pick_covered=float(w[2] <= self.true[w[0]] <= w[3]), pick_missing=0.0)
        else:
            out.update({k: float("nan") for k in ("pick_optimism", "pick_regret", "pick_optimism_heldout",
                                                  "pick_regret_heldout", "pick_covered")}, pick_missing=1.0)
        return out


def simulate(truth, scorer: Scorer, a: Arm, seed: int, budgets: list[int]) -> dict[int, dict]:
    """One run of arm ``a`` with sampler seed ``seed``: the scored front after each budget's trainings."""
    t = truth
    search = dataclasses.replace(t.cfg.search, replicates=a.cap,
                                 intensify=Intensify(enabled=a.share > 0, after=a.after, share=a.share))
    cfg = dataclasses.replace(t.cfg, search=search)
    object.__setattr__(cfg, "space_obj", t.cfg.space_obj)  # not an init field: replace() drops it
    index = {k: i for i, k in enumerate(t.keys)}
    recipe = {"space": t.name}
    table = CandidateTable(t.n_val, t.objectives, recipe)
    rt = types.SimpleNamespace(cfg=cfg, table=table, recipe=recipe)
    rng = np.random.default_rng([seed, 20251])
    orders: dict[int, list[int]] = {}
    drawn: dict[int, list[int]] = {}  # candidate -> seeds drawn so far in this run
    trained: list[int] = []  # candidate of each training, in order
    out: dict[int, dict] = {}
    K = t.seeds

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        cand = cfg.space.sample(trial)
        i = index[se.key_of(cand)]
        costs = t.costs[i]
        for k, v in (("candidate", cand.to_dict()), ("student", cand.student.label()),
                     ("method", cand.method.label()), ("chain", cand.chain.label()), *costs.items()):
            trial.set_user_attr(k, v)
        full = replicates(rt, trial, cand)  # kdnas's: names the candidate, counts its replicates, applies the cap
        if full is not None:
            return answer_from_replicates(rt, trial, Sampled(cand, None, None, 0, reuse=full))
        d = drawn.setdefault(i, [])
        if len(d) % K == 0:
            orders[i] = list(rng.permutation(K))
        s = int(orders[i][len(d) % K])
        d.append(s)
        trained.append(i)
        val = float(t.acc[i, s])
        trial.set_user_attr("seed", s)
        trial.set_user_attr("cindex", i)
        trial.set_user_attr("val_accuracy", val)
        return objective_values(cfg, val, costs, 0.0)

    study = optuna.create_study(directions=[DIRECTIONS[o] for o in t.objectives], sampler=sampler_for(a, cfg, seed))
    study.set_user_attr("objectives", t.objectives)
    tickets = Tickets(max(budgets), shared=False)
    in_a_row = 0

    def snapshot() -> dict:
        held = {}
        for i, d in drawn.items():
            rest = sorted(set(range(K)) - set(d))
            held[i] = float(t.acc[i, rest].mean()) if rest else float("nan")
        if a.cap == NO_CAP:
            members = _trial_front(study, t, index)
        else:
            table.update(study.get_trials(deepcopy=False))
            members = [(index_of(e), e.estimate.mean, e.estimate.lo, e.estimate.hi, e.n,
                        Z * math.sqrt(e.estimate.seed_var / e.n)) for e in table.front()]
        res = scorer.score(members, held)
        res.update(trainings=len(trained), distinct=len(set(trained)), trials=len(study.trials))
        return res

    def index_of(e) -> int:
        return index[json.dumps(e.attrs["candidate"], sort_keys=True)]  # se.key_of's form

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal in_a_row
        reused = bool(trial.user_attrs.get(REUSED))
        # As the runner's progress line does after every completed trial: the estimates are brought up to date
        # (answer_from_replicates reads the entry's estimate as the last call left it).
        table.update(study.get_trials(deepcopy=False)).estimates()
        if reused:
            tickets.give_back()  # as kdnas's runner: an answer from replicates is free
        in_a_row = in_a_row + 1 if reused else 0
        if not reused and len(trained) in budgets and len(trained) not in out:
            out[len(trained)] = snapshot()
        if when_stuck(cfg, study, table, in_a_row) or len(study.trials) >= MAX_TRIALS:  # as kdnas's runner
            study.stop()

    optimize(study, objective, tickets, None, on_trial, lambda: intensify(cfg, study, table))
    for b in budgets:  # a run that stopped early reports its last front at the budgets it did not reach
        if b not in out:
            out[b] = {**snapshot(), "stopped_early": 1.0}
        out[b].setdefault("stopped_early", 0.0)
    return out


def _trial_front(study: optuna.Study, t, index: dict) -> list[tuple]:
    """The one-seed arm's front: Pareto of the trials' values, one member per candidate (its best trial), each
    with the binomial interval of its one training."""
    done = [tr for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE]
    vals = [[tr.user_attrs[METRIC_NAMES[o]] for o in t.objectives] for tr in done]
    mask = pareto_mask(vals, [DIRECTIONS[o] for o in t.objectives]) if vals else []
    best: dict[int, float] = {}
    for tr, m in zip(done, mask):
        if m:
            i = tr.user_attrs["cindex"]
            best[i] = max(best.get(i, 0.0), tr.user_attrs["val_accuracy"])
    out = []
    for i, p in best.items():
        half = Z * np.sqrt(binomial_variance(p, t.n_val))
        out.append((i, p, max(0.0, p - half), min(1.0, p + half), 1, float("nan")))
    return out
