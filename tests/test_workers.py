"""Many workers and crash safety, with real processes: `--workers 2`, and SIGKILL in the middle of a trial."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from kdnas.cli import main
from tests._util import REPO, write_tiny_study

ENV = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg"}


def stored(folder: Path, name: str = "tiny") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder}/runs/{name}/study.db").trials


def completed(trials: list[optuna.trial.FrozenTrial]) -> dict[int, list[float]]:
    return {t.number: t.values for t in trials if t.state == TrialState.COMPLETE}


@pytest.mark.slow  # the default suite runs two workers in test_sigkill_during_a_trial_then_resume_with_two_workers
def test_two_workers_run_exactly_the_requested_trials(tiny_study: Path, tmp_path: Path, capfd) -> None:
    assert main(["search", str(tiny_study), "--workers", "2", "--trials", "3"]) == 0
    out = capfd.readouterr().out  # capfd: the workers are other processes, writing to the same stdout
    assert "starting 2 workers with 1 torch thread each" in out
    assert out.count("trained in") == 1, "the parent trains the teacher once, before the workers start"
    trials = stored(tmp_path)
    assert sorted(t.number for t in trials) == [0, 1, 2], "exactly the requested trials, no duplicates, none lost"
    assert all(t.state == TrialState.COMPLETE for t in trials)
    workers = {t.system_attrs["kdnas:worker"]["pid"] for t in trials}
    # Which worker takes which ticket is a race (the first one ready may take all three).
    assert 1 <= len(workers) <= 2 and os.getpid() not in workers, "the worker processes ran the trials"
    assert sum(line[:4] in ("w0 [", "w1 [") for line in out.splitlines()) == 3
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 3, "each worker samples with its own seed"
    assert len(pd.read_csv(tmp_path / "reports/tiny/trials.csv")) == 3
    assert len(list((tmp_path / "runs/tiny/artifacts/teachers").glob("*.pt"))) == 1
    assert list((tmp_path / "runs/tiny/workers").iterdir()) == [], "workers remove their lock files when they end"


# --- SIGKILL and resume -----------------------------------------------------------------------------------


def test_processes_that_start_together_seed_their_samplers_apart(tmp_path: Path) -> None:
    """The rule behind the slow test below, in one process: each process's sampler is seeded by its own first
    trial's number, so two processes that started on the same stored study do not propose alike."""
    from kdnas.config import load_study
    from kdnas.study._sampling import process_sampler

    cfg = load_study(write_tiny_study(tmp_path))
    study = optuna.create_study(directions=["maximize"])
    a, b = process_sampler(cfg), process_sampler(cfg)
    proposals = {}
    for name in ("a", "b", "a", "b"):  # interleaved, as two terminals' trials are
        study.sampler = a if name == "a" else b
        trial = study.ask()
        proposals.setdefault(name, []).append(json.dumps(cfg.space.sample(trial).to_dict(), sort_keys=True))
        study.tell(trial, 0.5)
    assert proposals["a"] != proposals["b"]
    # The old rule (seed = trials stored at start) seeded both alike: the same proposals, trained twice.
    alike = [optuna.samplers.TPESampler(seed=cfg.seed) for _ in range(2)]
    same = {}
    for i, name in enumerate(("a", "b")):
        s = optuna.create_study(directions=["maximize"], sampler=alike[i])
        same[name] = json.dumps(cfg.space.sample(s.ask()).to_dict(), sort_keys=True)
    assert same["a"] == same["b"]


