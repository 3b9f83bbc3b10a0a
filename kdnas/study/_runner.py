"""The study runner: open the study, prepare this process (kdnas/study/_runtime.py), run trials
(kdnas/study/_trial.py) alone or in worker processes, and say how each ended."""

from __future__ import annotations

import time
from typing import Callable

import optuna
import torch

from kdnas.candidates import INTENSIFY, KEY, REUSED, CandidateTable, Ladder, Merged, choose, due, rung_of
from kdnas.config import SINGLE, StudyConfig
from kdnas.core import KdnasError
from kdnas.costs import DIRECTIONS, METRIC_NAMES
from kdnas.models import make_spec
from kdnas.study import _resume as resume
from kdnas.study._liveness import WorkerLock, sweep
from kdnas.study._placement import placement_line, worker_devices
from kdnas.study._retry import OUTAGE_EXIT, StorageOutage
from kdnas.study._rung_trial import DUPLICATE, promote
from kdnas.study._runtime import Runtime, prepare
from kdnas.study._teachers import Teachers, teacher_suffix
from kdnas.study._sampling import process_sampler
from kdnas.study._storage import check_storage, is_local, mask_url, open_storage, read_trials
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


# When a process's sampler proposes only candidates at their replicate cap this many times in a row, it is stuck
# on what it already knows (a small space, or a converged sampler): see `when_stuck`.
REUSED_IN_A_ROW = 12


def ladder_of(study: optuna.Study, trials: list[optuna.trial.FrozenTrial] | None = None) -> Ladder:
    """The study's candidates at each of its rungs (kdnas/candidates/_rungs.py; one rung for a study without
    them), from ``trials`` (default: read now)."""
    attrs = study.user_attrs
    n_val = (attrs.get("data") or {}).get("val") or 1  # unknown: an interval as wide as it can be
    recipe = (attrs.get("comparable") or {}).get("study")
    epochs = (recipe or {}).get("search.rungs.epochs") or ()
    ladder = Ladder(n_val, attrs["objectives"], recipe, epochs, float(attrs.get("rungs_keep", 1 / 3)))
    return ladder.update(read_trials(study) if trials is None else trials)


def candidates_of(study: optuna.Study, trials: list[optuna.trial.FrozenTrial] | None = None
                  ) -> CandidateTable | Merged:
    """The study's candidates (kdnas/candidates/_table.py): its table, or with rungs each candidate at its highest
    rung, compared with another at the highest budget both reached (kdnas/candidates/_rungs.py, ``Merged``)."""
    return ladder_of(study, trials).view()


