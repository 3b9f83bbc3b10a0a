"""Benchmark (c): where a study's wall time goes: training, measurement, everything else.

The claim it guards: **everything else is at most 5 %** of a 40-trial ``studies/mnist5k.yaml`` study run as
shipped (TPE, ``threads: 2``, early stopping on, 0-1 assistant, the report at the end). Three shares of the
command's wall time, imports included:

- **training**: ``kdnas.train.fit`` wherever the study calls it (the teacher, the assistants, the students),
  the early-stopping evaluations at its checkpoints included;
- **measurement**: what a trial measures of what it trained, its result: the accuracy of the trained networks
  on val and test, and their latency (measured in this process, or waited for from kdnas's latency child);
- **everything else**: imports, data, the logit tables, sampling, storage, counting, the trial loop, the
  report, ...: the machinery. It is listed by category to show where it goes.

Runs one real `kdnas search` command in this process (``kdnas.cli.main``) on a copy of the study in a
temporary folder. It starts cold, as a new study does: the teacher is trained and its logit table computed in
the measured run. Each category is timed by wrapping, in this process only, the functions a study calls
under the names it calls them by (exclusive time: a call inside another is charged to the inner one; anything
inside a fit is training). No library code is changed. A wrapped name that kdnas no longer has stops the
script with an error, so that the shares never quietly move into "other".

    PYTHONPATH=. python benchmarks/overhead.py                 # the claim: 40 trials, as shipped
    PYTHONPATH=. python benchmarks/overhead.py --trials 12     # shorter; the fixed costs weigh more
    PYTHONPATH=. python benchmarks/overhead.py --smoke         # a check in seconds; figures mean nothing
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

CLAIM = 5.0  # per cent of the wall time: everything else
FIT = "training"
MEASUREMENT = "measurement"
ACCURACY = f"{MEASUREMENT}: accuracy of the trained networks (val, test)"
LATENCY = f"{MEASUREMENT}: latency (measured here, or waited for from the child)"
IMPORTS = "imports (torch, optuna, kdnas, ...)"
OTHER = "other (Optuna ask/tell, the trial loop, the cli, ...)"
# torch._dynamo (seconds) is imported by the first torch.optim optimizer a process builds, or earlier by the first
# network built on the meta device: imported here, it is charged to imports rather than to whatever came first.
COMMAND_IMPORTS = ("kdnas.cli", "kdnas.study._runner", "kdnas.results._report", "torch._dynamo")


class Ledger:
    """Exclusive wall time per category of wrapped calls; a call inside a fit is training."""

    def __init__(self) -> None:
        self.excl: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.fit_incl: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = 0.0

    def _charge(self, now: float) -> None:
        if self.stack:
            self.excl[self.stack[-1]] += now - self.mark
        self.mark = now

    def wrap(self, owner, attr: str, category: str) -> None:
        """Replace ``owner.attr`` (a module, given by name, or a class) by a timed version."""
        if isinstance(owner, str):
            owner = importlib.import_module(owner)
        fn = getattr(owner, attr, None)
        if fn is None:
            sys.exit(f"overhead.py: {getattr(owner, '__name__', owner)}.{attr} is gone from kdnas; "
                     "update instrument() to the name the study calls it by now")
        ledger = self
        is_fit = category.startswith(FIT)

        def timed(*a, **k):
            inside_fit = any(c.startswith(FIT) for c in ledger.stack)
            cat = category if is_fit or not inside_fit else f"{FIT}: inside fit ({category})"
            ledger._charge(time.perf_counter())
            ledger.stack.append(cat)
            ledger.calls[cat] += 1
            t0 = ledger.mark
            try:
                return fn(*a, **k)
            finally:
                now = time.perf_counter()
                ledger._charge(now)
                ledger.stack.pop()
                if is_fit:
                    ledger.fit_incl[category] += now - t0

        timed.__wrapped__ = fn
        setattr(owner, attr, timed)


def instrument(ledger: Ledger) -> None:
    """Wrap what a `kdnas search` command calls, by the names it calls them under."""
    w = ledger.wrap
    w("kdnas.study._trial", "fit", f"{FIT}: students")
    w("kdnas.distill._chain", "fit", f"{FIT}: assistants")
    w("kdnas.study._teacher", "fit", f"{FIT}: teacher")
    for mod in ("kdnas.study._trial", "kdnas.study._teacher", "kdnas.distill._chain"):
        w(mod, "accuracy", ACCURACY)
    wrap_latency(ledger)
    for mod in ("kdnas.study._teachers", "kdnas.distill._chain"):
        w(mod, "teacher_logits", "logit tables of the teacher and assistants (computed or loaded)")
    w("kdnas.study._runtime", "load_split", "data loading")
    w("kdnas.study._runner", "check_storage", "storage: open and check")
    w("kdnas.study._runner", "open_study", "storage: open and check")
    w("kdnas.study._runtime", "count", "counting params and MACs")
    w("kdnas.study._trial", "screen", "screening candidates")
    w("kdnas.study._runner", "_complete_line", "progress lines (candidate table's front per trial)")
    w("kdnas.study._runner", "intensify", "candidate table: intensification (reads the study)")
    w("kdnas.study._trial", "replicates", "candidate table: replicate count (reads the study)")
    w("kdnas.study._runner", "sweep", "liveness sweep of dead workers' trials")
    w("kdnas.train._early_stop", "stop_reason", "early-stopping rule (reads peers from storage)")
    for mod in ("kdnas.study._trial", "kdnas.distill._chain", "kdnas.study._teacher"):
        w(mod, "build", "building networks")
    w(importlib.import_module("kdnas.config._space").SearchSpace, "sample", "sampling (sampler + Optuna storage of the params)")
    art = importlib.import_module("kdnas.core._artifacts").ArtifactStore
    for attr in ("put_content", "put_state_dict", "get_state_dict", "put_json", "get_json"):
        w(art, attr, "artifact store: weights to/from disk")
    import optuna

    for attr in ("set_user_attr", "set_constraint"):
        w(optuna.trial.Trial, attr, "Optuna storage: user attributes and constraints")
    w("kdnas.results", "write_report", "report (csv, plots, html)")
    w("kdnas.study._trial", "run_trial", "trial: rest (method setup, seeds, ...)")
    w("kdnas.study._runner", "prepare", "prepare: rest")
    w("kdnas.study", "run_search", "search: rest (Optuna ask/tell, trial loop, sampler start-up)")


def wrap_latency(ledger: Ledger) -> None:
    """A study gets each latency figure as ``LatencyCache.request(...)``, a pending figure that it calls when it
    needs the figure (measured in this process then, or waited for from the child). Both are timed; the pending
    figure's class is wrapped when the first one comes back (kdnas does not export it)."""
    from kdnas.costs import LatencyCache

    ledger.wrap(LatencyCache, "request", LATENCY)
    request = LatencyCache.request

    def request_and_wrap(self, *a, **k):
        pending = request(self, *a, **k)
        if not hasattr(type(pending).__call__, "__wrapped__"):
            ledger.wrap(type(pending), "__call__", LATENCY)
        return pending

    LatencyCache.request = request_and_wrap


