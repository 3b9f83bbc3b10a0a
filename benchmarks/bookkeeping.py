"""Benchmark: a study's bookkeeping stays cheap as it grows (issue #25, item 8).

The claim it guards: on a 5,000-trial study, **the per-trial bookkeeping of a running search stays under
50 ms** (everything kdnas and Optuna do around a trial except the sampler and the trial's own work) and
**`kdnas report` takes under 10 s**.

The study is synthetic but shaped like a real one (benchmarks/_bigstudy.py: mnist5k's study file and search
space, the attributes kdnas records, replicates from intensification, a few reused, pruned and failed trials,
a front of about 20 candidates). It is written once per size and seed and cached (``--cache``).

The figures, one after the other (never two timings at once):

a. **per trial**: real trials through the runner (``kdnas.study._runner._run_trials``: its ``on_trial``,
   ``before_trial`` with the sweep of dead workers and intensification, Optuna's storage writes) on a copy of
   the study, with RandomSampler and an objective that samples the real space and records the attributes a
   trial records (``replicates()`` included) without training; the sampler's own time is taken out. Beside
   it, in alternating rounds: **Optuna alone** (the same objective and writes, no kdnas bookkeeping: what a
   trial costs whatever kdnas does) and **a'**, the runner with each phase's attributes written in one
   statement (a proposal: benchmarks/_proposals.py ``set_user_attrs``);
b. **first read**: ``optuna.load_study`` and ``get_trials`` of the stored study, as a new process does, and
   **b'** the same trials read with plain SQL (a proposal: ``read_trials``, checked equal to Optuna's);
c. **report**: ``kdnas report`` (``kdnas.results.report``: open, read, write), stage by stage, and **c'** the
   same with the read of b'.

    PYTHONPATH=. python benchmarks/bookkeeping.py                 # the claim: 5,000 trials
    PYTHONPATH=. python benchmarks/bookkeeping.py --profile 25    # and the report's 25 costliest functions
    PYTHONPATH=. python benchmarks/bookkeeping.py --smoke         # 200 trials, seconds; figures mean nothing
"""

from __future__ import annotations

import argparse
import cProfile
import functools
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
from _bigstudy import N_VAL, World  # noqa: E402

PER_TRIAL_MS = 50.0  # the claims
REPORT_S = 10.0


