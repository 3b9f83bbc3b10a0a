"""Optuna storage: SQLite in the run folder by default, any RDB URL otherwise. Passwords never printed.

Every storage is an ``RDBStorage`` with Optuna's heartbeat: each running trial records a heartbeat every
``parallel.heartbeat_interval`` seconds, and any worker starting a trial fails the RUNNING trials whose
heartbeat is older than ``parallel.grace_period`` (their worker died) and retries them once. That is what
lets workers on many machines share a PostgreSQL study; on one machine, :mod:`kdnas.study._liveness` finds dead
workers at once, without waiting for the grace period. On a database server, every call rides out an outage
of up to ``parallel.storage_outage`` seconds (:mod:`kdnas.study._retry`).

Why SQLite and not Optuna's journal file, which Optuna suggests for workers on one machine
(measured side by side, docs/performance.md): the journal costs less per trial (tens of milliseconds
against a few hundred for SQLite's ORM round trips, on a 2-core machine; small next to trials of seconds),
but a worker killed while appending can leave a torn line that makes the whole journal unreadable, and one
killed while holding the journal's lock file stalls every other worker for its 30 s grace period (measured).
SQLite's transactions survive a SIGKILL at any moment, only an RDB storage has Optuna's heartbeat, and one
storage format means a study started with one worker can be resumed with eight.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import optuna

from kdnas.core import KdnasError
from kdnas.study._retry import OUTAGE, RetryingRDBStorage, StorageOutage, backoff, cause_of, transient

if TYPE_CHECKING:
    from kdnas.config import StudyConfig

_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]*)(?P<tail>@)")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&\s]*)", re.IGNORECASE)
SQLITE_PREFIX = "sqlite:///"
# libpq and MySQL drivers otherwise wait for the operating system's TCP timeout (minutes) on an unreachable host.
CONNECT_TIMEOUT_S = 10


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db`` (also ``?password=``)."""
    url = _PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", url)
    return _QUERY_PASSWORD.sub(lambda m: f"{m['head']}***", url)


def mask_text(text: str, url: str) -> str:
    """Remove the password of ``url`` from any text (error messages from drivers can repeat it)."""
    for pattern in (_PASSWORD, _QUERY_PASSWORD):
        for m in pattern.finditer(url):
            for pw in {m["pw"], unquote(m["pw"])}:
                if pw:
                    text = text.replace(pw, "***")
    return mask_url(text)


_OPENED: set[str] = set()  # URLs this process opened: their passwords are scrubbed from any text it prints


def scrub(text: str) -> str:
    """``text`` without the password of any storage this process opened, nor of any URL in it."""
    for url in _OPENED:
        text = mask_text(text, url)
    return mask_url(text)


def is_local(url: str) -> bool:
    """A storage only this machine's processes can reach (so its workers are all visible here)."""
    return url.startswith(SQLITE_PREFIX)


def sqlite_path(url: str) -> Path | None:
    return Path(url[len(SQLITE_PREFIX):]) if url.startswith(SQLITE_PREFIX) else None