def start() -> tuple[Ledger, float]:
    """Import what the command imports anyway, then a ledger with every wrapper in place, its clock running in
    ``OTHER``; returns it and the import seconds."""
    t0 = time.perf_counter()
    for mod in COMMAND_IMPORTS:
        importlib.import_module(mod)
    imports = time.perf_counter() - t0
    ledger = Ledger()
    instrument(ledger)
    ledger.mark = time.perf_counter()
    ledger.stack.append(OTHER)
    return ledger, imports


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="mnist5k.yaml", help="a shipped study (in studies/) or a path")
    ap.add_argument("--trials", type=int, default=40, help="trials of the command (the shipped mnist5k has 40)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (study `threads`; default: as the study file says, 2 for mnist5k)")
    ap.add_argument("--smoke", action="store_true", help="a check in seconds (tests/test_benchmarks.py runs it): "
                    "2 trials on the tiny study of _studies.SMOKE; figures mean nothing")
    ap.add_argument("--keep", help="keep the run folder here (default: a temporary folder, removed)")
    args = ap.parse_args()
    if args.smoke:
        args.trials = 2
    if args.keep:
        args.keep = str(Path(args.keep).resolve())  # the command runs in it: a relative path would move
    with _studies.work_folder(args.keep, "kdnas-overhead-") as tmp:
        overrides: dict = {"search": {"trials": args.trials}}
        if args.threads is not None:
            overrides["threads"] = args.threads
        study = _studies.derive(args.study, tmp, overrides, smoke=args.smoke)
        threads = "as shipped" if args.threads is None else args.threads
        print(f"study {args.study} -> {study}: {args.trials} trials, threads {threads}, otherwise as shipped"
              f"{' (smoke: tiny study)' if args.smoke else ''}; {_studies.machine()}", flush=True)
        prev = os.getcwd()
        os.chdir(tmp)
        try:
            run(args, study)
        finally:
            os.chdir(prev)


