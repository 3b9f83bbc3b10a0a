"""The Optuna objective and the study runner."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import astuple, dataclass, field
from typing import Callable

import optuna
import torch

from kdnas import resume
from kdnas.artifacts import ArtifactStore
from kdnas.config import StudyConfig
from kdnas.costs import AFTER, HERE, Counts, LatencyCache, LatencyService, count, measuring_place, resolve_device
from kdnas.data import DataSplit, load_split
from kdnas.distill import resolve_hyperparameters
from kdnas.distill.chain import AssistantPool, Guide, guided_loss
from kdnas.early_stop import checkpoint_hook
from kdnas.errors import KdnasError, TrialFailure
from kdnas.liveness import WorkerLock, mark, retry_interrupted, sweep
from kdnas.models import ArchSpec, build, digest
from kdnas.sampling import make_sampler, process_sampler  # noqa: F401 (make_sampler: kdnas.study's API)
from kdnas.score import DIRECTIONS, METRIC_NAMES, combined_score, constraints, feasible, measured_front
from kdnas.space import MethodSpec, screen
from kdnas.storage import check_storage, is_local, mask_url, open_storage
from kdnas.teacher import get_teacher
from kdnas.teacher_logits import teacher_logits
from kdnas.train import accuracy, fit
from kdnas.workers import Tickets, optimize, run_pool, threads_per_worker

log = logging.getLogger("kdnas")



@dataclass
class Runtime:
    """Everything the objective needs, prepared once per `kdnas search` process."""

    cfg: StudyConfig
    split: DataSplit  # on the training device
    device: torch.device
    store: ArtifactStore
    latency: LatencyCache
    teacher: Guide  # with its outputs on the training split, computed once
    teacher_info: dict
    assistants: AssistantPool
    _counts: dict = field(default_factory=dict)

    def close(self) -> None:
        self.latency.close()

    def counts(self, spec: ArchSpec) -> Counts:
        if spec not in self._counts:
            self._counts[spec] = count(spec, self.split.input_shape, self.split.num_classes, self.cfg.costs.counter)
        return self._counts[spec]


def prepare(cfg: StudyConfig, threads: int | None = None, workers: int = 1,
            resumed: dict | None = None) -> Runtime:
    """What every trial of this process needs; ``threads`` per process, ``workers`` processes in all.
    ``resumed``: the stored study's attributes, whose split and teacher these must be (kdnas.resume)."""
    device = resolve_device(cfg.device)
    resolve_device(cfg.costs.latency.device)
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
    store = ArtifactStore(cfg.run_dir / "artifacts")
    assert cfg.teacher_spec is not None
    # Requested first: beside the training (a core spare) it is measured while the teacher trains or loads.
    teacher_latency = latency.request(cfg.teacher_spec, split.input_shape, split.num_classes, cfg.costs.latency)
    teacher, info = get_teacher(cfg, split, store, device)
    counts = count(cfg.teacher_spec, split.input_shape, split.num_classes, cfg.costs.counter)
    info.update(params=counts.params, macs=counts.macs)
    identity = info.get("cache_key") or info["checkpoint_sha256"]
    resume.check_inputs(cfg, resumed, teacher=identity)
    augment = cfg.student.train.augment.active
    logits = teacher_logits(teacher, identity, split, store, random_augment=augment)
    info.update(teacher_latency())
    info["logits_cached"] = logits.cached
    guide = Guide("teacher", identity, teacher, logits, info)
    a = cfg.assistants
    pool = AssistantPool(split, store, device, a.train, MethodSpec.from_dict(a.method), a.drop_rate, a.seed,
                         random_augment=augment)
    return Runtime(cfg, split, device, store, latency, guide, info, pool)


def trial_seed(study_seed: int, number: int) -> int:
    return int(digest([study_seed, number], 8), 16) % (2**31)