@pytest.mark.slow  # 17 s (two commands in subprocesses); the seeding rule is tested in process above
def test_two_searches_of_one_study_sample_apart_and_count_their_own_trials(tiny_study: Path, tmp_path: Path) -> None:
    """Two `kdnas search` commands on one study, in two terminals: both used to seed their sampler alike (from
    the trials stored when they started), train the same candidates, and count each other's trials."""
    # One trial first: the teacher is cached, so both commands reach their trials together.
    assert main(["search", str(tiny_study), "--trials", "1"]) == 0
    command = [sys.executable, "-m", "kdnas.cli", "search", str(tiny_study), "--trials"]
    procs = [subprocess.Popen(command + ["2"], cwd=tmp_path, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trials = stored(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5, outs
    assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 5, "no candidate trained twice"
    for out in outs:  # each counts its own 2 trials, whatever the other adds meanwhile
        assert [line.split("/")[0] for line in out.splitlines() if line.startswith("[")] == ["[  1", "[  2"], out


def _states(db: Path) -> dict[int, str]:
    """Trial number -> state, or "TRAINING" for a running trial past its sampling (it has a seed)."""
    try:
        with sqlite3.connect(db, timeout=30) as con:
            states = dict(con.execute("SELECT number, state FROM trials").fetchall())
            training = con.execute("SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                                   "WHERE t.state = 'RUNNING' AND a.key = 'seed'").fetchall()
    except sqlite3.OperationalError:  # the study does not exist yet (the teacher is training)
        return {}
    return {**states, **{n: "TRAINING" for (n,) in training}}


def kill_during_a_trial(study: Path, folder: Path, trials: int, min_done: int, delay: float | None = None) -> int:
    """Start `kdnas search`, SIGKILL it during a trial, once ``min_done`` more trials completed: while it
    trains, or ``delay`` seconds after the trial was created (any phase: sampling, training, recording)."""
    db = folder / "runs/tiny/study.db"
    done_before = sum(s == "COMPLETE" for s in _states(db).values())
    proc = subprocess.Popen([sys.executable, "-m", "kdnas.cli", "search", str(study), "--trials", str(trials)],
                            cwd=folder, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            states = _states(db)
            if sum(s == "COMPLETE" for s in states.values()) >= done_before + min_done and \
                    ("TRAINING" if delay is None else "RUNNING") in states.values():
                time.sleep(delay or 0)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return proc.returncode
            time.sleep(0.02)
        raise AssertionError(f"no trial was running to be killed (exit code {proc.poll()})")
    finally:
        proc.kill()
        proc.wait()


def check_resumed(before: dict[int, list[float]], after: list[optuna.trial.FrozenTrial]) -> None:
    now = completed(after)
    assert {n: now.get(n) for n in before} == before, "every trial completed before the kill is kept, unchanged"
    assert not [t.number for t in after if t.state == TrialState.RUNNING], "no trial is left RUNNING"
    for t in after:
        if t.state == TrialState.FAIL:
            assert t.user_attrs["fail_reason"].startswith("worker died"), t.user_attrs


def _slower(study: Path, epochs: int = 3) -> None:
    # Trials long enough (a few seconds) that the kill lands inside one.
    assert "train: {epochs: 1, lr: 0.1}" in study.read_text()
    study.write_text(study.read_text().replace("train: {epochs: 1, lr: 0.1}", f"train: {{epochs: {epochs}, lr: 0.1}}"))


def test_sigkill_during_a_trial_then_resume_with_two_workers(tiny_study: Path, tmp_path: Path, capfd) -> None:
    _slower(tiny_study)
    assert kill_during_a_trial(tiny_study, tmp_path, trials=3, min_done=1) == -signal.SIGKILL
    before = completed(stored(tmp_path))
    killed = [t.number for t in stored(tmp_path) if t.state == TrialState.RUNNING]
    assert len(before) >= 1 and len(killed) == 1

    # Resume, with two workers this time: the same study file, the same storage.
    assert main(["search", str(tiny_study), "--trials", "2", "--workers", "2"]) == 0
    out, err = capfd.readouterr()  # capfd: the workers are other processes, writing to the same stdout
    after = stored(tmp_path)
    check_resumed(before, after)
    dead = next(t for t in after if t.number == killed[0])
    assert dead.state == TrialState.FAIL and "worker died" in out
    retry = next(t for t in after if t.system_attrs.get("failed_trial") == dead.number)
    assert retry.state == TrialState.COMPLETE and retry.params == dead.params, "the killed candidate is retried"
    assert sorted(t.number for t in after) == list(range(len(after))), "no duplicates, no gaps"
    # (It once found one trial short on a loaded CI run; what the workers printed shows why, next time.)
    assert len(completed(after)) == len(before) + 2, f"exactly the requested trials (the retry among them)\n{out}\n{err}"
    assert {t.system_attrs["kdnas:worker"]["pid"] for t in after if t.number > dead.number} & {os.getpid()} == set()
    assert "starting 2 workers" in out and sum(line[:4] in ("w0 [", "w1 [") for line in out.splitlines()) == 2
    report = pd.read_csv(tmp_path / "reports/tiny/trials.csv").set_index("number")
    assert report.loc[dead.number, "reason"].startswith("worker died during the trial (pid ")
    assert report.loc[dead.number, "reason"].endswith(f"; retried as trial {retry.number}")


@pytest.mark.slow
def test_five_cycles_of_sigkill_and_resume(tiny_study: Path, tmp_path: Path) -> None:
    # 10 epochs (about 3 s a trial): the last cycle kills 1 s after a trial starts, which with 3 epochs (about 1 s)
    # sometimes fell after the trial had ended (no trial RUNNING: a failed slow run).
    _slower(tiny_study, epochs=10)
    before: dict[int, list[float]] = {}
    for cycle, delay in enumerate([None, 0.0, 0.1, 0.5, 1.0]):  # each run first fails what the last kill left
        kill_during_a_trial(tiny_study, tmp_path, trials=3, min_done=1, delay=delay)
        trials = stored(tmp_path)
        assert sum(t.state == TrialState.RUNNING for t in trials) == 1, f"cycle {cycle}: the kill was not during a trial"
        now = completed(trials)
        assert {n: now.get(n) for n in before} == before, f"cycle {cycle}: a completed trial was lost or changed"
        before = now
    subprocess.run([sys.executable, "-m", "kdnas.cli", "search", str(tiny_study), "--trials", "1"], cwd=tmp_path,
                   env=ENV, check=True, capture_output=True)
    after = stored(tmp_path)
    check_resumed(before, after)
    assert sum(t.state == TrialState.FAIL for t in after) == 5, "one trial per kill, failed with its reason"


@pytest.mark.slow
def test_sigkill_of_one_worker_of_two(tmp_path: Path) -> None:
    study = write_tiny_study(tmp_path)
    _slower(study)
    proc = subprocess.Popen([sys.executable, "-m", "kdnas.cli", "search", str(study), "--workers", "2", "--trials", "5"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    db = tmp_path / "runs/tiny/study.db"
    victim = None
    while victim is None and proc.poll() is None:
        time.sleep(0.05)
        try:
            with sqlite3.connect(db, timeout=30) as con:
                row = con.execute("SELECT a.value_json FROM trials t JOIN trial_system_attributes a ON a.trial_id = t.trial_id "
                                  "WHERE t.state = 'RUNNING' AND a.key = 'kdnas:worker'").fetchone()
        except sqlite3.OperationalError:
            continue
        if row:
            victim = json.loads(row[0])["pid"]
            os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert f"(pid {victim}) ended with exit code -9" in out
    trials = stored(tmp_path)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert sum(t.state.is_finished() for t in trials) == 5, "the surviving worker used the remaining tickets"
    (dead,) = [t for t in trials if t.state == TrialState.FAIL]
    assert dead.user_attrs["fail_reason"].startswith(f"worker died during the trial (pid {victim} ")