def run(args, study: Path) -> None:
    """The measured command, in the current folder (the temporary one)."""
    ledger, imports = start()
    from kdnas.cli import main as kdnas_main

    t1 = ledger.mark = time.perf_counter()  # the setup above is not the command's
    rc = kdnas_main(["search", str(study)])
    end = time.perf_counter()
    ledger._charge(end)
    if rc != 0:
        sys.exit(f"kdnas search exited with {rc}")
    wall = imports + end - t1

    trials = _studies.trials(Path.cwd(), study)
    states: dict[str, int] = defaultdict(int)
    for t in trials:
        states[t.state.name] += 1
    print(f"\n{len(trials)} trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
    # A shorter wait for latency must not come from figures left unconfirmed (latency_stable false).
    measured = [t for t in trials if t.state.name == "COMPLETE" and "latency_stable" in t.user_attrs]
    unconfirmed = sum(not t.user_attrs["latency_stable"] for t in measured)
    print(f"latency figures of complete trials: {len(measured)}, unconfirmed {unconfirmed}")

    rows = [(IMPORTS, imports, 1)] + [(k, v, ledger.calls[k]) for k, v in ledger.excl.items()]
    groups = {
        "training": ([(k, v, ledger.calls[k]) for k, v in ledger.fit_incl.items()], sum(ledger.fit_incl.values())),
        "measurement": ([r for r in rows if r[0].startswith(MEASUREMENT)], 0.0),
        "everything else": ([r for r in rows if not r[0].startswith((FIT, MEASUREMENT))], 0.0),
    }
    shares = {}
    print(f"\nwhere the wall time went ({wall:.1f}s, imports included; exclusive seconds):")
    for title, (group, total) in groups.items():
        total = total or sum(r[1] for r in group)
        shares[title] = 100 * total / wall
        print(f"  {title}: {total:.1f}s, {shares[title]:.1f}%")
        for name, sec, calls in sorted(group, key=lambda r: -r[1]):
            print(f"    {name:66s} {sec:8.2f}s {100 * sec / wall:6.2f}%  ({calls} calls)")
    print("\nshares: " + ", ".join(f"{k} {v:.1f}%" for k, v in shares.items()))
    verdict = "smoke run, figures mean nothing" if args.smoke else \
        "met" if shares["everything else"] <= CLAIM else "NOT MET"
    print(f"claim: everything else <= {CLAIM:g}% of a 40-trial mnist5k study: {verdict}")


if __name__ == "__main__":
    main()