def run_trial(rt: Runtime, trial: optuna.Trial) -> tuple[float, ...]:
    cfg, split = rt.cfg, rt.split
    t0 = time.perf_counter()
    screened = screen(cfg.space.sample(trial), cfg.space.limits, lambda s: astuple(rt.counts(s)),
                      rt.teacher_info["params"])
    for key, value in screened.constraints.items():
        trial.set_constraint(key, value)
    cand = screened.candidate
    counts = rt.counts(cand.student)
    trial.set_user_attr("candidate", cand.to_dict())
    trial.set_user_attr("student", cand.student.label())
    trial.set_user_attr("method", cand.method.label())
    trial.set_user_attr("chain", cand.chain.label())
    trial.set_user_attr("chain_length", len(cand.chain.assistants))
    trial.set_user_attr("params", counts.params)
    trial.set_user_attr("macs", counts.macs)
    if not screened.ok:  # rejected in milliseconds, before any training
        trial.set_user_attr("prune_reason", screened.reason)
        raise optuna.TrialPruned(screened.reason)
    # Latency does not depend on the weights: measured in the child process beside the training, or when first
    # needed (in the child process while this one waits, or in this process; kdnas/costs/_background.py). With
    # a latency limit it is needed before training, so that a candidate over the limit is never trained.
    pending = rt.latency.request(cand.student, split.input_shape, split.num_classes, cfg.costs.latency)

    def cost_figures() -> dict[str, float]:
        return {"params": counts.params, "macs": counts.macs, "latency_ms": pending()["latency_ms"]}

    if cfg.score.limits.max_latency_ms is not None:
        _check_limits(trial, cost_figures(), cfg.score.limits)

    seed = trial_seed(cfg.seed, trial.number)
    trial.set_user_attr("seed", seed)
    trial.set_user_attr("teacher", rt.teacher.key)
    guides, records = rt.assistants.chain(rt.teacher, cand.chain, trial.number)
    trial.set_user_attr("assistants", records)
    torch.manual_seed(seed)
    model = build(cand.student, split.input_shape, split.num_classes).to(rt.device)
    hp = resolve_hyperparameters(cand.method.name, cand.method.hyperparameters)
    trial.set_user_attr("method_hyperparameters", hp)  # defaults included: the values the run used
    stop = checkpoint_hook(cfg.search.early_stopping, trial, cfg.student.train.epochs, counts.params,
                           lambda: accuracy(model, split.val),
                           (lambda acc: combined_score(acc, cost_figures(), cfg.score)) if cfg.score.mode == "score" else None)
    t_train = time.perf_counter()
    try:
        with guided_loss(cand.method, model, guides, split.train, cfg.assistants.drop_rate, seed) as (loss_fn, adapters):
            history = fit(model, split.train, cfg.student.train, loss_fn, seed, on_epoch=stop, extra=adapters)
    except optuna.TrialPruned:
        # A stopped trial keeps its latency when the figure is in hand (cached, or measured beside the training).
        # Measuring it now, for a trial that can no longer be on the front, would cost the study seconds for
        # nothing; a later trial of the same architecture measures it if it completes.
        if not pending.costs_a_measurement:
            _record_latency(trial, pending())
        raise
    train_s = time.perf_counter() - t_train
    # When the latency waits for the training to end (`after`), the child measures it meanwhile, on a core this
    # process leaves it: inference predicts the same on any number of threads (tests/test_models.py).
    with pending.meanwhile():
        val_acc = accuracy(model, split.val)
        test_acc = accuracy(model, split.test)
        weights = rt.store.put_content("students", model.state_dict())
    _record_latency(trial, pending())
    costs = cost_figures()
    trial.set_user_attr("weights", weights)
    trial.set_user_attr("val_accuracy", val_acc)
    trial.set_user_attr("test_accuracy", test_acc)
    trial.set_user_attr("loss_history", history)
    trial.set_user_attr("train_seconds", train_s)
    trial.set_user_attr("trial_seconds", time.perf_counter() - t0)
    score = combined_score(val_acc, costs, cfg.score)
    trial.set_user_attr("score", score)
    if cfg.score.mode == "score":
        return (score,)
    measured = {"val_accuracy": val_acc, **costs}  # keyed like the trial attributes that METRIC_NAMES names
    return tuple(float(measured[METRIC_NAMES[o]]) for o in cfg.objectives)


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