def front_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """One trial per candidate on the Pareto front of the candidates' means (measured objectives, in score mode
    too): the replicate closest to the candidate's mean."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    return [by_number[e.representative()] for e in candidates_of(study, trials).front()]


def teacher_lines(teachers: Teachers) -> list[str]:
    """One progress line per teacher choice: its size, accuracy, and whether it was trained now or loaded."""
    lines = []
    for label, ti in teachers.infos.items():
        what = f"ensemble {label} (mean of its members' softened outputs)" if ti.get("members") else \
            f"teacher {label + ': ' if label != SINGLE else ''}{make_spec(ti['spec']).label()}"
        how = "" if ti.get("members") else \
            f", {'trained in' if ti['trained_now'] else 'loaded in'} {ti['seconds']:.1f}s"
        logits = "come from a per-study table" if ti["logits_cached"] else "are computed per batch (random augmentation)"
        lines.append(f"{what}: {ti['params']:,} params, val acc {ti['val_accuracy']:.1%}{how}; its logits {logits}")
    return lines


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
    # Each worker's GPU, round robin: a GPU the machine lacks is refused here, before a teacher trains.
    devices: list[str] = []
    if n > 1:
        try:
            gpu_count = torch.cuda.device_count() if cfg.device == "cuda" else 0
            devices = worker_devices(cfg.device, n, cfg.parallel.gpus, gpu_count, cfg.parallel.workers_per_gpu)
        except KdnasError as err:
            raise KdnasError(f"{cfg.path}: {err}") from None
    rt = prepare(cfg, workers=n, resumed=stored)
    lock = None
    try:
        study = open_study(cfg, create=True, storage=storage)
        lock = WorkerLock(cfg.run_dir)
        n_before = len(study.trials)
        url = mask_url(cfg.storage_url())
        progress(f"resuming study {cfg.name!r}: {n_before} trials stored in {url}" if n_before else
                 f"new study {cfg.name!r} in {url}")
        for line in teacher_lines(rt.teachers):
            progress(line)
        resume.record(study, cfg, rt.teacher_info, rt.split, rt.teachers.infos)
        for line in _sweep(cfg, study, lock):
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
        where = placement_line(devices)
        progress(f"starting {n} workers with {threads} torch thread{'s' * (threads > 1)} each"
                 + (f" {where}" if where else ""))
        tickets = Tickets(cfg.search.trials, shared=True)

        outage = []  # the database stayed away too long for a worker (it said so), or for this process's sweep

        def on_exit(index: int, pid: int, code: int) -> None:
            if code == OUTAGE_EXIT:  # no sweep: the storage is away (the resumed search sweeps)
                outage.append(index)
                return
            if code not in (0, 130):  # 130: interrupted, like this command
                progress(f"worker {index} (pid {pid}) ended with exit code {code}")
            try:
                for line in _sweep(cfg, study, lock):
                    progress(line)
            except StorageOutage:  # the other workers go on while they can
                outage.append(None)

        args = worker_args(cfg, devices, tickets, deadline, threads, started)
        run_pool(n, lambda i: args[i], on_exit)
        if outage:
            raise StorageOutage(f"the database was unreachable longer than parallel.storage_outage "
                                f"({cfg.parallel.storage_outage:g}s); the search stopped. Completed trials are kept: "
                                f"run `kdnas search` again to resume")
    finally:
        rt.close()
        if lock is not None:
            lock.close()
    return study


def _sweep(cfg: StudyConfig, study: optuna.Study, lock: WorkerLock,
           trials: list[optuna.trial.FrozenTrial] | None = None) -> list[str]:
    """kdnas/study/_liveness.py's sweep with the study file's settings."""
    p = cfg.parallel
    return sweep(study, cfg.run_dir, is_local(cfg.storage_url()), lock, p.max_retry, trials, unmarked=p.grace_period)


def worker_args(cfg: StudyConfig, devices: list[str], tickets: Tickets, deadline: float | None, threads: int,
                started: float) -> list[tuple]:
    """What each worker process is started with (:func:`kdnas.study._workers.worker_main`): the study file and the
    command's overrides, with its worker count and the worker's own device (kdnas/study/_placement.py)."""
    n = len(devices)
    overrides = {**cfg.overrides, "parallel": {**cfg.overrides.get("parallel", {}), "workers": n}}
    return [(run_worker, i, str(cfg.path), {**overrides, "device": devices[i]}, tickets, deadline, threads, started)
            for i in range(n)]


def run_worker(cfg: StudyConfig, index: int, tickets: Tickets, deadline: float | None, threads: int,
               started: float) -> None:
    """One worker process of ``kdnas search --workers N``: it loads what the parent prepared and runs trials."""
    if not tickets.left():  # its peers, started sooner, took every trial
        return
    rt = prepare(cfg, threads, workers=cfg.parallel.workers)
    lock = None
    try:
        study = open_study(cfg, create=False, storage=open_storage(cfg, create=False, wait=True))
        lock = WorkerLock(cfg.run_dir)
        at = f"@{cfg.device}" if cfg.device.startswith("cuda") else ""  # the worker's GPU (kdnas/study/_placement.py)
        _run_trials(cfg, rt, study, lock, tickets, deadline, _print, started, prefix=f"w{index}{at} ")
    finally:
        rt.close()
        if lock is not None:
            lock.close()


def _run_trials(cfg: StudyConfig, rt: Runtime, study: optuna.Study, lock: WorkerLock, tickets: Tickets,
                deadline: float | None, progress: Callable[[str], None], started: float, prefix: str = "") -> None:
    study.sampler = process_sampler(cfg)  # seeded by this process's first trial (kdnas/study/_sampling.py)
    study.pruner = cfg.search.early_stopping.pruner()  # used by single-objective studies only
    n_new = cfg.search.trials
    ladder = rt.ladder
    reused_in_a_row = 0
    # The study as on_trial read it, for before_trial, which runs right after: one read of the study between two
    # trials, not one per step (each costs milliseconds at thousands of trials: benchmarks/bookkeeping.py).
    snapshot: list[optuna.trial.FrozenTrial] | None = None

    def on_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        nonlocal reused_in_a_row, snapshot
        ua = trial.user_attrs
        reused = bool(ua.get(REUSED))
        if reused or ua.get(DUPLICATE):
            tickets.give_back()  # `search.trials` counts trainings: an answer from replicates is free
        reused_in_a_row = reused_in_a_row + 1 if reused else 0
        # This command's trainings: another command may add to the study meanwhile.
        done = tickets.finished() if reused or ua.get(DUPLICATE) else tickets.finished_one()
        elapsed = time.time() - started
        head = f"{prefix}[{done:>3}/{n_new} {elapsed:6.1f}s] trial {trial.number:>3}"
        if trial.state == optuna.trial.TrialState.COMPLETE:
            snapshot = study.get_trials(deepcopy=False)
            ladder.update(snapshot)
            progress(f"{head} {_complete_line(cfg, study, ladder, trial)}")
            stop = when_stuck(cfg, study, ladder, reused_in_a_row)
            if reused_in_a_row >= REUSED_IN_A_ROW:
                snapshot = None  # when_stuck may have enqueued a trial the snapshot lacks: before_trial reads again
            if stop:
                progress(prefix + stop)
                study.stop()
        else:
            reason = ua.get("fail_reason") or ua.get("prune_reason", "")
            # The candidate, as on COMPLETE lines (absent when sampling itself failed).
            cand = " ".join(ua[k] for k in ("student", "method", "chain") if k in ua) + teacher_suffix(ua)
            progress(f"{head} {trial.state.name}: {reason}" + (f" | {cand}" if cand else ""))

    def before_trial() -> None:
        nonlocal snapshot
        trials, snapshot = snapshot, None
        lines = _sweep(cfg, study, lock, trials)
        for line in lines:
            progress(prefix + line)
        plan_next(cfg, study, ladder, None if lines else trials)  # a trial the sweep failed: read again

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # our progress lines replace Optuna's per-trial logs
    optimize(study, make_objective(rt, lock), tickets, deadline, on_trial, before_trial)


def plan_next(cfg: StudyConfig, study: optuna.Study, ladder: Ladder,
              trials: list[optuna.trial.FrozenTrial] | None = None) -> None:
    """Before a trial: enqueue a promotion when a run has earned one (kdnas/candidates/_rungs.py: a free worker
    continues a run before it starts a new one), else a re-evaluation when one is due. ``trials``: the study's
    trials read just now (default: read here)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    ladder.update(trials)
    if not promote(cfg, study, ladder):
        intensify(cfg, study, ladder, trials)


