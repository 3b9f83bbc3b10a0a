"""Worker processes: ``kdnas search --workers N`` runs one study with N processes on one machine.

The parent prepares what the workers share (the data split's fingerprint, the teacher, trained and cached
once, its latency) and creates the study; then it starts N processes with the ``spawn`` method (a fresh
interpreter each: forking a process whose PyTorch thread pools are running is not safe). Each worker loads
the cached teacher, opens the study and runs trials until the shared :class:`Tickets` run out, with
``threads // N`` torch threads. The parent waits, fails the trials of any worker that dies (see
:mod:`kdnas.study._liveness`), and writes the report once, at the end.
"""

from __future__ import annotations

import _thread
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Optional

import optuna

from kdnas.core import KdnasError, TrialFailure, error_chain
from kdnas.study._retry import OUTAGE_EXIT, PREFIX, StorageOutage, outage_in

# A worker that outlives its parent (killed) would go on adding trials nobody asked for: it checks this often.
PARENT_POLL_S = 1.0
# After Ctrl-C, how long the parent waits for its workers to record their interrupted trials.
STOP_GRACE_S = 30.0


class Tickets:
    """How many trials this ``kdnas search`` may still start, shared by its workers.

    A worker takes a ticket before each trial, so N workers together start exactly the requested number.
    (Optuna's ``MaxTrialsCallback`` instead counts stored trials after each trial: two workers finishing at
    the same moment can both see room for one more, and it cannot stop workers that have not finished a
    trial yet.)
    """

    def __init__(self, n: int, shared: bool):
        self._value = mp.get_context("spawn").Value("i", n) if shared else None
        self._n = n
        # Trials finished by this command (its pool): progress lines count these, not the study's trials, which
        # another command on the same study adds to as well.
        self._finished = mp.get_context("spawn").Value("i", 0) if shared else None
        self._done = 0

    def left(self) -> int:
        return self._n if self._value is None else self._value.value

    def take(self) -> bool:
        if self._value is None:
            ok, self._n = self._n > 0, max(0, self._n - 1)
            return ok
        with self._value.get_lock():
            if self._value.value <= 0:
                return False
            self._value.value -= 1
            return True

    def give_back(self) -> None:
        """Return a ticket: the trial it started did not train (an answer from a candidate's replicates)."""
        if self._value is None:
            self._n += 1
            return
        with self._value.get_lock():
            self._value.value += 1

    def finished(self) -> int:
        return self._done if self._finished is None else self._finished.value

    def finished_one(self) -> int:
        """Count one more finished trial of this command; return how many it has finished."""
        if self._finished is None:
            self._done += 1
            return self._done
        with self._finished.get_lock():
            self._finished.value += 1
            return self._finished.value


def optimize(study: optuna.Study, objective: Callable, tickets: Tickets, deadline: Optional[float],
             on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None],
             before_trial: Callable[[], None]) -> None:
    """Run trials of ``study`` while tickets last and ``deadline`` (``time.time()``) is not reached."""

    def after(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        on_trial(study, trial)
        if (deadline is not None and time.time() >= deadline) or not tickets.take():
            study.stop()
        else:
            before_trial()

    if (deadline is not None and time.time() >= deadline) or not tickets.take():
        return
    before_trial()
    timeout = None if deadline is None else max(0.0, deadline - time.time())
    try:
        study.optimize(objective, timeout=timeout, catch=(TrialFailure,), callbacks=[after], gc_after_trial=False)
    except Exception as err:
        # Optuna, failing the trial that an outage interrupted, reads the storage again and can raise another
        # error on top of the outage: the outage is what to report.
        outage = outage_in(err)
        if outage is None:
            raise
        raise outage from None


def threads_per_worker(threads: Optional[int], workers: int) -> int:
    return max(1, (threads or os.cpu_count() or 1) // workers)


def run_pool(n: int, args: Callable[[int], tuple], on_exit: Callable[[int, int, int], None]) -> list[int]:
    """Start ``n`` workers (:func:`worker_main` with ``args(i)``), wait for all; return their exit codes.

    ``on_exit(index, pid, exitcode)`` runs as each worker ends. On Ctrl-C the workers are interrupted too
    (they record their running trial as interrupted), then KeyboardInterrupt is raised again.
    """
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=worker_main, args=args(i), name=f"kdnas-worker-{i}") for i in range(n)]
    for p in procs:
        p.start()
    codes: dict[int, int] = {}
    try:
        while len(codes) < n:
            for sentinel in wait([p.sentinel for i, p in enumerate(procs) if i not in codes]):
                i = next(i for i, p in enumerate(procs) if p.sentinel == sentinel)
                procs[i].join()
                codes[i] = procs[i].exitcode
                on_exit(i, procs[i].pid, codes[i])
    except KeyboardInterrupt:
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)  # the worker fails its running trial as "interrupted" and exits
        end = time.time() + STOP_GRACE_S
        for i, p in enumerate(procs):
            p.join(max(0.0, end - time.time()))
            if p.is_alive():
                p.kill()
                p.join()
            if i not in codes:
                codes[i] = p.exitcode
                on_exit(i, p.pid, codes[i])
        raise
    return [codes[i] for i in range(n)]


def _watch_parent(parent: int) -> None:
    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        _thread.interrupt_main()  # like Ctrl-C: the running trial is recorded as interrupted

    threading.Thread(target=loop, name="kdnas-parent-watch", daemon=True).start()


def worker_main(run: Callable[..., None], index: int, study_file: str, overrides: dict[str, Any], tickets: Tickets,
                deadline: Optional[float], threads: int, started: float) -> None:
    """Entry point of one worker process (started by :func:`run_pool`): ``run`` (the runner's ``run_worker``,
    passed in by reference so that this module never imports the runner that imports it) with the study."""
    _watch_parent(os.getppid())
    from kdnas.core import _malloc, setup_logging
    from kdnas.study._storage import scrub

    _malloc.tune()  # a spawned interpreter: as the command's own process (kdnas/core/_malloc.py)
    setup_logging()
    PREFIX[0] = f"kdnas: worker {index}: "  # its database outage lines (kdnas/study/_retry.py)
    try:
        from kdnas.config import load_study

        run(load_study(Path(study_file), overrides), index, tickets, deadline, threads, started)
    except KeyboardInterrupt:
        sys.exit(130)
    except StorageOutage as err:  # its own exit code: the parent does not read the storage that is away
        print(scrub(f"kdnas: worker {index}: {err}"), file=sys.stderr, flush=True)
        sys.exit(OUTAGE_EXIT)
    except KdnasError as err:
        print(scrub(f"kdnas: worker {index}: error: {err}"), file=sys.stderr, flush=True)
        sys.exit(2)
    except Exception as err:
        if _interrupted(err):  # Ctrl-C inside Optuna's bookkeeping can surface as another error
            sys.exit(130)
        import traceback

        print(scrub(f"kdnas: worker {index} crashed:\n{traceback.format_exc()}"), file=sys.stderr, flush=True)
        sys.exit(1)


def _interrupted(err: BaseException | None) -> bool:
    return any(isinstance(e, KeyboardInterrupt) for e in error_chain(err))
