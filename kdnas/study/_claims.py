"""Claims: one machine of a study computes each shared artifact (a teacher, an assistant, a logit table); the
others wait for it and then read it from the store.

A ``flock`` serves the processes of one machine, but not machines: it does not work on every shared folder
(NFS), and an S3 bucket has none. The study's storage is what every machine of a study reaches already, so a
claim is a row of a small table, ``kdnas_claims``, in the study's own database (SQLite or PostgreSQL, through
Optuna's ``RDBStorage`` engine): its name (primary key: one holder at a time, by the database's own uniqueness
check), its holder (host, pid, a random tag) and a heartbeat counter the holder raises every ``lease / 4``
seconds from a thread. A waiter never compares clocks between machines: it watches the row, and when the
counter has not moved for ``lease`` seconds of its own clock, the holder is dead (SIGKILL, power cut, lost
network) and the waiter takes the claim over with one conditional update (holder and counter unchanged), which
only one waiter can win. A holder that ends, normally or by an exception, deletes its row.

Why a table and not a study system attribute: Optuna's attributes are set unconditionally (last writer wins),
so two machines could both believe they hold one; an insert into a primary key cannot succeed twice. Why not
``SELECT ... FOR UPDATE`` held for the whole training: a transaction open for an hour would hold a database
connection and, on SQLite, the write lock that every trial needs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any, Iterator

log = logging.getLogger("kdnas")

TABLE = "kdnas_claims"


class StorageClaims:
    """``claims(name)``: a context manager held while this process computes ``name`` for the whole study.
    ``engine``: a callable returning the study storage's SQLAlchemy engine (opened on the first claim)."""

    def __init__(self, engine: Any, lease: float, outage: float = 300.0):
        self._engine_fn, self._engine, self.lease = engine, None, float(lease)
        self.outage = float(outage)  # parallel.storage_outage: how long a claim's reads and writes wait for the database
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._outages = 0  # outages its calls met: a waiter restarts its count of a holder's silence after one
        self._table = None

    def _setup(self):
        if self._table is None:
            import sqlalchemy as sa

            self._engine = self._engine_fn()
            meta = sa.MetaData()
            table = sa.Table(TABLE, meta, sa.Column("name", sa.String(255), primary_key=True),
                             sa.Column("holder", sa.String(255), nullable=False),
                             sa.Column("beat", sa.Integer, nullable=False))
            try:
                self._db(lambda con: meta.create_all(con, checkfirst=True))
            except Exception:  # another machine created it between the check and the create
                self._db(lambda con: meta.create_all(con, checkfirst=True))
            self._table = table
        return self._table

    @contextlib.contextmanager
    def __call__(self, name: str, label: str | None = None) -> Iterator[None]:
        """``label``: how progress lines call what is computed (``teacher resnet_cifar(depth=8)``)."""
        self._acquire(name, label or name)
        stop = threading.Event()
        beating = threading.Thread(target=self._beat, args=(name, stop), daemon=True, name=f"claim {name}")
        beating.start()
        try:
            yield
        finally:
            stop.set()
            beating.join()
            self._release(name, label or name)

    def _acquire(self, name: str, label: str) -> None:
        import sqlalchemy as sa

        table = self._setup()
        seen, since, told = None, time.monotonic(), False
        poll = min(1.0, self.lease / 8)
        while True:
            outages = self._outages
            if self._db(lambda con: con.execute(table.insert().values(name=name, holder=self.holder, beat=0)),
                        unique=True):
                return
            row = self._db(lambda con: con.execute(sa.select(table.c.holder, table.c.beat)
                                                   .where(table.c.name == name)).first())
            if row is None:
                continue  # released meanwhile: try again at once
            row = tuple(row)
            if row[0] == self.holder:  # our insert was committed as its connection dropped; the retry found it
                return
            if row != seen or self._outages != outages:
                # A new beat, or the database was away meanwhile: nobody could beat then, so the holder's silence
                # is counted again from now (a live holder is not taken over because of an outage).
                seen, since = row, time.monotonic()
            elif time.monotonic() - since > self.lease:
                won = self._db(lambda con: con.execute(table.update().where(
                    (table.c.name == name) & (table.c.holder == row[0]) & (table.c.beat == row[1])
                ).values(holder=self.holder, beat=0)).rowcount == 1)
                if won:
                    log.info("%s: taking over from %s, silent for %.0f s (it died?)", label,
                             _host_pid(row[0]), self.lease)
                    return
            if not told:
                log.info("%s: waiting for %s, which is computing it", label, _host_pid(row[0]))
                told = True
            time.sleep(poll)

    def _db(self, work, unique: bool = False):
        """``work(connection)`` in one transaction, riding out an outage of the study's database for up to
        ``parallel.storage_outage`` seconds as every storage call does (kdnas/study/_retry.py: backoff, one line per
        outage). ``unique``: an insert, True when it went in and False when the name is taken."""
        import sqlalchemy as sa

        from kdnas.study._retry import OUTAGE, retrying
        from kdnas.study._storage import scrub

        def once():
            try:
                with self._engine.begin() as con:
                    out = work(con)
            except sa.exc.IntegrityError:
                if unique:
                    return False
                raise
            return True if unique else out

        before = (OUTAGE.since, OUTAGE.ended)
        try:
            return retrying(once, SimpleNamespace(outage=self.outage, mask=scrub))
        finally:
            if (OUTAGE.since, OUTAGE.ended) != before:  # the database was away meanwhile (seen by any thread)
                self._outages += 1

    def _beat(self, name: str, stop: threading.Event) -> None:
        table = self._table
        while not stop.wait(self.lease / 4):
            try:
                with self._engine.begin() as con:
                    con.execute(table.update().where((table.c.name == name) & (table.c.holder == self.holder))
                                .values(beat=table.c.beat + 1))
            except Exception:  # the database is away for a moment: the next beat tries again
                pass

    def _release(self, name: str, label: str) -> None:
        table = self._table
        try:
            self._db(lambda con: con.execute(table.delete().where((table.c.name == name)
                                                                  & (table.c.holder == self.holder))))
        except Exception:  # unreachable database: the claim is taken over after its lease
            log.warning("%s: could not release its claim in the study's storage; others wait %.0f s for it",
                        label, self.lease)


def _host_pid(holder: str) -> str:
    host, pid, _ = holder.rsplit(":", 2)
    return f"{host} (pid {pid})"