def open_study(cfg: StudyConfig, create: bool, storage: optuna.storages.BaseStorage | None = None) -> optuna.Study:
    """Open the study in its storage; with ``create``, create it (or resume it when it exists)."""
    storage = storage or open_storage(cfg, create=create)
    score_mode = cfg.score.mode == "score"
    directions = ["maximize"] if score_mode else [DIRECTIONS[o] for o in cfg.objectives]
    if not create:
        try:
            return optuna.load_study(study_name=cfg.name, storage=storage)
        except KeyError:
            raise KdnasError(f"no study named {cfg.name!r} in {mask_url(cfg.storage_url())}; run `kdnas search` first") from None
    study = optuna.create_study(study_name=cfg.name, storage=storage, directions=directions, load_if_exists=True)
    stored_mode = study.user_attrs.get("score_mode", cfg.score.mode)
    if [d.name.lower() for d in study.directions] != directions or stored_mode != cfg.score.mode:
        raise KdnasError(
            f"{cfg.path}: objectives: the study {cfg.name!r} in storage was created with "
            f"{study.user_attrs.get('objectives')} ({[d.name.lower() for d in study.directions]}, score.mode "
            f"{stored_mode}), but the study file asks for {cfg.objectives} (score.mode {cfg.score.mode}); "
            f"use a new study name"
        )
    study.set_metric_names(["score"] if score_mode else [METRIC_NAMES[o] for o in cfg.objectives])
    study.set_user_attr("objectives", list(cfg.objectives))  # in score mode too: the report's front and hypervolume
    study.set_user_attr("score_mode", cfg.score.mode)
    return study


def front_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed, feasible trials on the Pareto front of the measured objectives (in score mode too)."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE and feasible(t)]
    if not done:
        return []
    mask = measured_front([t.user_attrs for t in done], study.user_attrs["objectives"])
    return [t for t, m in zip(done, mask) if m]


def _print(line: str) -> None:
    print(line, flush=True)  # progress must show up live even when stdout is a file or a pipe


def search(cfg: StudyConfig, progress: Callable[[str], None] = _print) -> optuna.Study:
    """Run ``cfg.search.trials`` more trials (or until the timeout) with ``cfg.parallel.workers`` worker
    processes, and return the study."""
    started = time.time()
    # Before anything is written: an unreachable storage, then a teacher checkpoint that does not load.
    storage = check_storage(cfg)
    stored = resume.stored_attrs(cfg, storage)
    resume.check_recipe(cfg, stored)  # a resumed study's changed recipe or space: refused before any training
    n = min(cfg.parallel.workers, cfg.search.trials)
    rt = prepare(cfg, workers=n, resumed=stored)
    lock = None
    try:
        study = open_study(cfg, create=True, storage=storage)
        lock = WorkerLock(cfg.run_dir)
        n_before = len(study.trials)
        url = mask_url(cfg.storage_url())
        progress(f"resuming study {cfg.name!r}: {n_before} trials stored in {url}" if n_before else
                 f"new study {cfg.name!r} in {url}")
        ti = rt.teacher_info
        progress(
            f"teacher {cfg.teacher_spec.label()}: {ti['params']:,} params, val acc {ti['val_accuracy']:.1%}, "
            f"{'trained in' if ti['trained_now'] else 'loaded in'} {ti['seconds']:.1f}s; its logits "
            f"{'come from a per-study table' if ti['logits_cached'] else 'are computed per batch (random augmentation)'}"
        )
        resume.record(study, cfg, ti, rt.split)
        for line in sweep(study, cfg.run_dir, is_local(cfg.storage_url()), lock, cfg.parallel.max_retry):
            progress(line)
        # The study's wall clock counts from the start of the command, teacher training included; a trial
        # that is running when it ends finishes (no new one starts).
        deadline = None if cfg.search.timeout is None else started + cfg.search.timeout
        if deadline is not None and time.time() >= deadline:
            progress(f"timeout of {cfg.search.timeout:g}s reached before the first trial started")
            return study
        if n == 1:
            _run_trials(cfg, rt, study, lock, Tickets(cfg.search.trials, shared=False), deadline, progress, started)
            return study
        rt.close()  # the workers measure their own candidates
        threads = threads_per_worker(cfg.threads, n)
        progress(f"starting {n} workers with {threads} torch thread{'s' * (threads > 1)} each")
        tickets = Tickets(cfg.search.trials, shared=True)

        def on_exit(index: int, pid: int, code: int) -> None:
            if code not in (0, 130):  # 130: interrupted, like this command
                progress(f"worker {index} (pid {pid}) ended with exit code {code}")
            for line in sweep(study, cfg.run_dir, is_local(cfg.storage_url()), lock, cfg.parallel.max_retry):
                progress(line)

        overrides = {**cfg.overrides, "parallel": {**cfg.overrides.get("parallel", {}), "workers": n}}
        run_pool(n, lambda i: (i, str(cfg.path), overrides, tickets, deadline, threads, started), on_exit)
    finally:
        rt.close()
        if lock is not None:
            lock.close()
    return study


