"""Riding out a database that goes away for a moment: a restart, a failover, a dropped connection.

Why in the storage and not at each call site: a worker talks to the database from a dozen places (Optuna's ask
and tell, every attribute a trial records, the heartbeat thread, the sampler's and the sweep's reads), and a
connection error at any one of them ended the worker with a traceback and left its trial RUNNING. Optuna's
``RDBStorage`` retries only a trial's creation (five times, a random pause of up to 2 s, meant for deadlocks)
and turns every other SQLAlchemy error into ``StorageInternalError``; ``pool_pre_ping`` replaces a pooled
connection that the server closed, but only once the server is up again. :class:`RetryingRDBStorage` retries
every call whose error is a lost or refused connection (SQLAlchemy's exception classes, not the message),
with exponential backoff (capped, with jitter, so that workers do not come back in lockstep), for up to
``parallel.storage_outage`` seconds counted from the outage's first failure. It says so once per outage, in
one line, and once more when the database is back. Past the limit it raises :class:`StorageOutage`: the
worker stops cleanly and ``kdnas search`` resumes the study later.

Three calls need more than a retry:

- **A tell** (a trial's final state) whose connection dropped may have been committed or not: before telling
  again, the trial is read, and a trial already in the state being told is not told twice.
- **The heartbeat** must not raise in its thread (a traceback, and no more beats): past the limit it skips
  the beat and tries again at the next one.
- **The stale-trial check** of Optuna's heartbeat: after an outage every running trial looks silent (no
  heartbeat could be written), so for ``grace_period`` seconds after an outage this process fails none,
  giving the live workers time to beat again.
"""

from __future__ import annotations

import functools
import random
import sys
import threading
import time
from typing import Any, Callable, Optional

from optuna.storages import RDBStorage
from optuna.trial import TrialState

from kdnas.core import KdnasError, error_chain

BACKOFF_FIRST_S = 0.25  # the first pause; each next one doubles, up to the cap
BACKOFF_CAP_S = 8.0  # so that a worker notices the database's return within seconds
OUTAGE_EXIT = 75  # a worker process stopped by an outage (EX_TEMPFAIL: try again later)
# What the outage lines begin with; a worker process names itself (kdnas/study/_runner.py).
PREFIX = ["kdnas: "]


class StorageOutage(KdnasError):
    """The database stayed away longer than ``parallel.storage_outage``."""


def transient(err: BaseException | None) -> bool:
    """Whether ``err`` (or what caused it: Optuna wraps SQLAlchemy's errors) is a lost or refused connection."""
    from sqlalchemy import exc

    return any(isinstance(e, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError))
               or (isinstance(e, exc.DBAPIError) and e.connection_invalidated) for e in error_chain(err))


def outage_in(err: BaseException | None) -> Optional[StorageOutage]:
    """The :class:`StorageOutage` behind ``err``: Optuna, failing the trial it interrupted, can raise another error
    on top of it (its own bookkeeping reads the storage again)."""
    return next((e for e in error_chain(err) if isinstance(e, StorageOutage)), None)


def cause_of(err: BaseException, mask: Callable[[str], str]) -> str:
    """The driver's first line (``OperationalError: server closed the connection unexpectedly``), through ``mask``
    (kdnas/study/_storage.py's ``scrub``: no password)."""
    # The driver's own error, under SQLAlchemy's and Optuna's.
    inner = next((e.orig for e in error_chain(err) if getattr(e, "orig", None) is not None), err)
    lines = str(inner).strip().splitlines()
    return mask(f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__)


