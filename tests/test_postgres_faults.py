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
from kdnas.study._retry import StorageOutage
from tests._postgres import PASSWORD, SUPERUSER
from tests._util import write_tiny_study
from tests.test_workers import ENV


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
