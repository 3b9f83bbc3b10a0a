"""A database that goes away: a PostgreSQL restart, a dropped connection, an outage longer than the study allows
(kdnas/study/_retry.py). A real, throwaway cluster (tests/_postgres.py), stopped and started by the tests."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import psycopg2
import pytest
from optuna.trial import TrialState

from kdnas.study import rdb_storage
from kdnas.study._retry import OUTAGE, StorageOutage
from tests._postgres import PASSWORD, SUPERUSER
from tests._util import write_tiny_study
from tests.test_workers import ENV


@pytest.fixture(autouse=True)
def _forget_the_outage():
    # The outage this process saw holds back its stale-trial check for a while after (kdnas/study/_retry.py): the
    # tests that follow in this process must not inherit it (test_postgres.py's heartbeat test failed so).
    yield
    OUTAGE.since = OUTAGE.ended = None


def _later(seconds: float, action) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), action()))
    thread.start()
    return thread


def _drop_after_next_commit(storage: optuna.storages.RDBStorage, cluster) -> None:
    """The next commit reaches the server, then its connection dies before the answer: a tell whose outcome the
    worker cannot know (the server's process is really terminated; the error is the driver's own)."""
    dialect = storage.engine.dialect
    commit = dialect.do_commit

    def commit_then_drop(dbapi_connection) -> None:
        del dialect.do_commit  # once
        commit(dbapi_connection)
        with psycopg2.connect(host="127.0.0.1", port=cluster.port, user=SUPERUSER, password=PASSWORD,
                              dbname="postgres") as admin, admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (dbapi_connection.get_backend_pid(),))
        dbapi_connection.cursor().execute("SELECT 1")  # psycopg2.OperationalError: the server closed it

    dialect.do_commit = commit_then_drop


def test_storage_rides_out_a_restart_and_gives_up_after_the_limit(postgres_cluster, postgres_url: str, capfd) -> None:
    storage = rdb_storage(postgres_url, heartbeat_interval=1, grace_period=1, outage=30)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize"])
    told, beating, silent = study.ask(), study.ask(), study.ask()
    storage.record_heartbeat(silent._trial_id)  # its worker beats again once the database is back

    # The server stops; every call waits for it (the tell, the heartbeat in its thread), each once told why.
    postgres_cluster.server("stop")
    started = _later(1.3, lambda: postgres_cluster.server("start"))  # longer than the grace period
    heartbeat = threading.Thread(target=storage.record_heartbeat, args=(beating._trial_id,))
    heartbeat.start()
    study.tell(told, 0.5)
    heartbeat.join()
    started.join()
    err = capfd.readouterr().err
    assert err.count("database unreachable (OperationalError: ") == 1, err
    assert err.count("retrying for up to 30s (parallel.storage_outage)") == 1 and err.count("database back after") == 1
    assert "Traceback" not in err, "the heartbeat thread waited too"
    assert storage._get_stale_trial_ids(study._study_id) == [], "silent through the outage, not taken for dead"

    # A tell committed just before its connection dropped is not told twice ("Cannot tell a COMPLETE trial").
    dropped = study.ask()
    _drop_after_next_commit(storage, postgres_cluster)
    study.tell(dropped, 0.7)
    study.tell(beating, 0.6)
    study.tell(silent, 0.4)
    trials = optuna.load_study(study_name="s", storage=rdb_storage(postgres_url)).trials
    assert [(t.state, t.value) for t in trials] == [(TrialState.COMPLETE, v) for v in (0.5, 0.6, 0.4, 0.7)]

    # Away longer than the limit: one clear error, no password; the heartbeat thread skips its beat quietly.
    short = rdb_storage(postgres_url, outage=1)
    postgres_cluster.server("stop")
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageOutage) as raised:
            short.get_all_studies()
        assert 1 <= time.monotonic() - t0 < 4
        short.record_heartbeat(beating._trial_id)
    finally:
        postgres_cluster.server("start")
    message = str(raised.value)
    assert message.startswith("database unreachable for 1s, longer than parallel.storage_outage (1s): ")
    assert "run `kdnas search` again to resume" in message and PASSWORD not in message + capfd.readouterr().err
    assert len(short.get_all_studies()) == 1, "usable again once the server is back"


def test_a_claim_waits_through_an_outage_and_leaves_a_live_holder_its_claim(postgres_cluster, postgres_url: str,
                                                                           capfd) -> None:
    # A machine waiting for another's teacher (kdnas/study/_claims.py) while the database restarts: it waits as
    # every storage call does, and the holder's silence during the outage (nobody could beat) is not taken for death.
    from kdnas.study._claims import StorageClaims

    lease = 1.0
    holder, waiter = (StorageClaims(lambda: rdb_storage(postgres_url).engine, lease, outage=30) for _ in range(2))
    got: list[float] = []
    with holder("teacher-x", "teacher x"):
        waiting = threading.Thread(target=lambda: (waiter._acquire("teacher-x", "teacher x"), got.append(time.monotonic())))
        waiting.start()
        time.sleep(0.5)
        postgres_cluster.server("stop")
        time.sleep(1.5 * lease)  # longer than the lease: no beat reaches the table meanwhile
        postgres_cluster.server("start")
        time.sleep(1.0)
        assert not got and waiting.is_alive(), "a live holder keeps its claim through an outage"
    released = time.monotonic()
    waiting.join(timeout=10)
    assert got and got[0] - released < 3, "the waiter takes the claim once it is released"
    err = capfd.readouterr().err
    assert "database unreachable" in err and "database back after" in err and "Traceback" not in err


def _search(study: Path, url: str, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "kdnas.cli", "search", str(study), "--storage", url, *flags],
                            cwd=study.parent, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name="tiny", storage=rdb_storage(url)).trials
    except KeyError:  # not created yet
        return []


def _study_with_a_middle(folder: Path, parallel: str) -> Path:
    """The tiny study with students that train long enough (8 epochs, 2-3 s a trial) for its middle to be caught:
    with 1 epoch its 4 trials took 0.8 s in all, and the poll below missed the window (a failed slow run)."""
    study = write_tiny_study(folder, extra=f"parallel: {parallel}\n")
    text = study.read_text()
    assert "student:\n  train: {epochs: 1," in text
    study.write_text(text.replace("student:\n  train: {epochs: 1,", "student:\n  train: {epochs: 8,"))
    return study


def _when_running(url: str, proc: subprocess.Popen) -> None:
    """Wait until a trial has completed and another is running: the middle of the study."""
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        states = [t.state for t in _trials(url)]
        if TrialState.COMPLETE in states and TrialState.RUNNING in states:
            return
        time.sleep(0.1)
    raise AssertionError(f"the study never got going: {proc.communicate()[0] if proc.poll() is not None else ''}")


def _clean(out: str) -> None:
    assert "Traceback" not in out and PASSWORD not in out, out


@pytest.mark.slow  # 40-60 s on the busy 2-core VM: two worker processes and a 3-s outage
def test_a_restart_mid_study_loses_nothing(postgres_cluster, postgres_url: str, tmp_path: Path) -> None:
    # The outage outlasts the grace period: a worker's trial must not be taken for dead by the other one.
    study = _study_with_a_middle(tmp_path, "{heartbeat_interval: 1, grace_period: 2, storage_outage: 60}")
    proc = _search(study, postgres_url, "--workers", "2", "--trials", "4")
    try:
        _when_running(postgres_url, proc)
        postgres_cluster.server("stop")
        time.sleep(3)
    finally:
        postgres_cluster.server("start")
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out
    _clean(out)
    assert "database unreachable (" in out and "database back after" in out, out
    for w in (0, 1):  # one line when it goes, one when it is back: not one per attempt
        assert out.count(f"worker {w}: database unreachable (") == out.count(f"worker {w}: database back after") <= 1
    trials = _trials(postgres_url)
    assert [t.number for t in trials] == [0, 1, 2, 3], "the requested trials, none twice"
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4, "none lost, failed or left RUNNING"


@pytest.mark.slow  # 55-70 s on the busy 2-core VM: a stopped two-worker search, then its resumption
def test_an_outage_past_the_limit_stops_the_workers_and_the_study_resumes(postgres_cluster, postgres_url: str,
                                                                           tmp_path: Path) -> None:
    study = _study_with_a_middle(tmp_path, "{heartbeat_interval: 1, grace_period: 2, storage_outage: 2}")
    proc = _search(study, postgres_url, "--workers", "2", "--trials", "4")
    try:
        _when_running(postgres_url, proc)
        postgres_cluster.server("stop")
        out = proc.communicate(timeout=120)[0]
    finally:
        postgres_cluster.server("start")
    assert proc.returncode == 2, out
    _clean(out)
    errors = [line for line in out.splitlines() if "error" in line]
    assert len(errors) == 1, out  # one, from the command itself
    error = errors[0]
    assert error.startswith("kdnas: error: the database was unreachable longer than parallel.storage_outage (2s)")
    assert error.endswith("Completed trials are kept: run `kdnas search` again to resume"), out
    before = _trials(postgres_url)
    interrupted = [t.number for t in before if t.state == TrialState.RUNNING]
    assert interrupted, f"a trial was running when the workers stopped: {[t.state.name for t in before]}\n{out}"

    again = _search(study, postgres_url, "--trials", "2")
    out = again.communicate(timeout=600)[0]
    assert again.returncode == 0, out
    trials = _trials(postgres_url)
    assert not [t for t in trials if t.state == TrialState.RUNNING], "the interrupted trials are failed and retried"
    done = sum(t.state == TrialState.COMPLETE for t in before)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == done + 2, out
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    assert set(interrupted) <= retried | {t.number for t in trials if t.state == TrialState.FAIL and
                                           "not retried" in t.user_attrs.get("fail_reason", "")}, out
