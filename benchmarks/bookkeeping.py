"""Benchmark: a study's bookkeeping stays cheap as it grows (issue #25, item 8).

The claim it guards: on a 5,000-trial study, **the per-trial bookkeeping of a running search stays under
50 ms** (everything kdnas and Optuna do around a trial except the sampler and the trial's own work) and
**`kdnas report` takes under 10 s**.

The study is synthetic but shaped like a real one (benchmarks/_bigstudy.py: mnist5k's study file and search
space, the attributes kdnas records, replicates from intensification, a few reused, pruned and failed trials,
fronts of 10-30 candidates). It is written once per size and seed and cached (``--cache``).

The figures, one after the other (never two timings at once):

a. **per trial**: real trials through the runner (``kdnas.study._runner._run_trials``: its ``on_trial``,
   ``before_trial`` with the sweep of dead workers and intensification, Optuna's storage writes) on a copy of
   the study, with RandomSampler and an objective that samples the real space and records the attributes a
   trial records (``replicates()`` included) without training; the sampler's own time is taken out. Beside
   it, in alternating rounds: **Optuna alone** (the same objective and writes, no kdnas bookkeeping: what a
   trial costs whatever kdnas does), and Optuna alone with each phase's attributes written in one statement (a
   proposal: benchmarks/_proposals.py ``set_user_attrs``); **a'** is (a) less what that saves;
b. **first read**: ``optuna.load_study`` and ``get_trials`` of the stored study, as a new process does, and
   **b'** the same trials read with plain SQL (a proposal: ``read_trials``, checked equal to Optuna's);
c. **report**: ``kdnas report`` (``kdnas.results.report``: open, read, write), stage by stage, and **c'** the
   same with the proposals for it: the read of b', the study's attributes read once for the candidates' rows,
   and the hypervolume history computed only when the front changes (``means_history``, checked equal).

Why the claim is judged per *trained* trial: an answer from a candidate's replicates writes fewer attributes;
it is shown apart. "Optuna alone" is the floor no bookkeeping of kdnas's can go under: what Optuna's storage
costs for the trial's writes and reads.

    PYTHONPATH=. python benchmarks/bookkeeping.py                 # the claim: 5,000 trials
    PYTHONPATH=. python benchmarks/bookkeeping.py --profile 25    # and the report's 25 costliest functions
    PYTHONPATH=. python benchmarks/bookkeeping.py --smoke         # 200 trials, seconds; figures mean nothing
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import itertools
import pstats
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bigstudy  # noqa: E402
import _proposals  # noqa: E402
import _studies  # noqa: E402
from _bigstudy import N_VAL  # noqa: E402

PER_TRIAL_MS = 50.0  # the claims
REPORT_S = 10.0


class Ledger:
    """Inclusive wall time and calls of named functions, wrapped in this process only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.undo: list = []

    def wrap(self, owner, attr: str, label: str | None = None, required: bool = True) -> bool:
        fn = getattr(owner, attr, None)
        if fn is None:
            if required:
                sys.exit(f"bookkeeping.py: {getattr(owner, '__name__', owner)}.{attr} is gone; update the benchmark")
            return False
        label = label or attr

        @functools.wraps(fn)
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        self.undo.append((owner, attr, vars(owner).get(attr, fn)))  # a class's own descriptor (classmethod)
        setattr(owner, attr, timed)
        return True

    def restore(self) -> None:
        for owner, attr, fn in reversed(self.undo):
            setattr(owner, attr, fn)
        self.undo.clear()


def timed_sampler(inner, ledger: Ledger):
    """``inner`` with the time of each of its calls charged to ``ledger`` (what "sampler excluded" takes out)."""
    from optuna.samplers import BaseSampler

    def timed(name: str):
        def method(self, *a, **k):
            t = time.perf_counter()
            try:
                return getattr(inner, name)(*a, **k)
            finally:
                ledger.seconds["sampler"] += time.perf_counter() - t
        return method

    names = ("before_trial", "infer_relative_search_space", "sample_relative", "sample_independent", "after_trial",
             "reseed_rng")
    return type("Timed", (BaseSampler,), {name: timed(name) for name in names})()


# (a)'s sides: label -> (runner, batched attribute writes)
SIDES = {"runner": (True, False), "optuna": (False, False), "optuna_batched": (False, True)}