def _first_and_top(candidates: CandidateTable | Ladder, trials: list | None, study: optuna.Study
                   ) -> tuple[CandidateTable, CandidateTable, int]:
    """The first rung's table (new runs, the cap), what the front is read from (with rungs, every candidate at its
    highest rung: ``Ladder.view()``) and the waiting trials."""
    candidates.update(study.get_trials(deepcopy=False) if trials is None else trials)
    if isinstance(candidates, Ladder):
        return candidates.first, candidates.view(), candidates.waiting
    return candidates, candidates, candidates.waiting


def intensify(cfg: StudyConfig, study: optuna.Study, candidates: CandidateTable | Ladder,
              trials: list[optuna.trial.FrozenTrial] | None = None) -> None:
    """Before a trial: when a re-evaluation is due (kdnas/candidates/_intensify.py), enqueue it. ``trials``: the
    study's trials, read just now (default: read here). With rungs, the front compares candidates at the highest
    budget both reached, and a re-evaluation is a new run of the candidate: it starts at the first rung and climbs
    as its candidate is kept."""
    rule = cfg.search.intensify
    if not rule.enabled:
        return
    first, top, waiting = _first_and_top(candidates, trials, study)
    if waiting or not due(first, rule.after, rule.share):
        return
    _enqueue(study, choose(top, cfg.search.replicates, _cap_count(first, top)))


