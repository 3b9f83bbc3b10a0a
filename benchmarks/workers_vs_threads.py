"""On a CPU: one worker with all the threads, or several single-threaded workers? Trials per hour, side by side.

A study's students are small: their layers do not give a second thread much work, and the thread waits at
every barrier. Two single-threaded worker processes (`parallel.workers: 2`, `threads: 2`) keep both cores
on their own trials instead. This script measures which gives more trials per hour on this machine, on the
same work:

- the same study (default ``studies/mnist5k.yaml``; early stopping off, so that every candidate trains its
  full epochs on both sides whatever order the trials finish in);
- the same candidates: ``--trials`` parameter sets drawn once from the search space (random sampler,
  seeded) and enqueued, in the same order, in each side's fresh study, so both sides train exactly these;
- the same teacher: trained once first and copied into both run folders (it is trained by the command's
  own process, with all threads, on both sides anyway);
- everything else as a user runs it: one real `kdnas search` command per side (latency measured in each
  side's own run folder, the report written at the end). Rounds alternate the order of the sides.

Printed per side: wall time of the command, trials finished, trials per hour; the ratio, written ``N.Nx``.

    PYTHONPATH=. python benchmarks/workers_vs_threads.py [--study mnist5k.yaml] [--trials 16] [--rounds 1] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402


def candidates(study: Path, n: int, seed: int) -> list[dict]:
    """``n`` parameter sets drawn from the study's search space by a seeded random sampler (no training)."""
    import optuna

    from kdnas.config import load_study

    cfg = load_study(study)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    draw = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = draw.ask()
        cfg.space.sample(trial)
        out.append(dict(trial.params))
        draw.tell(trial, 0.0)
    return out


def enqueue(study: Path, cwd: Path, params: list[dict], storage: str | None = None) -> None:
    """Create the side's study (as `kdnas search` will open it, or in ``storage``) and queue ``params`` in order."""
    from kdnas.config import load_study
    from kdnas.study import open_study

    prev = os.getcwd()
    os.chdir(cwd)  # the run folder is relative to the working directory, as for the command
    try:
        s = open_study(load_study(study, {"storage": storage} if storage else None), create=True)
        for p in params:
            s.enqueue_trial(p, skip_if_exists=False)
    finally:
        os.chdir(prev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="mnist5k.yaml", help="a shipped study (in studies/) or a path")
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2, help="workers of the second side (threads split among them)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the study (both sides)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of the candidates' draw")
    ap.add_argument("--keep", help="keep the run folders here (default: a temporary folder, removed)")
    ap.add_argument("--smoke", action="store_true",
                    help="a check in seconds (tests/test_benchmarks.py runs it): 2 candidates, one round, on the tiny "
                         "study of _studies.SMOKE; figures mean nothing")
    args = ap.parse_args()
    if args.smoke:
        args.trials, args.rounds, args.threads = 2, 1, 1  # _studies.SMOKE's one thread
    with _studies.work_folder(args.keep, "kdnas-workers-") as tmp:
        run(args, tmp)


def run(args, tmp: Path) -> None:
    overrides = {"threads": args.threads, "search": {"trials": args.trials, "early_stopping": {"enabled": False}}}
    study = _studies.derive(args.study, tmp, overrides, smoke=args.smoke)
    params = candidates(study, args.trials, args.seed)
    sides = {f"1 worker x {args.threads} threads": [],
             f"{args.workers} workers x {max(1, args.threads // args.workers)} thread(s)": ["--workers", str(args.workers)]}
    print(f"study {args.study}: {args.trials} enqueued candidates, early stopping off; {_studies.machine()}", flush=True)
    folders = {(r, name): tmp / f"r{r}-{i}" for r in range(args.rounds) for i, name in enumerate(sides)}
    # The same study file in every side's folder: kdnas keeps its run folder beside the study file.
    files = {key: _studies.derive(args.study, folder, overrides, smoke=args.smoke) for key, folder in folders.items()}
    teacher_s = _studies.pretrain_teacher(study, tmp, list(folders.values()))
    print(f"teacher trained once in {teacher_s:.1f}s and copied into every side's run folder", flush=True)
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in sides}
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for name in order:
            cwd, side_study = folders[(r, name)], files[(r, name)]
            enqueue(side_study, cwd, params)
            wall, _cpu = _studies.kdnas_search(side_study, cwd, ["--trials", str(args.trials), *sides[name]],
                                                log=cwd / "search.log")
            done = [t for t in _studies.trials(cwd, side_study) if t.state.is_finished()]
            states = sorted({t.state.name for t in done})
            results[name].append((wall, len(done)))
            print(f"round {r + 1}, {name:24s}: {wall:7.1f}s wall, {len(done)} trials finished ({', '.join(states)}), "
                  f"{3600 * len(done) / wall:6.1f} trials/hour", flush=True)
    rates = {name: sum(n for _, n in rs) * 3600 / sum(w for w, _ in rs) for name, rs in results.items()}
    (a, ra), (b, rb) = rates.items()
    print(f"\ntrials per hour: {a} {ra:.1f}, {b} {rb:.1f}: {rb / ra:.1f}x")


if __name__ == "__main__":
    main()