def run_worker(cfg: StudyConfig, index: int, tickets: Tickets, deadline: float | None, threads: int,
               started: float) -> None:
    """One worker process of ``kdnas search --workers N``: it loads what the parent prepared and runs trials."""
    if not tickets.left():  # its peers, started sooner, took every trial
        return
    rt = prepare(cfg, threads, workers=cfg.parallel.workers)
    lock = None
    try:
        study = open_study(cfg, create=False)
        lock = WorkerLock(cfg.run_dir)
        _run_trials(cfg, rt, study, lock, tickets, deadline, _print, started, prefix=f"w{index} ")
    finally:
        rt.close()
        if lock is not None:
            lock.close()


def _run_trials(cfg: StudyConfig, rt: Runtime, study: optuna.Study, lock: WorkerLock, tickets: Tickets,
                deadline: float | None, progress: Callable[[str], None], started: float, prefix: str = "") -> None:
    study.sampler = process_sampler(cfg)  # seeded by this process's first trial (kdnas/sampling.py)
    study.pruner = cfg.search.early_stopping.pruner()  # used by single-objective studies only
    n_new = cfg.search.trials

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = tickets.finished_one()  # this command's trials: another command may add to the study meanwhile
        elapsed = time.time() - started
        head = f"{prefix}[{done:>3}/{n_new} {elapsed:6.1f}s] trial {trial.number:>3}"
        ua = trial.user_attrs
        if trial.state == optuna.trial.TrialState.COMPLETE:
            front = front_trials(study)
            best = max(t.user_attrs["val_accuracy"] for t in front)
            tail = f"front {len(front)}, best val {best:.1%}"
            if cfg.score.mode == "score":
                tail = f"score {ua['score']:.4f}, best {study.best_value:.4f} | {tail}"
            progress(f"{head} val {ua['val_accuracy']:6.1%}  {ua['params']:>9,} params  {ua['latency_ms']:7.3f} ms  "
                     f"{ua['student']} {ua['method']} {ua['chain']}  ({ua['trial_seconds']:.1f}s) | {tail}")
        else:
            reason = ua.get("fail_reason") or ua.get("prune_reason", "")
            # The candidate, as on COMPLETE lines (absent when sampling itself failed).
            cand = " ".join(ua[k] for k in ("student", "method", "chain") if k in ua)
            progress(f"{head} {trial.state.name}: {reason}" + (f" | {cand}" if cand else ""))

    def before_trial() -> None:
        for line in sweep(study, cfg.run_dir, is_local(cfg.storage_url()), lock, cfg.parallel.max_retry):
            progress(prefix + line)

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our progress lines replace Optuna's per-trial logs
    optimize(study, make_objective(rt, lock), tickets, deadline, on_trial, before_trial)
