"""Dead workers are told from live ones exactly (a lock the kernel drops), and their trials are failed and retried."""

from __future__ import annotations

import multiprocessing as mp
import signal
import subprocess
import sys
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from kdnas.study._liveness import WORKER_ATTR, WorkerLock, is_alive, live_workers, retry_interrupted, sweep
from kdnas.study._workers import Tickets

# A worker's lock as WorkerLock takes it, in a process that starts in milliseconds (no torch to import).
HOLD_LOCK = ("import fcntl, os, sys, time; p = os.path.join(sys.argv[1], 'workers', f'h-{os.getpid()}.lock'); "
             "os.makedirs(os.path.dirname(p), exist_ok=True); fd = os.open(p, os.O_CREAT | os.O_RDWR); "
             "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print(p, flush=True); time.sleep(60)")


def _locked_by_child(run_dir: Path) -> tuple[subprocess.Popen, str]:
    child = subprocess.Popen([sys.executable, "-S", "-c", HOLD_LOCK, str(run_dir)], stdout=subprocess.PIPE, text=True)
    return child, child.stdout.readline().strip()


def test_a_killed_process_releases_its_lock(tmp_path: Path) -> None:
    child, path = _locked_by_child(tmp_path)
    try:
        assert is_alive(path) and live_workers(tmp_path) == [path]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert not is_alive(path), "SIGKILL must release the lock: the kernel drops it with the process"
    assert not Path(path).exists(), "a dead worker's lock file is tidied away"
    assert live_workers(tmp_path) == []

    mine = WorkerLock(tmp_path)
    assert is_alive(str(mine.path)) and live_workers(tmp_path, mine) == []
    mine.close()
    assert not is_alive(str(mine.path))


def _running_trial(study: optuna.Study, worker: dict | None) -> optuna.trial.FrozenTrial:
    trial = study.ask({"x": FloatDistribution(0, 1)})
    trial.set_user_attr("params", 123)
    if worker is not None:
        study._storage.set_trial_system_attr(trial._trial_id, WORKER_ATTR, worker)
    return study._storage.get_trial(trial._trial_id)


def test_sweep_fails_and_retries_only_the_trials_of_dead_workers(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["maximize"])
    done = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(done, 0.5)
    child, dead_lock = _locked_by_child(tmp_path)
    live_child, live_lock = _locked_by_child(tmp_path)
    try:
        host = WorkerLock(tmp_path)  # the sweeping process itself
        dead = _running_trial(study, {"host": host.identity["host"], "pid": child.pid, "lock": dead_lock})
        alive = _running_trial(study, {"host": host.identity["host"], "pid": live_child.pid, "lock": live_lock})
        remote = _running_trial(study, {"host": "another-machine", "pid": 1, "lock": "/nonexistent.lock"})
        unmarked = _running_trial(study, None)
        child.send_signal(signal.SIGKILL)
        child.wait()

        lines = sweep(study, tmp_path, local_storage=True, mine=host, max_retry=1)
        states = {t.number: t for t in study.get_trials()}
        assert states[dead.number].state == TrialState.FAIL
        assert states[dead.number].user_attrs["fail_reason"] == f"worker died during the trial (pid {child.pid} on {host.identity['host']})"
        assert states[alive.number].state == TrialState.RUNNING, "a live worker's trial is left alone"
        assert states[remote.number].state == TrialState.RUNNING, "another machine's trial is the heartbeat's to judge"
        assert states[unmarked.number].state == TrialState.RUNNING, "a worker is alive here: an unmarked trial may be its"
        assert states[done.number].state == TrialState.COMPLETE and states[done.number].values == [0.5]
        (retry,) = [t for t in states.values() if t.state == TrialState.WAITING]
        assert retry.params == states[dead.number].params and retry.user_attrs == {}, "same candidate, no old results"
        assert retry.system_attrs["failed_trial"] == dead.number
        assert lines == [f"trial {dead.number:>3} FAIL: {states[dead.number].user_attrs['fail_reason']}; retried as trial {retry.number}"]

        # The live worker ends too: now the unmarked trial has no possible owner and is failed; the retry
        # budget of a retried trial is spent, so its second death is final.
        live_child.send_signal(signal.SIGKILL)
        live_child.wait()
        assert len(sweep(study, tmp_path, local_storage=True, mine=host, max_retry=1)) == 2
        states = {t.number: t for t in study.get_trials()}
        assert states[unmarked.number].state == TrialState.FAIL
        assert states[unmarked.number].user_attrs["fail_reason"] == "worker died before the trial started"
        assert sweep(study, tmp_path, local_storage=True, mine=host, max_retry=1) == [], "nothing left to sweep"
        host.close()
    finally:
        for c in (child, live_child):
            c.kill()
            c.wait()


def test_sweep_of_a_shared_storage_fails_a_trial_no_worker_took_up(tmp_path: Path) -> None:
    # On a database server, a RUNNING trial without a worker was asked for by a worker killed at once, or by an ask
    # whose connection dropped while it was committed (the worker asked again: kdnas/study/_retry.py). It has no
    # heartbeat either, so Optuna's check never fails it: the sweep does, once it is older than `unmarked`.
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", directions=["maximize"])
    orphan = _running_trial(study, None)
    assert sweep(study, tmp_path, local_storage=False, mine=None, max_retry=1, unmarked=3600) == [], "too young"
    assert sweep(study, tmp_path, local_storage=False, mine=None, max_retry=1) == [], "no age given: left alone"
    (line,) = sweep(study, tmp_path, local_storage=False, mine=None, max_retry=1, unmarked=0)
    trials = study.get_trials()
    assert trials[orphan.number].state == TrialState.FAIL and trials[-1].state == TrialState.WAITING
    assert line == f"trial {orphan.number:>3} FAIL: its worker never started it (no worker recorded in 0s); " \
                   f"retried as trial {trials[-1].number}"


def _take_all(tickets: Tickets, out) -> None:
    n = 0
    while tickets.take():
        n += 1
    out.put(n)


def test_tickets_are_shared_exactly_between_processes() -> None:
    ctx = mp.get_context("fork")  # the takers touch no torch: forking is safe, and instant
    tickets, out = Tickets(200, shared=True), ctx.Queue()
    procs = [ctx.Process(target=_take_all, args=(tickets, out)) for _ in range(3)]
    for p in procs:
        p.start()
    taken = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join()
    assert sum(taken) == 200
    local = Tickets(2, shared=False)
    assert [local.take() for _ in range(3)] == [True, True, False]


def test_an_interrupted_trial_is_retried_at_most_max_retry_times_and_its_reason_says_so() -> None:
    study = optuna.create_study()
    trial = study.ask({"x": FloatDistribution(0, 1)})
    assert retry_interrupted(trial, 1) == "interrupted (Ctrl-C, or its parent process ended); retried as trial 1"
    study.tell(trial, state=TrialState.FAIL)
    again = study.ask({"x": FloatDistribution(0, 1)})  # the retry, waiting: Optuna runs it first
    assert again.number == 1 and again.params == trial.params
    assert retry_interrupted(again, 1) == "interrupted (Ctrl-C, or its parent process ended); not retried again " \
                                          "(parallel.max_retry: 1)"
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.RUNNING]
