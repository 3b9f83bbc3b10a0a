"""One trial of a study, in phases: each a function a newcomer finds from :func:`run_trial`, so that a
later feature adds a phase or a rule instead of growing one function.

    sample     the candidate from the space, screened by its counts; past its replicate cap, answered from
               its replicates' mean without training; else its latency requested
    guides     the teacher and the assistant chain it distils from (assistants trained once, cached)
    train      the student, briefly, under the candidate's method, stopped early when it trails its peers
    evaluate   validation and test accuracy, the weights stored, the latency figure in hand
    record     the trial's attributes and the objective values Optuna gets

:func:`make_objective` wraps them for Optuna and turns failures into a recorded reason.
"""

from __future__ import annotations

import time
from dataclasses import astuple, dataclass
from typing import Callable

import optuna
import torch

from kdnas.candidates import CHECKPOINT, EPOCHS, KEY, PROMOTED_FROM, REUSED, RUN, RUNG, Entry, candidate_key
from kdnas.config import SINGLE, Candidate, screen
from kdnas.core import TrialFailure
from kdnas.costs import (EFFICIENCY_ATTR, METRIC_NAMES, Counts, Pending, combined_score, constraints,
                         distillation_efficiency)
from kdnas.distill import METHODS, Guide, guided_loss, resolve_hyperparameters
from kdnas.models import KDNet, build, digest
from kdnas.study import _rung_trial as rungs
from kdnas.study._liveness import WorkerLock, mark, retry_interrupted
from kdnas.study._runtime import Runtime
from kdnas.study._storage import read_trials
from kdnas.train import accuracy, checkpoint_hook, fit


def trial_seed(study_seed: int, number: int) -> int:
    return int(digest([study_seed, number], 8), 16) % (2**31)


@dataclass
class Sampled:
    """A screened candidate, its counts, its latency (a figure in hand or on its way) and the trial's seed."""

    candidate: Candidate
    counts: Counts
    latency: Pending | None
    seed: int
    reuse: Entry | None = None  # the candidate is at its replicate cap: answered from its replicates
    rung: int = 0  # the budget it trains to (kdnas/study/_rung_trial.py)
    run: int | None = None  # the trial that started its run (None: this one)
    resume: str | None = None  # the checkpoint a promotion continues from

    def costs(self) -> dict[str, float]:
        """The cost objectives, keyed like the trial attributes (waits for the latency figure)."""
        return {"params": self.counts.params, "macs": self.counts.macs, "latency_ms": self.latency()["latency_ms"]}


@dataclass
class Trained:
    model: KDNet
    history: list[float]  # the training loss per epoch
    seconds: float


@dataclass
class Measured:
    val_accuracy: float
    test_accuracy: float
    weights: str  # the key of the student's weights in the run folder's store


def run_trial(rt: Runtime, trial: optuna.Trial) -> tuple[float, ...]:
    started = time.perf_counter()
    s = sample(rt, trial)
    if s.reuse is not None:
        return answer_from_replicates(rt, trial, s)
    trained = train(rt, trial, s, guides(rt, trial, s))  # to its budget: the study's, or its rung's
    return record(rt, trial, s, trained, evaluate(rt, s, trained), started)