def per_trial(cfg, trials: int, rounds: int, seed: int, profile: int = 0) -> dict:
    """(a): trials on the study in ``cfg``'s storage, ``trials`` per side in ``rounds`` alternating rounds."""
    from types import SimpleNamespace

    import optuna

    from kdnas.candidates._table import CandidateTable as Table
    from kdnas.study import _runner, _trial
    from kdnas.study._liveness import WorkerLock
    from kdnas.study._resume import recipe
    from kdnas.study._workers import Tickets

    from kdnas.config import SINGLE
    from kdnas.study._runtime import ladder_for
    from kdnas.study._teachers import Teachers

    ladder = ladder_for(cfg, N_VAL, recipe(cfg)["study"])
    teachers = Teachers({}, {SINGLE: _bigstudy.study_attrs(cfg)["teacher"]}, SINGLE)  # the figures efficiency is rated by
    rt = SimpleNamespace(cfg=cfg, recipe=recipe(cfg)["study"], ladder=ladder, table=ladder.first, teachers=teachers)
    ledger = Ledger()
    study = _runner.open_study(cfg, create=True)  # cfg's storage: the copy of the study
    lock = WorkerLock(cfg.run_dir)
    real_sampler, real_objective = _runner.process_sampler, _runner.make_objective
    _runner.process_sampler = lambda c: timed_sampler(real_sampler(c), ledger)
    out = {side: _side() for side in SIDES}
    lines: list[str] = []
    seeds = itertools.count()
    prof = cProfile.Profile() if profile else None

    def run(side: str, n: int, warmup: bool = False) -> None:
        through_runner, batched = SIDES[side]
        objective = _bigstudy.objective(cfg, rt, lock, batched, bookkeeping=through_runner, seed=seed)
        o = out[side]
        ledger.seconds = o["parts"]
        prev = [time.perf_counter(), ledger.seconds["sampler"], time.process_time()]

        def mark(reused: bool, line: str = "") -> None:
            """One trial ended: the wall, sampler and CPU seconds since the one before ended (or the run began)."""
            now = [time.perf_counter(), ledger.seconds["sampler"], time.process_time()]
            o["reused" if reused else "trained"].append([x - y for x, y in zip(now, prev)])
            prev[:] = now
            if line:
                lines.append(line)

        if prof and side == "runner" and not warmup:
            prof.enable()
        if through_runner:
            _runner.make_objective = lambda rt, lock: objective
            _runner._run_trials(cfg, rt, study, lock, Tickets(n, shared=False), None,
                                lambda line: line.startswith("stopping") or mark("not trained:" in line, line), time.time())
        else:
            study.sampler = timed_sampler(optuna.samplers.RandomSampler(seed=next(seeds)), ledger)
            study.optimize(objective, n_trials=n, callbacks=[lambda study, trial: mark(False)])
        if prof and side == "runner":
            prof.disable()

    try:
        t = time.perf_counter()  # the first trials read the whole study into the table: timed apart
        run("runner", 2, warmup=True)
        first = time.perf_counter() - t
        out["runner"] = _side()
        stored = len(rt.table.entries), len(rt.table.front())  # the study as stored (and the 2 trials)
        for owner, attr, label in ((_runner, "sweep", "before: sweep of dead workers"),
                                   (_runner, "intensify", "before: intensify()"),
                                   (_runner, "_complete_line", "after: progress line"),
                                   (_trial, "replicates", "objective: replicates()"),
                                   (Table, "update", "CandidateTable.update, every call (inside others)"),
                                   (optuna.Study, "get_trials", "Study.get_trials, every read (inside others)")):
            ledger.wrap(owner, attr, label)
        for r in range(rounds):
            for side in SIDES:
                run(side, trials // rounds + (r < trials % rounds))
    finally:
        ledger.restore()
        _runner.process_sampler, _runner.make_objective = real_sampler, real_objective
        lock.close()
    if prof:
        _print_profile(prof, profile, "the runner's trials'")
    for o in out.values():
        n = len(o["trained"]) + len(o["reused"])
        o["parts"].pop("sampler", None)
        o["parts"] = {k: 1e3 * v / n for k, v in o["parts"].items()}
        for kind in ("trained", "reused"):  # ms per trial: wall less the sampler's, and CPU
            times = np.array(o[kind]).reshape(-1, 3)
            o[kind] = {"n": len(times), "ms": 1e3 * (times[:, 0] - times[:, 1]).mean() if len(times) else float("nan"),
                       "cpu_ms": 1e3 * times[:, 2].mean() if len(times) else float("nan"),
                       "sampler_ms": 1e3 * times[:, 1].mean() if len(times) else float("nan")}
    return {**out, "first_s": first, "last_line": lines[-1] if lines else "", "stored": stored,
            "after": (len(rt.table.entries), len(rt.table.front()))}


def _side() -> dict:
    return {"trained": [], "reused": [], "parts": defaultdict(float)}


def first_read(db: Path) -> tuple[float, float, int]:
    """(b) and (b'): the stored study's trials read on a storage opened now, as a new process reads them: by
    ``optuna.load_study`` and ``get_trials``, then by the prototype (which must read the same trials)."""
    t = time.perf_counter()
    trials = _bigstudy.optuna_load(db).get_trials(deepcopy=False)
    optuna_s = time.perf_counter() - t
    t = time.perf_counter()
    fast = _proposals.read_trials(_bigstudy.optuna_load(db))
    fast_s = time.perf_counter() - t
    if fast != trials:
        sys.exit("bookkeeping.py: _proposals.read_trials read other trials than Optuna: fix it before timing it")
    return optuna_s, fast_s, len(trials)


# The report's stages: (module, function, label); a name the report no longer has is left out (and said).
STAGES = [("kdnas.results._candidates", "Snapshot.of", "snapshot: read the trials, build the candidate table"),
          ("kdnas.results._candidates", "Snapshot.candidates", "candidates.csv rows"),
          ("kdnas.results._report", "trials_frame", "trials_frame"),
          ("kdnas.results._report", "hypervolume_series", "hypervolume_series"),
          ("kdnas.results._report", "means_history", "means_history (inside hypervolume_series)"),
          ("kdnas.results._report", "importances", "importances (PED-ANOVA)"),
          ("kdnas.results._report", "summary_markdown", "summary_markdown"),
          ("kdnas.results._report", "write_html", "write_html"),
          ("kdnas.results._plots", "plot_pareto", "plot_pareto"), ("kdnas.results._plots", "plot_effects", "plot_effects"),
          ("kdnas.results._plots", "plot_importances", "plot_importances"),
          ("kdnas.results._plots", "plot_hypervolume", "plot_hypervolume")]


def report(study_file: Path, profile: int, proposals: bool = False) -> dict:
    """(c): `kdnas report` on the study (``kdnas.results.report``: open, read, write), stage by stage; (c'): with
    ``proposals``: the trials read by the prototype of (b'). (The other two report proposals measured here, the
    test size read once and a history of means that skips moocore for dominated candidates, are kdnas's now.)"""
    import importlib

    import optuna

    from kdnas.results import report as kdnas_report

    real = (optuna.Study.get_trials,)

    def read(self, deepcopy: bool = True, states=None):
        if deepcopy or states is not None:
            return real[0](self, deepcopy, states)
        return _proposals.read_trials(self, real[0])

    if proposals:
        optuna.Study.get_trials = read
    ledger = Ledger()
    ledger.wrap(optuna.Study, "get_trials", "Study.get_trials (inside the snapshot)")
    missing = []
    for module, name, label in STAGES:
        owner, _, attr = name.rpartition(".")
        owner = getattr(importlib.import_module(module), owner) if owner else importlib.import_module(module)
        if not ledger.wrap(owner, attr, label, required=False):
            missing.append(f"{module}.{name}")
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    try:
        if prof:
            prof.enable()
        files = kdnas_report(study_file)
        if prof:
            prof.disable()
    finally:
        ledger.restore()
        optuna.Study.get_trials = real[0]
    total = time.perf_counter() - t
    parts = dict(ledger.seconds)
    if prof:
        _print_profile(prof, profile, "the report's")
    if missing:
        print(f"bookkeeping.py: not in the report any more, not timed: {', '.join(missing)}")
    return {"s": total, "parts": parts, "files": len(files), "profiled": bool(prof)}


def _print_profile(prof: cProfile.Profile, n: int, what: str) -> None:
    for key in ("cumulative", "tottime"):
        print(f"\n{what} {n} costliest functions by {key} time (cProfile, which slows the run):")
        pstats.Stats(prof, stream=sys.stdout).sort_stats(key).print_stats(n)


def _verdict(value: float, limit: float) -> str:
    return "met" if value < limit else "NOT MET"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--trials", type=int, default=5000, help="the synthetic study's size (default 5000)")
    ap.add_argument("--run", type=int, default=64, help="trials per side of (a) (default 64)")
    ap.add_argument("--rounds", type=int, default=8, help="alternating rounds the sides of (a) run in (default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", help="folder of the synthetic studies (default: kdnas-bookkeeping in the temp folder)")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder, removed)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="also print the N costliest functions of the runner's trials and of the report (cProfile: "
                         "its times are inflated)")
    ap.add_argument("--smoke", action="store_true", help="200 trials, 2 per side: a check in seconds")
    args = ap.parse_args(argv)
    if args.smoke:
        args.trials, args.run, args.rounds = 200, 2, 1
    if args.trials < 10 or args.run < 1 or not 1 <= args.rounds <= args.run:
        ap.error("--trials must be >= 10, --run >= 1 and --rounds between 1 and --run")
    warnings.simplefilter("ignore")  # Optuna's experimental-feature warnings
    cache = Path(args.cache) if args.cache else Path(tempfile.gettempdir()) / "kdnas-bookkeeping"
    with _studies.work_folder(args.keep, "kdnas-bookkeeping-") as folder:
        cfg = _bigstudy.config(folder)
        db = _bigstudy.build(cfg, args.trials, args.seed, cache)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        work = cfg.run_dir / "study.db"
        shutil.copy(db, work)
        read_s, fast_s, n_read = first_read(work)
        rep = report(cfg.path, args.profile)
        fast = report(cfg.path, 0, proposals=True)
        a = per_trial(cfg, args.run, args.rounds, args.seed, profile=args.profile)
    run, alone, batched = a["runner"]["trained"], a["optuna"]["trained"], a["optuna_batched"]["trained"]
    estimated = run["ms"] - (alone["ms"] - batched["ms"])
    print(f"\nsynthetic study: {n_read} trials (seed {args.seed}): {a['stored'][0]} candidates, front of {a['stored'][1]} "
          f"({a['after'][0]} and {a['after'][1]} after the trials of (a)); {_studies.machine()}")
    print(f"last progress line: {a['last_line']}")
    rows = [("(a) per trained trial: kdnas's bookkeeping, Optuna's storage" + (" [profiled]" if args.profile else ""),
             f"{run['ms']:.1f} ms", f"< {PER_TRIAL_MS:g} ms", _verdict(run["ms"], PER_TRIAL_MS))]
    rows += [(f"      {k}", f"{v:.1f} ms", "", "") for k, v in sorted(a["runner"]["parts"].items(), key=lambda kv: -kv[1])]
    rows += [("      Optuna alone: the same trials, no kdnas bookkeeping", f"{alone['ms']:.1f} ms", "", ""),
             ("      per answer from replicates (reused: fewer writes)", f"{a['runner']['reused']['ms']:.1f} ms"
              if a["runner"]["reused"]["n"] else "none", "", ""),
             ("      the first 2 trials (the table reads the study)", f"{a['first_s']:.2f} s", "", ""),
             ("      Optuna alone, attributes one statement a phase (proposal)", f"{batched['ms']:.1f} ms", "", ""),
             ("(a') (a) with that proposal (estimated: less the difference)", f"{estimated:.1f} ms",
              f"< {PER_TRIAL_MS:g} ms", _verdict(estimated, PER_TRIAL_MS)),
             ("(b) first read (load_study + get_trials)", f"{read_s:.2f} s", "", ""),
             ("(b') first read, plain SQL (proposal)", f"{fast_s:.2f} s", "", ""),
             ("(c) kdnas report (open, read, write)" + (" [profiled]" if rep["profiled"] else ""), f"{rep['s']:.2f} s",
              f"< {REPORT_S:g} s", _verdict(rep["s"], REPORT_S))]
    rows += [(f"      {k}", f"{v:.2f} s", "", "") for k, v in sorted(rep["parts"].items(), key=lambda kv: -kv[1])]
    rows += [("      the rest (open, csv, ...)", f"{rep['s'] - sum(v for k, v in rep['parts'].items() if 'inside' not in k):.2f} s",
              "", ""),
             ("(c') kdnas report with the proposals (read of b', ...)", f"{fast['s']:.2f} s", f"< {REPORT_S:g} s",
              _verdict(fast["s"], REPORT_S))]
    rows += [(f"      {k}", f"{v:.2f} s", "", "") for k, v in sorted(fast["parts"].items(), key=lambda kv: -kv[1])
             if v >= 0.1 * fast["s"]]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':>10}  {'target':>9}")
    for name, value, target, verdict in rows:
        print(f"{name:<{width}}  {value:>10}  {target:>9}  {verdict}")
    print(f"(a) and Optuna alone: wall time per trial, less the sampler's ({run['sampler_ms']:.2f} ms), over "
          f"{run['n']}, {alone['n']} and {batched['n']} trials that trained ({a['runner']['reused']['n']} more answered "
          f"from replicates) in {args.rounds} alternating rounds after 2; CPU time per trial {run['cpu_ms']:.1f}, "
          f"{alone['cpu_ms']:.1f} and {batched['cpu_ms']:.1f} ms. The parts of (a) are per trial of either kind; a row "
          f"marked 'inside' is time also counted in other rows (on_trial's read and table update are in no other row).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
