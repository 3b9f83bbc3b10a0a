"""Workers on "many machines": one PostgreSQL study joined by several `kdnas search` processes, Optuna's
heartbeat for workers that went silent, and passwords that never leak. A real, throwaway cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from kdnas.cli import main
from kdnas.study import rdb_storage
from tests._postgres import PASSWORD
from tests._util import write_tiny_study
from tests.test_workers import ENV

FAST_HEARTBEAT = "parallel: {heartbeat_interval: 1, grace_period: 2}\n"


@pytest.mark.slow  # 12 s; the worker pool is tested on SQLite (test_workers.py), PostgreSQL by the tests below
def test_two_workers_share_one_postgres_study(postgres_url: str, tmp_path: Path, monkeypatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path)
    assert main(["search", str(study), "--storage", postgres_url, "--workers", "2", "--trials", "3"]) == 0
    out = capfd.readouterr()
    assert PASSWORD not in out.out + out.err
    trials = optuna.load_study(study_name="tiny", storage=rdb_storage(postgres_url)).trials
    assert sorted(t.number for t in trials) == [0, 1, 2], "exactly the requested trials, no duplicates, none lost"
    assert all(t.state == TrialState.COMPLETE for t in trials)
    pids = {t.system_attrs["kdnas:worker"]["pid"] for t in trials}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids, "the worker processes ran the trials"


@pytest.mark.slow
def test_searches_on_two_machines_join_one_postgres_study(postgres_url: str, tmp_path: Path) -> None:
    # Two machines (here: two processes, one with two workers of its own) start on one study at once.
    study = write_tiny_study(tmp_path)
    procs = [subprocess.Popen([sys.executable, "-m", "kdnas.cli", "search", str(study), "--storage", postgres_url, *c],
                              cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in (["--workers", "2", "--trials", "3"], ["--trials", "2"])]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all(PASSWORD not in out for out in outs)
    assert sum(out.count("trained in") for out in outs) == 1, "the run folder's lock: one process trains the teacher"
    assert len(optuna.get_all_study_summaries(rdb_storage(postgres_url))) == 1, "created once, joined by the other"
    trials = optuna.load_study(study_name="tiny", storage=rdb_storage(postgres_url)).trials
    assert sorted(t.number for t in trials) == list(range(5)), "each process ran its own trials; none lost"
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.system_attrs["kdnas:worker"]["pid"] for t in trials}) >= 2, "both machines ran trials"


def test_heartbeat_fails_and_retries_a_silent_trial(postgres_url: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study_file = write_tiny_study(tmp_path, extra=FAST_HEARTBEAT)
    # A worker on another machine starts a trial, beats once, and dies: only the heartbeat can tell.
    storage = rdb_storage(postgres_url, heartbeat_interval=1)
    study = optuna.create_study(study_name="tiny", storage=storage, directions=["maximize", "minimize", "minimize"])
    lost = study.ask()
    storage.set_trial_system_attr(lost._trial_id, "kdnas:worker", {"host": "another-machine", "pid": 1, "lock": "/x"})
    storage.record_heartbeat(lost._trial_id)
    time.sleep(3)  # past the grace period

    assert main(["search", str(study_file), "--storage", postgres_url, "--trials", "1"]) == 0
    trials = {t.number: t for t in optuna.load_study(study_name="tiny", storage=storage).trials}
    assert trials[lost.number].state == TrialState.FAIL
    (retry,) = [t for t in trials.values() if t.system_attrs.get("failed_trial") == lost.number]
    assert retry.state == TrialState.COMPLETE, "the retry took the run's one trial"
    assert len(trials) == 2 and not [t for t in trials.values() if t.state == TrialState.RUNNING]
    reason = pd.read_csv(tmp_path / "reports/tiny/trials.csv").set_index("number").loc[lost.number, "reason"]
    assert reason == f"its worker died or lost the storage (no heartbeat); retried as trial {retry.number}"


def _no_password_in(where: str, text: str) -> None:
    assert PASSWORD not in text, f"the storage password leaked into {where}"


def test_passwords_never_leak(postgres_url: str, postgres_cluster, tmp_path: Path, monkeypatch, capfd) -> None:
    monkeypatch.chdir(tmp_path)
    study_file = write_tiny_study(tmp_path)
    study_file.write_text(study_file.read_text() + f"storage: {postgres_url}\n")  # in the study file, this time
    assert main(["search", str(study_file), "--trials", "2"]) == 0
    assert main(["report", str(study_file)]) == 0
    assert main(["export", str(study_file), "--trial", "0", "--out", "bundle"]) == 0
    out = capfd.readouterr()
    _no_password_in("stdout", out.out)
    _no_password_in("stderr", out.err)
    assert "postgresql://postgres:***@127.0.0.1" in out.out, "the storage is named, masked"
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != study_file:
            _no_password_in(str(path), path.read_bytes().decode("latin-1"))
    study = optuna.load_study(study_name="tiny", storage=rdb_storage(postgres_url))
    system_attrs = study._storage.get_study_system_attrs(study._study_id)
    _no_password_in("the study's attributes", json.dumps([study.user_attrs, system_attrs], default=str))
    for t in study.trials:
        _no_password_in(f"trial {t.number}", json.dumps([t.user_attrs, t.system_attrs, t.params], default=str))

    # A wrong password, and an unreachable server: masked in the error too.
    for url in (postgres_cluster.url(postgres_url.rsplit("/", 1)[1], password=PASSWORD + "-wrong"),
                f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x"):
        assert main(["search", str(study_file), "--storage", url]) == 2
        err = capfd.readouterr().err
        _no_password_in("an error message", err)
        assert err.startswith("kdnas: error: cannot open storage postgresql://postgres:***@127.0.0.1:"), err