def sample(rt: Runtime, trial: optuna.Trial) -> Sampled:
    """Sample and screen the candidate, record what it is; prune it (in milliseconds, before any training) when
    it is over a limit of the space or of the score."""
    cfg, split = rt.cfg, rt.split
    sampled = cfg.space.sample(trial)
    # Capacity is ordered against the trial's own teacher (an ensemble: its members' parameters together).
    screened = screen(sampled, cfg.space.limits, lambda spec: astuple(rt.counts(spec)),
                      rt.teachers.info(sampled.teacher)["params"])
    for key, value in screened.constraints.items():
        trial.set_constraint(key, value)
    cand = screened.candidate
    counts = rt.counts(cand.student)
    for key, value in (("candidate", cand.to_dict()), ("student", cand.student.label()), ("method", cand.method.label()),
                       ("chain", cand.chain.label()), ("chain_length", len(cand.chain.assistants)),
                       ("params", counts.params), ("macs", counts.macs)):
        trial.set_user_attr(key, value)
    if METHODS.get(cand.method.name).uses_teacher:  # a labels-only trial has no teacher
        trial.set_user_attr("teacher_name", cand.teacher or SINGLE)
    if not screened.ok:
        trial.set_user_attr("prune_reason", screened.reason)
        raise optuna.TrialPruned(screened.reason)
    seed = trial_seed(cfg.seed, trial.number)  # every replicate's own: trial numbers are never reused
    promotion = rungs.continuation(trial)
    if promotion is not None:  # a run going on to the next rung: its seed, its checkpoint, no replicate count
        trial.set_user_attr(KEY, candidate_key(cand.to_dict(), rt.recipe))
        rungs.check_duplicate(trial, promotion[PROMOTED_FROM])
        seed = promotion["seed"]
        where = dict(rung=promotion[RUNG], run=promotion[RUN], resume=promotion[CHECKPOINT])
    else:
        full = replicates(rt, trial, cand)
        if full is not None:
            return Sampled(cand, counts, None, seed, reuse=full)
        where = {}
    # Latency does not depend on the weights: measured in the child process beside the training, or when first
    # needed (in the child process while this one waits, or in this process; kdnas/costs/_background.py). With
    # a latency limit it is needed now, so that a candidate over the limit is never trained.
    pending = rt.latency.request(cand.student, split.input_shape, split.num_classes, cfg.costs.latency)
    s = Sampled(cand, counts, pending, seed, **where)
    if cfg.score.limits.max_latency_ms is not None:
        _check_limits(trial, s.costs(), cfg.score.limits)
    trial.set_user_attr("seed", s.seed)
    return s


def replicates(rt: Runtime, trial: optuna.Trial, cand: Candidate) -> Entry | None:
    """Name the candidate (its key) and count its replicates; at the cap (``search.replicates``), return its
    entry: it is not trained again.

    Workers on one study train a candidate at most ``cap`` times, without a lock (Optuna's storages have no
    compare-and-swap): a trial counts only the replicates of *lower* trial numbers, completed or running, and
    first waits until every lower-numbered running trial has written its key (they write it before they
    count). So of two trials of one candidate started at once, the higher-numbered one sees the other, and the
    lower one does not need to. Trial numbers also make the seeds: no two replicates share one."""
    key = candidate_key(cand.to_dict(), rt.recipe)
    trial.set_user_attr(KEY, key)
    study = getattr(trial, "study", None)  # a FixedTrial (benchmarks) has none: every proposal is trained
    if study is None:
        return None
    trials = _keyed_below(study, trial.number)
    table = rt.table.update(trials)
    table.estimates()  # up to date: an answer past the cap is the mean of every replicate read just now
    entry = table.entries.get(key)
    done = table.replicates(key, below=trial.number)
    cap = rt.cfg.search.replicates
    if done < cap:
        trial.set_user_attr("replicate", done + 1)
        return None
    if entry is None or not entry.n:  # every replicate still training elsewhere: no mean to answer with yet
        reason = f"the candidate's {cap} replicates (search.replicates) are all training in other trials"
        trial.set_user_attr("prune_reason", reason)
        raise optuna.TrialPruned(reason)
    return entry


KEY_WAIT_S = 10.0  # a lower-numbered trial still without its key after this long lost its worker while sampling


def _keyed_below(study: optuna.Study, number: int) -> list:
    """The study's trials, once every running trial numbered below ``number`` has its candidate key (or
    ``KEY_WAIT_S`` passed): sampling takes milliseconds, so this rarely waits."""
    deadline = time.monotonic() + KEY_WAIT_S
    while True:
        trials = read_trials(study)  # the first read of a large study: seconds, less with the collector paused
        undecided = any(t.number < number and t.state == optuna.trial.TrialState.RUNNING and KEY not in t.user_attrs
                        for t in trials)
        if not undecided or time.monotonic() > deadline:
            return trials
        time.sleep(0.02)