class Ledger:
    """Inclusive wall time and calls of named functions, wrapped in this process only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.undo: list = []

    def wrap(self, owner, attr: str, label: str | None = None, required: bool = True) -> None:
        fn = getattr(owner, attr, None)
        if fn is None:
            if required:
                sys.exit(f"bookkeeping.py: {getattr(owner, '__name__', owner)}.{attr} is gone; update the benchmark")
            return
        label = label or attr

        @functools.wraps(fn)
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[label] += time.perf_counter() - t
                self.calls[label] += 1

        setattr(owner, attr, timed)
        self.undo.append((owner, attr, fn))

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


def _objective(cfg, rt, lock, batched: bool, bookkeeping: bool):
    """What a trial records, without training: the real space, the attributes of kdnas/study/_trial.py's phases
    (one by one, as kdnas writes them, or ``batched``: one statement per phase) and, with ``bookkeeping``,
    ``replicates()`` (it reads the study); without, the two attributes it writes."""
    import optuna

    from kdnas.candidates import KEY, candidate_key
    from kdnas.study import _trial
    from kdnas.study._liveness import mark

    world = World(1)

    def put(trial: optuna.Trial, attrs: dict) -> None:
        if batched:
            _proposals.set_user_attrs(trial, attrs)
        else:
            for key, value in attrs.items():
                trial.set_user_attr(key, value)

    def objective(trial: optuna.Trial):
        mark(trial, lock)
        cand = cfg.space.sample(trial)
        arch = world.arch(cand.to_dict()["student"])
        for key, value in {"max_params": arch["params"] / 1e5 - 1, "max_macs": 0.0, "chain_order": 0.0}.items():
            trial.set_constraint(key, value)
        put(trial, {"candidate": cand.to_dict(), "student": cand.student.label(), "method": cand.method.label(),
                    "chain": cand.chain.label(), "chain_length": len(cand.chain.assistants), "params": arch["params"],
                    "macs": arch["macs"]})
        if bookkeeping:
            full = _trial.replicates(rt, trial, cand)
            if full is not None:
                # replicates() returns the entry without bringing its estimate up to date: None when the table
                # computed none yet (a resumed study's first trial), an AssertionError in answer_from_replicates.
                rt.table.estimates()
                return _trial.answer_from_replicates(rt, trial, _trial.Sampled(cand, None, None, 0, reuse=full))
        else:
            trial.set_user_attr(KEY, candidate_key(cand.to_dict(), rt.recipe))
            trial.set_user_attr("replicate", 1)
        val = min(1.0, world.accuracy(cand.to_dict()) + 0.004 * np.random.standard_normal())
        put(trial, {"seed": trial.number, "latency_ms": arch["latency_ms"], "latency_iqr_ms": 0.01,
                    "latency_median_ms": arch["latency_ms"], "latency_stable": True, "teacher": "8f7dd11609355520",
                    "assistants": [], "method_hyperparameters": {}})
        put(trial, {"weights": f"{trial.number:016x}", "val_accuracy": val, "test_accuracy": val,
                    "loss_history": [1.0, 0.5, 0.3, 0.2], "train_seconds": 8.0, "trial_seconds": 9.0, "score": val})
        return val, arch["params"], arch["latency_ms"]

    return objective


# (a)'s sides: label -> (runner, batched attribute writes)
SIDES = {"runner": (True, False), "optuna": (False, False), "batched": (True, True), "optuna_batched": (False, True)}


def per_trial(cfg, trials: int, rounds: int, profile: int = 0) -> dict:
    """(a): trials on the study in ``cfg``'s storage, ``trials`` per side in ``rounds`` alternating rounds."""
    from types import SimpleNamespace

    import optuna

    from kdnas.candidates import CandidateTable
    from kdnas.candidates._table import CandidateTable as Table
    from kdnas.study import _runner, _trial
    from kdnas.study._liveness import WorkerLock
    from kdnas.study._resume import recipe
    from kdnas.study._workers import Tickets

    rt = SimpleNamespace(cfg=cfg, recipe=recipe(cfg)["study"], table=CandidateTable(N_VAL, cfg.objectives,
                                                                                    recipe(cfg)["study"]))
    ledger = Ledger()
    study = _runner.open_study(cfg, create=True)  # cfg's storage: the copy of the study
    lock = WorkerLock(cfg.run_dir)
    real_sampler, real_objective = _runner.process_sampler, _runner.make_objective
    _runner.process_sampler = lambda c: timed_sampler(real_sampler(c), ledger)
    out = {side: _side() for side in SIDES}
    lines: list[str] = []
    prof = cProfile.Profile() if profile else None

    def run(side: str, n: int, warmup: bool = False) -> None:
        through_runner, batched = SIDES[side]
        objective = _objective(cfg, rt, lock, batched, bookkeeping=through_runner)
        o = out[side]
        ledger.seconds = o["parts"]
        prev = [time.perf_counter(), ledger.seconds["sampler"], time.process_time()]

        def mark(reused: bool, line: str = "") -> None:
            """One trial ended: the wall, sampler and CPU seconds since the one before ended (or the run began)."""
            now = [time.perf_counter(), ledger.seconds["sampler"], time.process_time()]
            o["reused" if reused else "trained"].append([x - y for x, y in zip(now, prev)])
            prev[:] = now
            lines.append(line)

        if prof and side == "runner" and not warmup:
            prof.enable()
        if through_runner:
            _runner.make_objective = lambda rt, lock: objective
            _runner._run_trials(cfg, rt, study, lock, Tickets(n, shared=False), None,
                                lambda line: line.startswith("stopping") or mark("not trained:" in line, line), time.time())
        else:
            study.sampler = timed_sampler(optuna.samplers.RandomSampler(seed=len(lines)), ledger)
            study.optimize(objective, n_trials=n, callbacks=[lambda study, trial: mark(False)])
        if prof and side == "runner":
            prof.disable()

    try:
        t = time.perf_counter()  # the first trials read the whole study into the table: timed apart
        run("runner", 2, warmup=True)
        first = time.perf_counter() - t
        out["runner"] = _side()
        for owner, attr, label in ((_runner, "sweep", "before: sweep of dead workers"),
                                   (_runner, "intensify", "before: intensify()"),
                                   (_runner, "_complete_line", "after: progress line"),
                                   (_trial, "replicates", "objective: replicates()"),
                                   (Table, "update", "CandidateTable.update (inside the above)"),
                                   (optuna.Study, "get_trials", "Study.get_trials (inside the above)")):
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
    return {**out, "first_s": first, "last_line": lines[-1] if lines else "", "candidates": len(rt.table.entries),
            "front": len(rt.table.front())}


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


# The report's stages: (module, function) as write_report calls them; the optional ones may not exist (yet).
STAGES = [("kdnas.results._report", "trials_frame", True), ("kdnas.results._report", "hypervolume_series", True),
          ("kdnas.results._report", "hypervolume_history", False), ("kdnas.results._report", "importances", True),
          ("kdnas.results._report", "summary_markdown", True), ("kdnas.results._report", "write_html", True),
          ("kdnas.results._report", "candidates_of", False), ("kdnas.results._report", "candidate_rows", False),
          ("kdnas.results._plots", "plot_pareto", True), ("kdnas.results._plots", "plot_effects", True),
          ("kdnas.results._plots", "plot_importances", True), ("kdnas.results._plots", "plot_hypervolume", True),
          ("kdnas.results._plots", "plot_candidates", False)]