class _Outage:
    """This process's view of the database: reachable, or away since when (shared by its threads: the heartbeat
    thread and the main thread report one outage once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.since: Optional[float] = None
        self.ended: Optional[float] = None

    def failed(self, cause: str, limit: float) -> float:
        """Note a failed call; return how long the database has been away."""
        with self._lock:
            now = time.monotonic()
            if self.since is None:
                self.since = now
                _say(f"database unreachable ({cause}), retrying for up to {limit:g}s (parallel.storage_outage)")
            return now - self.since

    def succeeded(self) -> None:
        if self.since is None:  # the common case: no lock taken
            return
        with self._lock:
            if self.since is not None:
                self.ended = time.monotonic()
                _say(f"database back after {self.ended - self.since:.1f}s")
                self.since = None

    def ended_within(self, seconds: float) -> bool:
        return self.since is not None or (self.ended is not None and time.monotonic() - self.ended < seconds)


OUTAGE = _Outage()


def _say(line: str) -> None:
    print(PREFIX[0] + line, file=sys.stderr, flush=True)


def backoff(attempt: int) -> float:
    """The pause before retry ``attempt`` (0, 1, ...): doubling, capped, between half and all of it (jitter)."""
    return min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** min(attempt, 30)) * random.uniform(0.5, 1.0)


_DEPTH = threading.local()  # Optuna's methods call each other: only the outermost call retries


def retrying(fn: Callable[..., Any], storage: "RetryingRDBStorage", *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, retried on a lost connection until it succeeds or the database has been away for
    ``storage.outage`` seconds (then :class:`StorageOutage`)."""
    if getattr(_DEPTH, "n", 0):
        return fn(*args, **kwargs)
    attempt = 0
    while True:
        _DEPTH.n = 1
        try:
            result = fn(*args, **kwargs)
        except Exception as err:
            if not transient(err):
                raise
            limit, cause = storage.outage, cause_of(err, storage.mask)
            away = OUTAGE.failed(cause, limit)
            if away >= limit:
                raise StorageOutage(
                    f"database unreachable for {away:.0f}s, longer than parallel.storage_outage ({limit:g}s): "
                    f"{cause}; stopped. Completed trials are kept: run `kdnas search` again to resume") from None
            time.sleep(min(backoff(attempt), limit - away))
            attempt += 1
            continue
        finally:
            _DEPTH.n = 0
        OUTAGE.succeeded()
        return result


# The storage methods that reach the database, as Optuna's own code and its ``_CachedStorage`` call them.
_RETRIED = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr", "get_study_id_from_name",
    "get_study_name_from_id", "get_study_directions", "get_study_user_attrs", "get_study_system_attrs",
    "get_trial_user_attrs", "get_trial_system_attrs", "get_all_studies", "create_new_trial", "_create_new_trial",
    "set_trial_param", "_set_trial_param", "get_trial_param", "set_trial_intermediate_value", "set_trial_user_attr",
    "set_trial_system_attr", "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials",
    "get_best_trial", "_get_best_trial_id",
)


class RetryingRDBStorage(RDBStorage):
    """Optuna's ``RDBStorage`` whose calls ride out an outage of up to ``outage`` seconds (see the module)."""

    def __init__(self, *args: Any, outage: float, mask: Callable[[str], str], **kwargs: Any):
        self.outage, self.mask = outage, mask  # mask: what removes passwords from the driver's messages
        super().__init__(*args, **kwargs)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Any = None) -> bool:
        told = RDBStorage.set_trial_state_values
        if not state.is_finished():  # a claim of a waiting trial: kdnas/study/_liveness.py sweeps an orphaned one
            return retrying(told, self, self, trial_id, state, values)
        tried = False

        def tell() -> bool:
            nonlocal tried
            if tried and RDBStorage.get_trial(self, trial_id).state == state:
                return True  # the attempt whose connection dropped was committed: not told twice
            tried = True
            return told(self, trial_id, state, values)

        return retrying(tell, self)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            retrying(RDBStorage.record_heartbeat, self, self, trial_id)
        except StorageOutage:
            pass  # the main thread stops at its next call if the database is still away; this beat is skipped

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = retrying(RDBStorage._get_stale_trial_ids, self, self, study_id)
        grace = self.grace_period if self.grace_period is not None else 2 * (self.heartbeat_interval or 0)
        # Another worker's next beat may wait for its backoff pause, then for its heartbeat interval.
        return [] if OUTAGE.ended_within(grace + BACKOFF_CAP_S) else stale


def _retried(name: str) -> Callable[..., Any]:
    base = getattr(RDBStorage, name)

    @functools.wraps(base)
    def method(self: RetryingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        return retrying(base, self, self, *args, **kwargs)

    return method


for _name in _RETRIED:
    setattr(RetryingRDBStorage, _name, _retried(_name))
