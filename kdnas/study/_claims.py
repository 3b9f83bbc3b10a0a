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
from typing import Any, Iterator

log = logging.getLogger("kdnas")

TABLE = "kdnas_claims"


class StorageClaims:
    """``claims(name)``: a context manager held while this process computes ``name`` for the whole study.
    ``engine``: a callable returning the study storage's SQLAlchemy engine (opened on the first claim)."""

    def __init__(self, engine: Any, lease: float):
        self._engine_fn, self._engine, self.lease = engine, None, float(lease)
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
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
                meta.create_all(self._engine, checkfirst=True)
            except Exception:  # another machine created it between the check and the create
                meta.create_all(self._engine, checkfirst=True)
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
        away = None  # since when the database has not answered
        while True:
            try:
                with self._engine.begin() as con:
                    con.execute(table.insert().values(name=name, holder=self.holder, beat=0))
                return
            except sa.exc.IntegrityError:
                pass  # held: by whom, and is it alive?
            except sa.exc.OperationalError:
                # The database away for a moment (a restart, a dropped connection): try again for a lease's time.
                away = away or time.monotonic()
                if time.monotonic() - away > max(self.lease, 30):
                    raise
                time.sleep(poll)
                continue
            away = None
            with self._engine.begin() as con:
                row = con.execute(sa.select(table.c.holder, table.c.beat).where(table.c.name == name)).first()
            if row is None:
                continue  # released meanwhile: try again at once
            row = tuple(row)
            if row != seen:
                seen, since = row, time.monotonic()
            elif time.monotonic() - since > self.lease:
                with self._engine.begin() as con:
                    won = con.execute(table.update().where(
                        (table.c.name == name) & (table.c.holder == row[0]) & (table.c.beat == row[1])
                    ).values(holder=self.holder, beat=0)).rowcount == 1
                if won:
                    log.info("%s: taking over from %s, silent for %.0f s (it died?)", label,
                             _host_pid(row[0]), self.lease)
                    return
            if not told:
                log.info("%s: waiting for %s, which is computing it", label, _host_pid(row[0]))
                told = True
            time.sleep(poll)

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
            with self._engine.begin() as con:
                con.execute(table.delete().where((table.c.name == name) & (table.c.holder == self.holder)))
        except Exception:  # unreachable database: the claim is taken over after its lease
            log.warning("%s: could not release its claim in the study's storage; others wait %.0f s for it",
                        label, self.lease)


def _host_pid(holder: str) -> str:
    host, pid, _ = holder.rsplit(":", 2)
    return f"{host} (pid {pid})"