def _use_wal(path: Path) -> None:
    """Write-ahead logging: readers (a report, another worker's sampler) never block the writer. The mode is
    stored in the database file: set it once, not per connection (setting it takes a lock that workers
    opening the study together queue for)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=60)) as con:
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode=WAL")


def _sqlite_connect(path: str) -> sqlite3.Connection:
    # A generous busy timeout: concurrent writers queue for the lock instead of failing "database is locked".
    # SQLAlchemy's pool hands a connection to one thread at a time, so it may move between threads.
    con = sqlite3.connect(path, timeout=60, check_same_thread=False)
    # Python's sqlite3 (before 3.12's autocommit=False) starts a transaction only before a write, so Optuna's
    # read-then-write steps ran their read outside it: two workers both read a WAITING trial (a retry, an
    # enqueued candidate) and both ran it. No implicit BEGIN here; every transaction begins with
    # BEGIN IMMEDIATE instead (``_begin_immediate``), which takes the write lock before the read.
    con.isolation_level = None
    # With WAL, synchronous=NORMAL syncs at checkpoints instead of at every commit: a committed trial survives
    # any crash of the process (SIGKILL included) and is lost only to a power cut, and a trial's dozen
    # commits cost half the time.
    con.execute("PRAGMA synchronous=NORMAL")
    return con


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg 3, but
    psycopg2 (``pip install psycopg2-binary``) is as good and more widely installed."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def rdb_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                stale_callback: Any = None, outage: float | None = None) -> optuna.storages.RDBStorage:
    """An ``RDBStorage`` set up for concurrent workers (raises the driver's errors unchanged). With ``outage``, a
    database server's calls ride out a lost connection for up to that many seconds (kdnas/study/_retry.py)."""
    _OPENED.add(url)
    db = sqlite_path(url)
    if db is not None:
        _use_wal(db)
        engine_kwargs: dict[str, Any] = {"creator": partial(_sqlite_connect, str(db))}
    else:
        engine_kwargs = {"pool_pre_ping": True}
        if url.startswith(("postgresql", "mysql")):
            engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    kwargs: dict[str, Any] = dict(engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                                  grace_period=grace_period, heartbeat_stale_trial_callback=stale_callback)
    if outage is not None and db is None:  # a SQLite file has no server to restart
        storage = RetryingRDBStorage(_with_driver(url), outage=outage, mask=scrub, **kwargs)
    else:
        storage = optuna.storages.RDBStorage(_with_driver(url), **kwargs)
    if db is not None:
        from sqlalchemy import event  # Optuna's RDBStorage has imported it

        # Set up before: the tables and Optuna's version rows, each statement its own transaction.
        event.listen(storage.engine, "begin", _begin_immediate)
    return storage


def _begin_immediate(connection) -> None:
    """Each SQLite transaction holds the write lock from its start: a read-then-write (Optuna's claim of a
    WAITING trial, which its ``for_update`` does not lock on SQLite) cannot interleave with another process's.
    Transactions are milliseconds long; other processes wait for the lock (the busy timeout, 60 s)."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def check_storage(cfg: "StudyConfig") -> optuna.storages.RDBStorage | None:
    """Fail early, before anything is written, when the storage cannot be used: a remote database is
    connected to (and its tables created; the storage is returned for reuse); for SQLite, its folder must
    be creatable (and nothing is returned: the database file is created only when the study is)."""
    url = cfg.storage_url()
    db = sqlite_path(url)
    if db is None:
        return open_storage(cfg, create=True)
    folder = db.parent.absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise KdnasError(f"cannot open storage {mask_url(url)}: {folder} is not a writable folder")
    return None


def open_storage(cfg: "StudyConfig", create: bool, wait: bool = False) -> optuna.storages.RDBStorage:
    """The study's storage. ``wait``: a database server that cannot be reached is waited for as an outage
    (kdnas/study/_retry.py), up to ``parallel.storage_outage`` seconds (a worker process: the command that started
    it has just reached the database; anything else is told at once)."""
    from kdnas.study._liveness import retry_trial

    url = cfg.storage_url()
    db = sqlite_path(url)
    if db is not None:
        if not create and not db.is_file():
            raise KdnasError(f"no study database at {db}; run `kdnas search {cfg.path}` first")
        db.parent.mkdir(parents=True, exist_ok=True)
    p = cfg.parallel
    races, waits = 0, 0
    while True:
        try:
            storage = rdb_storage(url, p.heartbeat_interval, p.grace_period, partial(retry_trial, max_retry=p.max_retry),
                                  outage=p.storage_outage)
            OUTAGE.succeeded()
            return storage
        except Exception as err:  # bad URL, unreachable server, missing driver, wrong password
            # Workers on several machines starting at once on an empty database race to create its tables.
            if "already exists" in str(err) and races < 2:
                time.sleep(0.5 + races)
                races += 1
                continue
            if wait and db is None and transient(err):
                cause = cause_of(err, partial(mask_text, url=url))
                away = OUTAGE.failed(cause, p.storage_outage)
                if away < p.storage_outage:
                    time.sleep(min(backoff(waits), p.storage_outage - away))
                    waits += 1
                    continue
                raise StorageOutage(f"database unreachable for {away:.0f}s, longer than parallel.storage_outage "
                                    f"({p.storage_outage:g}s): {cause}; stopped") from None
            lines = str(err).strip().splitlines()
            cause = mask_text(lines[0] if lines else type(err).__name__, url)
            if isinstance(err, ImportError):
                cause += " (install the database driver, e.g. pip install psycopg2-binary)"
            raise KdnasError(f"cannot open storage {mask_url(url)}: {cause}") from None


def read_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Every trial of ``study``, read with Python's cyclic garbage collector paused: Optuna builds a few objects
    per attribute of every trial, and the collector, triggered by that many new objects, walked the growing heap
    again and again (a 5,000-trial SQLite study: 6.1 s to read, 2.5 s with it paused; benchmarks/bookkeeping.py)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return study.get_trials(deepcopy=False)
    finally:
        if enabled:
            gc.enable()
