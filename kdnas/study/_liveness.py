"""Which RUNNING trials still have a live worker: the crash-safety half of running many workers.

A worker killed with SIGKILL (or by the out-of-memory killer, or a power cut) leaves its trial RUNNING in the
storage. Two mechanisms find such trials:

- **Worker locks, on this machine, at once.** Every process that runs trials holds an exclusive ``flock`` on
  its own file ``runs/<name>/workers/<host>-<pid>-<nonce>.lock`` for its whole life and records that file in
  each trial it starts (system attribute ``kdnas:worker``). The kernel releases the lock when the process
  dies, however it dies, so "can I take this lock?" is an exact test of death that needs no timeout and is
  immune to pid reuse. :func:`sweep` runs it when a search starts, before each trial, and when a worker
  process of ``--workers N`` exits abnormally.
- **Optuna's heartbeat, across machines, after a grace period** (see :mod:`kdnas.study._storage`): for trials of
  workers on other hosts, whose lock files this machine cannot test.

A dead worker's trial is failed with ``fail_reason`` and retried (:func:`retry_trial`) at most
``parallel.max_retry`` times, the sampled candidate enqueued again as a WAITING trial that the next free
worker runs. A trial interrupted by Ctrl-C is retried the same way, at once (:func:`retry_interrupted`).
Completed trials are never touched: a trial is COMPLETE only once the storage committed it.
"""

from __future__ import annotations

import os
import secrets
import socket
from datetime import datetime
from pathlib import Path
from typing import Optional

import optuna
from optuna.trial import TrialState

from kdnas.candidates import CARRIED, INTENSIFY, KEY, PROMOTED_FROM

WORKER_ATTR = "kdnas:worker"
HOST = socket.gethostname()

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no worker locks; the heartbeat alone finds dead workers
    fcntl = None  # type: ignore[assignment]


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


class WorkerLock:
    """This process's liveness token in a run folder; :meth:`close` it when the process ends normally."""

    def __init__(self, run_dir: Path):
        folder = Path(run_dir).absolute() / "workers"
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{HOST}-{os.getpid()}-{secrets.token_hex(4)}.lock"
        self._fd: Optional[int] = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        if fcntl is not None:
            _try_lock(self._fd)  # a fresh, uniquely named file: nobody else can hold it

    @property
    def identity(self) -> dict:
        return {"host": HOST, "pid": os.getpid(), "lock": str(self.path)}

    def close(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None


def is_alive(lock: str) -> bool:
    """Whether the process that created lock file ``lock`` (on this host) still runs."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:  # removed: its process ended (normally, or it was swept before)
        return False
    try:
        if not _try_lock(fd):
            return True
        Path(lock).unlink(missing_ok=True)  # dead: tidy up while holding its lock
        return False
    finally:
        os.close(fd)


def live_workers(run_dir: Path, mine: Optional[WorkerLock] = None) -> list[str]:
    """Lock files in ``run_dir`` held by processes other than ``mine``."""
    folder = Path(run_dir).absolute() / "workers"
    if not folder.is_dir():
        return []
    return [str(p) for p in sorted(folder.glob("*.lock")) if (mine is None or p != mine.path) and is_alive(str(p))]


def mark(trial: optuna.Trial, lock: WorkerLock) -> None:
    """Record which worker runs ``trial`` (first thing in the objective)."""
    trial.storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, lock.identity)


def retry_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retry: int) -> Optional[int]:
    """Enqueue ``trial``'s candidate again (its sampled parameters, none of its results); return the new
    trial's number, or None after ``max_retry`` retries. The system attributes are those of Optuna's
    ``RetryHeartbeatStaleTrialCallback``, so its ``retried_trial_number`` and ``retry_history`` work."""
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retry:
        return None
    # A promotion or a re-evaluation is retried as what it was enqueued as (kdnas/study/_rung_trial.py).
    carried = CARRIED if PROMOTED_FROM in trial.user_attrs else (KEY, INTENSIFY) if INTENSIFY in trial.user_attrs else ()
    template = optuna.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={k: trial.user_attrs[k] for k in carried if k in trial.user_attrs},
        system_attrs={"failed_trial": trial.system_attrs.get("failed_trial", trial.number), "retry_history": history},
    )
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    return study._storage.get_trial(trial_id).number


def retry_interrupted(trial: optuna.Trial, max_retry: int) -> str:
    """Enqueue the candidate of ``trial``, interrupted by Ctrl-C (or by its parent's end), again, as a killed
    worker's is; return the trial's ``fail_reason``, which says so. Optuna then fails the trial itself."""
    retry = retry_trial(trial.study, trial.study._storage.get_trial(trial._trial_id), max_retry)
    then = f"retried as trial {retry}" if retry is not None else f"not retried again (parallel.max_retry: {max_retry})"
    return f"interrupted (Ctrl-C, or its parent process ended); {then}"


def fail_dead(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str, max_retry: int) -> Optional[str]:
    """Fail a RUNNING trial whose worker died; return a progress line, or None if another process did it first."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
    retry = retry_trial(study, trial, max_retry)
    return f"trial {trial.number:>3} FAIL: {reason}" + (f"; retried as trial {retry}" if retry is not None else "")


def sweep(study: optuna.Study, run_dir: Path, local_storage: bool, mine: Optional[WorkerLock],
          max_retry: int, trials: Optional[list[optuna.trial.FrozenTrial]] = None,
          unmarked: Optional[float] = None) -> list[str]:
    """Fail (and retry) the RUNNING trials whose worker is known dead; return one line per trial failed.
    ``trials``: the study's trials, read just now (default: read here).

    A trial records its worker in the first milliseconds of its objective; one without a record was left by
    a worker killed in between, or by an ask whose connection dropped while it was committed (the worker asked
    again: kdnas/study/_retry.py). Such a trial is failed where every worker is visible from here (a local
    storage) and none but ``mine`` is alive; elsewhere once it has been RUNNING for ``unmarked`` seconds (it
    has no heartbeat either: Optuna's check skips it).
    """
    lines = []
    if trials is None:
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    else:
        running = [t for t in trials if t.state == TrialState.RUNNING]
    others_alive: Optional[bool] = None
    for t in running:
        worker = t.system_attrs.get(WORKER_ATTR)
        if worker is None and not local_storage:
            if unmarked is None or t.datetime_start is None or \
                    (datetime.now() - t.datetime_start).total_seconds() < unmarked:
                continue
            reason = f"its worker never started it (no worker recorded in {unmarked:g}s)"
        elif worker is None:
            if others_alive is None:
                others_alive = bool(live_workers(run_dir, mine))
            if others_alive:
                continue
            reason = "worker died before the trial started"
        elif worker.get("host") != HOST or (mine is not None and worker.get("lock") == str(mine.path)):
            continue
        elif is_alive(worker["lock"]):
            continue
        else:
            reason = f"worker died during the trial (pid {worker.get('pid')} on {worker.get('host')})"
        line = fail_dead(study, t, reason, max_retry)
        if line:
            lines.append(line)
    return lines