def _cap_count(first: CandidateTable, top: CandidateTable):
    return None if first is top else (lambda e: first.replicates(e.key))


def _enqueue(study: optuna.Study, choice) -> bool:
    if choice is None:
        return False
    study.enqueue_trial(choice.entry.params, user_attrs={KEY: choice.entry.key, INTENSIFY: choice.why})
    return True


def when_stuck(cfg: StudyConfig, study: optuna.Study, candidates: CandidateTable | Ladder, in_a_row: int) -> str | None:
    """After ``REUSED_IN_A_ROW`` answers from replicates in a row, the sampler is stuck on what the study knows:
    the next training re-evaluates the candidate intensification would choose (whether or not it is due, or
    enabled: it is the best use of a training the sampler would waste), or, with none of those under the cap,
    any candidate that is, fewest replicates first (a study comparing arms completes every arm's replicates
    whatever the sampler prefers). With none left under the cap, the study has measured all it can of what
    this sampler proposes: returns the reason to stop."""
    first, top, waiting = _first_and_top(candidates, [], study)
    if in_a_row < REUSED_IN_A_ROW or waiting:
        return None
    if _enqueue(study, choose(top, cfg.search.replicates, _cap_count(first, top), rest=True)):
        return None
    return (f"stopping: the last {in_a_row} proposals were candidates at their {cfg.search.replicates} "
            f"replicates (search.replicates), and every candidate the study has has them too")


def _complete_line(cfg: StudyConfig, study: optuna.Study, candidates: CandidateTable | Ladder,
                   trial: optuna.trial.FrozenTrial) -> str:
    """A completed trial's progress line: its figures, its candidate's estimate (at its rung), the front of the
    means (at the highest rung reached)."""
    ua = trial.user_attrs
    ladder = candidates if isinstance(candidates, Ladder) else None
    table = ladder.tables[rung_of(ua)] if ladder is not None and rung_of(ua) < ladder.rungs else ladder.first if ladder else candidates
    top = ladder.view() if ladder is not None else candidates
    entry = table.entries.get(ua.get(KEY, ""))
    table.estimates()
    front = top.front()
    best = max(front, key=lambda e: e.estimate.mean) if front else None
    at = f" @{ladder.epochs[best.rung]} ep" if best is not None and ladder is not None and ladder.epochs else ""
    tail = f"front {len(front)}" + (f", best val {best.estimate.text()}{at}" if best else "")
    if cfg.score.mode == "score":
        tail = f"score {ua['score']:.4f}, best {study.best_value:.4f} | {tail}"
    what = f"{ua['student']} {ua['method']} {ua['chain']}" + teacher_suffix(ua)
    if ua.get(REUSED):
        return (f"not trained: {what} has its {cfg.search.replicates} replicates (search.replicates): "
                f"val {entry.estimate.text() if entry else ''} | {tail}")
    mean = f" -> {entry.estimate.text()}" if entry is not None and entry.n > 1 else ""
    again = f" re-evaluation ({ua[INTENSIFY]})" if ua.get(INTENSIFY) else ""
    rung = (f" rung {rung_of(ua) + 1}/{ladder.rungs} ({ua.get('epochs')} ep)"
            if ladder is not None and ladder.epochs else "")
    return (f"val {ua['val_accuracy']:6.1%}{mean}  {ua['params']:>9,} params  {ua['latency_ms']:7.3f} ms  {what}"
            f"{again}{rung}  ({ua['trial_seconds']:.1f}s) | {tail}")
