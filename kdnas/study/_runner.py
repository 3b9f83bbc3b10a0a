"""The study runner: open the study, prepare this process (kdnas/study/_runtime.py), run trials
(kdnas/study/_trial.py) alone or in worker processes, and say how each ended."""

from __future__ import annotations

import time
from typing import Callable

import optuna

from kdnas.config import StudyConfig
from kdnas.core import KdnasError
from kdnas.costs import DIRECTIONS, METRIC_NAMES, feasible, measured_front
from kdnas.study import _resume as resume
from kdnas.study._liveness import WorkerLock, sweep
from kdnas.study._runtime import Runtime, prepare
from kdnas.study._sampling import process_sampler
from kdnas.study._storage import check_storage, is_local, mask_url, open_storage
from kdnas.study._trial import make_objective
from kdnas.study._workers import Tickets, optimize, run_pool, threads_per_worker


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


def run_search(cfg: StudyConfig, progress: Callable[[str], None] = _print) -> optuna.Study:
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
        run_pool(n, lambda i: (run_worker, i, str(cfg.path), overrides, tickets, deadline, threads, started), on_exit)
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
    study.sampler = process_sampler(cfg)  # seeded by this process's first trial (kdnas/study/_sampling.py)
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