def report(study_file: Path, profile: int, fast_read: bool = False) -> dict:
    """(c): `kdnas report` on the study (``kdnas.results.report``: open, read, write), stage by stage; (c'): with
    ``fast_read``, the study's trials read by the prototype of (b')."""
    import importlib

    import optuna

    from kdnas.results import report as kdnas_report

    real = optuna.Study.get_trials

    def read(self, deepcopy: bool = True, states=None):
        return real(self, deepcopy, states) if deepcopy or states is not None else _proposals.read_trials(self, real)

    if fast_read:
        optuna.Study.get_trials = read
    ledger = Ledger()
    ledger.wrap(optuna.Study, "get_trials", "open: read the trials (get_trials)")
    for module, attr, required in STAGES:
        ledger.wrap(importlib.import_module(module), attr, required=required)
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
        optuna.Study.get_trials = real
    total = time.perf_counter() - t
    if prof:
        _print_profile(prof, profile, "the report's")
    return {"s": total, "parts": dict(ledger.seconds), "files": len(files), "profiled": bool(prof)}


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
    ap.add_argument("--run", type=int, default=48, help="trials per side of (a) (default 48)")
    ap.add_argument("--rounds", type=int, default=6, help="alternating rounds the sides of (a) run in (default 6)")
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
        fast = report(cfg.path, 0, fast_read=True)
        a = per_trial(cfg, args.run, args.rounds, profile=args.profile)
    run, alone, batched = a["runner"]["trained"], a["optuna"]["trained"], a["batched"]["trained"]
    print(f"\nsynthetic study: {n_read} trials ({args.trials} stored, seed {args.seed}); {a['candidates']} candidates, "
          f"front of {a['front']}; {_studies.machine()}")
    print(f"last progress line: {a['last_line']}")
    rows = [("(a) per trained trial: kdnas's bookkeeping, Optuna's storage" + (" [profiled]" if args.profile else ""),
             f"{run['ms']:.1f} ms", f"< {PER_TRIAL_MS:g} ms", _verdict(run["ms"], PER_TRIAL_MS))]
    rows += [(f"      {k}", f"{v:.1f} ms", "", "") for k, v in sorted(a["runner"]["parts"].items(), key=lambda kv: -kv[1])]
    rows += [("      Optuna alone: the same trials, no kdnas bookkeeping", f"{alone['ms']:.1f} ms", "", ""),
             ("      per answer from replicates (reused: fewer writes)", f"{a['runner']['reused']['ms']:.1f} ms"
              if a["runner"]["reused"]["n"] else "none", "", ""),
             ("      the first 2 trials (the table reads the study)", f"{a['first_s']:.2f} s", "", ""),
             ("(a') the same, attributes one statement a phase (proposal)", f"{batched['ms']:.1f} ms",
              f"< {PER_TRIAL_MS:g} ms", _verdict(batched["ms"], PER_TRIAL_MS)),
             ("      Optuna alone, attributes one statement a phase", f"{a['optuna_batched']['trained']['ms']:.1f} ms",
              "", ""),
             ("(b) first read (load_study + get_trials)", f"{read_s:.2f} s", "", ""),
             ("(b') first read, plain SQL (proposal)", f"{fast_s:.2f} s", "", ""),
             ("(c) kdnas report (open, read, write)" + (" [profiled]" if rep["profiled"] else ""), f"{rep['s']:.2f} s",
              f"< {REPORT_S:g} s", _verdict(rep["s"], REPORT_S))]
    nested = {"hypervolume_history"}  # inside hypervolume_series
    rows += [(f"      {k}" + (" (inside the above)" if k in nested else ""), f"{v:.2f} s", "", "")
             for k, v in sorted(rep["parts"].items(), key=lambda kv: -kv[1])]
    rows += [("      the rest (open, csv, ...)", f"{rep['s'] - sum(v for k, v in rep['parts'].items() if k not in nested):.2f} s",
              "", ""),
             ("(c') kdnas report, the read of (b')", f"{fast['s']:.2f} s", f"< {REPORT_S:g} s", _verdict(fast["s"], REPORT_S))]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'figure':<{width}}  {'measured':>10}  {'target':>9}")
    for name, value, target, verdict in rows:
        print(f"{name:<{width}}  {value:>10}  {target:>9}  {verdict}")
    print(f"(a), (a') and Optuna alone: wall time per trial, less the sampler's ({run['sampler_ms']:.2f} ms), over "
          f"{run['n']}, {batched['n']} and {alone['n']} trials that trained ({a['runner']['reused']['n']} and "
          f"{a['batched']['reused']['n']} more answered from replicates) in {args.rounds} alternating rounds after 2; "
          f"CPU time per trial {run['cpu_ms']:.1f}, {batched['cpu_ms']:.1f} and {alone['cpu_ms']:.1f} ms. The parts of "
          f"(a) are per trial of either kind; rows marked 'inside the above' are parts of the rows above them.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