def answer_from_replicates(rt: Runtime, trial: optuna.Trial, s: Sampled) -> tuple[float, ...]:
    """A candidate past its replicate cap: its replicates' mean is the trial's answer, at no training cost."""
    entry = s.reuse
    assert entry is not None and entry.estimate is not None
    est = entry.estimate
    costs = {k: entry.attrs[k] for k in ("params", "macs", "latency_ms")}
    score = combined_score(est.mean, costs, rt.cfg.score)
    for key, value in ((REUSED, True), ("replicates", est.n), ("val_accuracy", est.mean), ("val_accuracy_se", est.se),
                       ("test_accuracy", entry.test_mean()), ("score", score),
                       (EFFICIENCY_ATTR, efficiency(rt, s.candidate, est.mean, costs)),
                       *((k, entry.attrs[k]) for k in ("latency_ms", "latency_iqr_ms", "latency_median_ms",
                                                       "latency_stable") if entry.attrs.get(k) is not None)):
        trial.set_user_attr(key, value)
    return objective_values(rt.cfg, est.mean, costs, score)


def guides(rt: Runtime, trial: optuna.Trial, s: Sampled) -> list[Guide]:
    """The networks the student learns from: the teacher, or the candidate's assistant chain below it."""
    teacher = rt.teachers.guide(s.candidate.teacher)  # the reference teacher for a labels-only trial (unused)
    trial.set_user_attr("teacher", teacher.key)
    chain, records = rt.assistants.chain(teacher, s.candidate.chain, trial.number)
    trial.set_user_attr("assistants", records)
    return chain


def train(rt: Runtime, trial: optuna.Trial, s: Sampled, chain: list[Guide]) -> Trained:
    """The student's training to its budget (its rung's, in a study with rungs, continuing its run's checkpoint);
    without rungs, the early-stopping rule may end it after any epoch (TrialPruned)."""
    cfg, split, cand = rt.cfg, rt.split, s.candidate
    torch.manual_seed(s.seed)
    model = build(cand.student, split.input_shape, split.num_classes).to(rt.device)
    hp = resolve_hyperparameters(cand.method.name, cand.method.hyperparameters)
    trial.set_user_attr("method_hyperparameters", hp)  # defaults included: the values the run used
    budgets = rungs.budgets(cfg)
    until, laddered = budgets[s.rung], cfg.search.rungs.enabled
    trial.set_user_attr(EPOCHS, until)
    if laddered:
        trial.set_user_attr(RUNG, s.rung)
        trial.set_user_attr(RUN, trial.number if s.run is None else s.run)
        stop = None  # rungs replace early stopping: candidates are compared at the ends of rungs
    else:
        score = (lambda acc: combined_score(acc, s.costs(), cfg.score)) if cfg.score.mode == "score" else None
        stop = checkpoint_hook(cfg.search.early_stopping, trial, cfg.student.train.epochs, s.counts.params,
                               lambda: accuracy(model, split.val), score)
    drops = torch.Generator().manual_seed(s.seed)  # DGKD's guide drops: part of the run's state
    state = None if s.resume is None else rungs.load_run(rt.store, s.resume, drops)
    last: dict = {}
    keep = last.update if laddered and s.rung < len(budgets) - 1 else None  # fit's state at the end of the rung
    started = time.perf_counter()
    try:
        with guided_loss(cand.method, model, chain, split.train, cfg.assistants.drop_rate, s.seed, drops) as (loss_fn, adapters):
            history = fit(model, split.train, cfg.student.train, loss_fn, s.seed, on_epoch=stop, extra=adapters,
                          checkpoint=keep, resume=state, until=until, precision=rt.precision)
    except optuna.TrialPruned:
        # A stopped trial keeps its latency when the figure is in hand (cached, or measured beside the training).
        # Measuring it now, for a trial that can no longer be on the front, would cost the study seconds for
        # nothing; a later trial of the same architecture measures it if it completes.
        if not s.latency.costs_a_measurement:
            _record_latency(trial, s.latency())
        raise
    if keep is not None:
        key = rungs.checkpoint_key(trial.user_attrs[KEY], s.seed, s.rung)
        rungs.save_run(rt.store, key, last, drops)
        trial.set_user_attr(CHECKPOINT, key)
    return Trained(model, history, time.perf_counter() - started)


