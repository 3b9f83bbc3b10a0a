"""Which Optuna storage for N worker processes on one machine: SQLite (as kdnas opens it) or the journal file?

Runs, side by side in one process tree, N worker processes against one study per storage, each worker
running trials that write what a kdnas trial writes (a dozen user attributes) and then sleep ``--work``
seconds (a stand-in for training; 0 = storage contention only). Prints, per storage and N: wall time, the
storage overhead per trial (the time all workers spent in their trial loops minus their sleeping, per trial), errors, and whether
the trial numbers came out complete and without duplicates. Then the crash check: ``--kills`` times,
SIGKILL a worker at a random moment and time how long the next worker takes to start its first trial (a
lock file left behind by the killed worker makes it wait).

    PYTHONPATH=. python benchmarks/storage_workers.py --workers 2 4 8 --trials 40 --work 0 0.05
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import signal
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import optuna

STORAGES = ("sqlite", "sqlite-rollback", "journal")


def open_storage(kind: str, folder: Path) -> optuna.storages.BaseStorage:
    warnings.simplefilter("ignore")
    if kind == "sqlite":
        from kdnas.study import rdb_storage

        return rdb_storage(f"sqlite:///{folder / 'study.db'}")
    if kind == "sqlite-rollback":  # SQLite's default journal mode, for comparison with the WAL kdnas sets
        return optuna.storages.RDBStorage(f"sqlite:///{folder / 'rollback.db'}", engine_kwargs={"connect_args": {"timeout": 60}})
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(folder / "study.journal")))


def objective(trial: optuna.Trial, work: float) -> tuple[float, float]:
    x = trial.suggest_float("x", 0, 1)
    depth = trial.suggest_categorical("depth", [8, 14, 20])
    for i in range(12):  # about what run_trial records per trial
        trial.set_user_attr(f"attr{i}", {"value": i, "label": f"resnet_cifar(depth={depth})"})
    time.sleep(work)
    return x, float(depth)


def worker(kind: str, folder: str, n: int, work: float, out: mp.Queue) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    errors = 0
    study = optuna.load_study(study_name="bench", storage=open_storage(kind, Path(folder)),
                              sampler=optuna.samplers.RandomSampler(seed=os.getpid()))
    t0 = time.perf_counter()  # opening the storage (seconds for SQLite: schema checks) is paid once per worker
    try:
        study.optimize(lambda t: objective(t, work), n_trials=n)
    except Exception as err:  # noqa: BLE001 - counted and reported
        errors += 1
        print(f"  {kind}: worker error: {type(err).__name__}: {str(err)[:120]}")
    out.put((time.perf_counter() - t0, errors))


def run(kind: str, n_workers: int, trials: int, work: float) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    optuna.create_study(study_name="bench", storage=open_storage(kind, folder), directions=["maximize", "minimize"])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    per = trials // n_workers
    t0 = time.perf_counter()
    procs = [ctx.Process(target=worker, args=(kind, str(folder), per, work, out)) for _ in range(n_workers)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    study = optuna.load_study(study_name="bench", storage=open_storage(kind, folder))
    numbers = sorted(t.number for t in study.trials)
    complete = sum(t.state.name == "COMPLETE" for t in study.trials)
    busy = sum(r[0] for r in results)
    return {"wall": wall, "overhead_ms": 1e3 * (busy - per * n_workers * work) / (per * n_workers),
            "errors": sum(r[1] for r in results), "complete": complete, "expected": per * n_workers,
            "numbers_ok": numbers == list(range(per * n_workers))}


def killer(kind: str, kills: int, seed: int) -> list[float]:
    """Start a worker, SIGKILL it at a random moment, then time the next worker's first trial."""
    folder = Path(tempfile.mkdtemp(prefix=f"bench-kill-{kind}-"))
    optuna.create_study(study_name="bench", storage=open_storage(kind, folder), directions=["maximize", "minimize"])
    ctx = mp.get_context("spawn")
    rng = random.Random(seed)
    waits = []
    for _ in range(kills):
        out = ctx.Queue()
        p = ctx.Process(target=worker, args=(kind, str(folder), 10_000, 0.0, out))
        p.start()
        time.sleep(2.0 + rng.random())  # past start-up, into the storm of writes
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        t0 = time.perf_counter()
        study = optuna.load_study(study_name="bench", storage=open_storage(kind, folder))
        study.optimize(lambda t: objective(t, 0.0), n_trials=1)
        waits.append(time.perf_counter() - t0)
    return waits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--trials", type=int, default=40, help="trials per study (split among the workers)")
    ap.add_argument("--work", type=float, nargs="+", default=[0.0, 0.05], help="seconds of 'training' per trial")
    ap.add_argument("--kills", type=int, default=10)
    args = ap.parse_args()
    print(f"{os.cpu_count()} cores; {args.trials} trials per study")
    print(f"{'storage':<8} {'workers':>7} {'work s':>6} {'wall s':>7} {'overhead ms/trial':>18} {'errors':>6} {'complete':>9} numbers")
    for work in args.work:
        for n in args.workers:
            rows = {kind: run(kind, n, args.trials, work) for kind in STORAGES}
            for kind, r in rows.items():
                print(f"{kind:<8} {n:>7} {work:>6} {r['wall']:>7.2f} {r['overhead_ms']:>18.1f} {r['errors']:>6} "
                      f"{r['complete']:>4}/{r['expected']:<4} {'ok' if r['numbers_ok'] else 'GAPS/DUPLICATES'}")
            ratio = rows["journal"]["overhead_ms"] / max(rows["sqlite"]["overhead_ms"], 1e-9)
            print(f"         journal/sqlite overhead ratio at {n} workers, work {work}s: {ratio:.2f}")
    if args.kills:
        print(f"\nSIGKILL a worker at a random moment, {args.kills} times; seconds until the next worker finished one trial:")
        for kind in STORAGES:
            waits = killer(kind, args.kills, 0)
            print(f"{kind:<8} median {statistics.median(waits):.2f} s, max {max(waits):.2f} s, "
                  f"{sum(w > 5 for w in waits)} of {len(waits)} waited > 5 s")


if __name__ == "__main__":
    main()