def evaluate(rt: Runtime, s: Sampled, trained: Trained) -> Measured:
    """Validation accuracy (what the search selects on), test accuracy (reported only), the stored weights."""
    # When the latency waits for the training to end (`after`), the child measures it meanwhile, on a core this
    # process leaves it: inference predicts the same on any number of threads (tests/test_models.py).
    with s.latency.meanwhile():
        val_acc = accuracy(trained.model, rt.split.val)
        test_acc = accuracy(trained.model, rt.split.test)
        weights = rt.store.put_content("students", trained.model.state_dict())
    return Measured(val_acc, test_acc, weights)


def record(rt: Runtime, trial: optuna.Trial, s: Sampled, trained: Trained, measured: Measured,
           started: float) -> tuple[float, ...]:
    """The trial's figures as attributes, and its objective values (one combined score, or one per objective)."""
    cfg = rt.cfg
    _record_latency(trial, s.latency())
    costs = s.costs()
    score = combined_score(measured.val_accuracy, costs, cfg.score)
    for key, value in (("weights", measured.weights), ("val_accuracy", measured.val_accuracy),
                       ("test_accuracy", measured.test_accuracy), ("loss_history", trained.history),
                       ("train_seconds", trained.seconds), ("trial_seconds", time.perf_counter() - started),
                       ("score", score), (EFFICIENCY_ATTR, efficiency(rt, s.candidate, measured.val_accuracy, costs))):
        trial.set_user_attr(key, value)
    return objective_values(cfg, measured.val_accuracy, costs, score)


def efficiency(rt: Runtime, cand: Candidate, val_accuracy: float, costs: dict) -> dict:
    """The survey's metric against the candidate's teacher (labels-only: the reference teacher), kdnas/costs/
    _efficiency.py."""
    return distillation_efficiency(val_accuracy, costs, rt.teachers.info(cand.teacher), rt.cfg.objectives,
                                   rt.cfg.score)


def objective_values(cfg, val_accuracy: float, costs: dict, score: float) -> tuple[float, ...]:
    """What Optuna gets: the combined score, or one value per objective."""
    if cfg.score.mode == "score":
        return (score,)
    figures = {"val_accuracy": val_accuracy, **costs}  # keyed like the attributes METRIC_NAMES names
    return tuple(float(figures[METRIC_NAMES[o]]) for o in cfg.objectives)


def _record_latency(trial: optuna.Trial, figures: dict) -> None:
    for key, value in figures.items():
        trial.set_user_attr(key, value)


def _check_limits(trial: optuna.Trial, costs: dict[str, float], limits) -> None:
    """Set the trial's Optuna constraints; over a limit, prune it (before any training) with the reason."""
    violated = {}
    for key, value in constraints(costs, limits).items():
        trial.set_constraint(key, value)
        if value > 0:
            violated[key] = value
    if violated:
        reason = "; ".join(f"over score.limits.{k}: {costs[k.removeprefix('max_')]:.4g} > "
                           f"{getattr(limits, k):.4g}" for k in violated)
        trial.set_user_attr("prune_reason", reason)
        raise optuna.TrialPruned(reason)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def make_objective(rt: Runtime, lock: WorkerLock | None = None) -> Callable[[optuna.Trial], tuple[float, ...]]:
    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        if lock is not None:
            mark(trial, lock)  # first: who runs this trial, so that its worker's death can be told
        try:
            return run_trial(rt, trial)
        except TrialFailure as err:
            reason = err.reason
        except torch.OutOfMemoryError as err:
            if rt.device.type == "cuda":
                torch.cuda.empty_cache()  # give the next trial the memory this one held
            reason = f"out of memory: {_first_line(err)}"
        except (RuntimeError, ValueError) as err:  # e.g. a candidate too deep for the input size
            # PyTorch's CPU allocator reports a failed allocation as a plain RuntimeError.
            oom = "can't allocate memory" in str(err) or "out of memory" in str(err)
            reason = f"{'out of memory' if oom else type(err).__name__}: {_first_line(err)}"
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", retry_interrupted(trial, rt.cfg.parallel.max_retry))
            raise
        trial.set_user_attr("fail_reason", reason)
        raise TrialFailure(reason)

    return objective
