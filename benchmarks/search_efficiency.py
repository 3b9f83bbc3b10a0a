"""Search efficiency: hypervolume after n trials, kdnas's TPE against random sampling, on a fully trained space.

Every candidate of a small, enumerable space is trained once through kdnas's own trial code (the
quickstart's data split, teacher and brief recipe, early stopping off; each candidate's training seed is
kdnas's trial seed for its index in the enumeration), and its validation accuracy, parameters and latency
are cached in ``runs/<name>/candidates.json``: a rerun trains nothing it already has. Then each sampler runs
many times (one sampler seed each) in an in-memory Optuna study against a lookup objective: the sampler
proposes a candidate through the space's real ``sample`` (the same Optuna parameters a search sees), and
the objective returns the candidate's stored figures. A proposal repeated within a run costs a trial and
adds nothing, as a repeated candidate does in a real search (kdnas does not skip repeats). The hypervolume
of trials 0..n-1 is computed by the report's own code (``kdnas.results._report.hypervolume_series``): each objective
normalised by the teacher's costs, reference point 1.

    PYTHONPATH=. python benchmarks/search_efficiency.py            # 84 candidates: ~11 min the first time (2-core CPU)
    PYTHONPATH=. python benchmarks/search_efficiency.py --quick    # 12 candidates, 2 epochs: ~1 min
    PYTHONPATH=. python benchmarks/search_efficiency.py --smoke    # 2 candidates, 1 epoch: a check in seconds

Samplers: ``tpe`` and ``random`` exactly as ``kdnas.study.make_sampler`` builds them (the study seed
replaced by the run's seed), ``nsga2`` (Optuna's NSGA-II with a population of 10: the default 50 would be
pure random sampling for most of these budgets) and ``shuffled`` (the candidates in a random order without
repeats: random sampling that never proposes a candidate twice). Writes the figure (mean and spread of each
sampler's hypervolume against n), ``runs/<name>/curves.json`` (every run's curve), and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import optuna

from kdnas.config import load_study
from kdnas.core import TrialFailure
from kdnas.costs import DIRECTIONS, METRIC_NAMES, hypervolume, normalise, pareto_mask
from kdnas.results import hypervolume_series, trials_frame
from kdnas.study import make_objective, make_sampler, prepare

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _studies  # noqa: E402

# The space: resnet_small.yaml's student domains (depth categorical, width on its 0.125 grid), and a 2 x 2
# grid of Hinton KD hyperparameters where resnet_small.yaml has continuous ranges. 3 x 7 x 2 x 2 = 84.
SPACE = """\
students:
  resnet_cifar:
    depth: {type: categorical, choices: [8, 14, 20]}
    width: {type: float, low: 0.25, high: 1.0, step: 0.125}
methods:
  hinton:
    temperature: {type: categorical, choices: [1.0, 4.0]}
    alpha: {type: categorical, choices: [0.1, 0.9]}
"""
# --quick: 2 x 3 x 1 x 2 = 12 candidates.
QUICK_SPACE = """\
students:
  resnet_cifar:
    depth: {type: categorical, choices: [8, 14]}
    width: {type: float, low: 0.25, high: 0.75, step: 0.25}
methods:
  hinton:
    temperature: 4.0
    alpha: {type: categorical, choices: [0.1, 0.9]}
"""
# --smoke: 2 candidates, the study's recipe cut to one epoch (tests/test_benchmarks.py runs it).
SMOKE_SPACE = """\
students:
  resnet_cifar:
    depth: 8
    width: {type: float, low: 0.25, high: 0.5, step: 0.25}
methods:
  hinton:
    temperature: 4.0
    alpha: 0.9
"""
STUDY = _studies.STUDIES / "quickstart.yaml"  # data split, teacher, student recipe, objectives, latency setting
SAMPLERS = ("tpe", "random", "nsga2", "shuffled")
EXTRA = ("tpe_multivariate", "tpe_startup5")  # variants of TPE that kdnas does not use, for --samplers
# tpe, random and nsga2 share their first 10 trials (TPE's and NSGA-II's start-up samples are random ones with
# the same seed): line styles keep the overlapping curves apart.
STYLES = {"tpe": ("tab:blue", "-"), "random": ("tab:orange", "--"), "nsga2": ("tab:green", "-."),
          "shuffled": ("tab:gray", ":"), "tpe_multivariate": ("tab:purple", "-"), "tpe_startup5": ("tab:red", "-")}


def domain_values(domain) -> list:
    """Every value of an enumerable domain (fixed, categorical, int or float with a step)."""
    if domain.kind == "fixed":
        return [domain.value]
    if domain.kind == "categorical":
        return list(domain.choices)
    if domain.step is None or domain.log:
        raise SystemExit(f"cannot enumerate a {domain.describe()} domain: give it a step or make it categorical")
    k = int(round((domain.high - domain.low) / domain.step))
    vals = [domain.low + i * domain.step for i in range(k + 1)]
    return [int(v) for v in vals] if domain.kind == "int" else vals


def enumerate_space(space) -> list[dict]:
    """Every candidate as Optuna parameters (one family, one method, no chain: what this benchmark needs)."""
    if len(space.families) != 1 or len(space.methods) != 1 or space.chain.max_assistants:
        raise SystemExit("the benchmark space must have one student family, one method and no chain")
    (family, fdoms), = space.families.items()
    (method, mdoms), = space.methods.items()
    axes = {f"student.{family}.{p}": d for p, d in fdoms.items()}
    axes.update({f"method.{method}.{p}": d for p, d in mdoms.items()})
    names = [n for n, d in axes.items() if d.kind != "fixed"]  # fixed values are not Optuna parameters
    return [dict(zip(names, combo)) for combo in itertools.product(*(domain_values(axes[n]) for n in names))]


def key_of(candidate) -> str:
    return json.dumps(candidate.to_dict(), sort_keys=True)


def train_all(cfg, grid: list[dict], cache_path: Path) -> tuple[dict, dict]:
    """Train (or read from the cache) every candidate; returns (teacher figures, key -> candidate figures)."""
    rt = prepare(cfg)
    ti = rt.teacher_info
    setup = {"teacher": rt.teacher.key, "split": rt.split.fingerprint, "seed": cfg.seed,
             "student_train": json.loads(json.dumps(dataclasses.asdict(cfg.student.train), default=str)),
             "latency": dataclasses.asdict(cfg.costs.latency), "counter": cfg.costs.counter}
    cache = {}
    if cache_path.exists():
        cache = json.loads(cache_path.read_text())
        if cache.get("setup") != setup:
            print(f"{cache_path}: trained under another setup (teacher, split, recipe or seed changed); retraining")
            cache = {}
    teacher = {k: ti[k] for k in ("params", "macs", "latency_ms", "val_accuracy", "test_accuracy")}
    cache.update(setup=setup, teacher=teacher)
    done = cache.setdefault("candidates", {})
    objective = make_objective(rt)
    todo = [(i, p) for i, p in enumerate(grid)
            if key_of(cfg.space.sample(optuna.trial.FixedTrial(p))) not in done]
    print(f"teacher {cfg.teacher_spec.label()}: {ti['params']:,} params, {ti['latency_ms']:.3f} ms, val "
          f"{ti['val_accuracy']:.1%}; {len(grid)} candidates, {len(grid) - len(todo)} cached, {len(todo)} to train",
          flush=True)
    t0 = time.perf_counter()
    for j, (i, params) in enumerate(todo):
        # The candidate's index is its trial number: kdnas's trial seed for it, the same on every rerun.
        trial = optuna.trial.FixedTrial(params, number=i)
        try:
            objective(trial)
            ua = trial.user_attrs
            rec = {k: ua[k] for k in ("val_accuracy", "test_accuracy", "params", "macs", "latency_ms",
                                      "latency_stable", "seed", "train_seconds", "trial_seconds")}
        except (TrialFailure, optuna.TrialPruned) as err:
            rec = {"failed": str(err)}
        rec.update(index=i, student=trial.user_attrs.get("student"), method=trial.user_attrs.get("method"))
        done[key_of(cfg.space.sample(optuna.trial.FixedTrial(params)))] = rec
        cache_path.write_text(json.dumps(cache, indent=1))  # after each: an interrupted run loses one candidate
        what = rec.get("failed") or (f"val {rec['val_accuracy']:6.1%}  {rec['params']:>7,} params  "
                                     f"{rec['latency_ms']:6.3f} ms  ({rec['trial_seconds']:.1f}s)")
        print(f"[{j + 1:>3}/{len(todo)} {time.perf_counter() - t0:6.1f}s] {rec['student']} {rec['method']}: {what}",
              flush=True)
    cache_path.write_text(json.dumps(cache, indent=1))
    return teacher, done


def make(name: str, cfg, seed: int) -> optuna.samplers.BaseSampler:
    if name in ("tpe", "random"):
        # kdnas's own construction; only the seed and the sampler name differ from the study file.
        return make_sampler(dataclasses.replace(cfg, seed=seed, search=dataclasses.replace(cfg.search, sampler=name)), 0)
    if name == "tpe_multivariate":  # not kdnas's default: a joint density over the parameters
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True)
    if name == "tpe_startup5":  # not kdnas's default: 5 random start-up trials instead of 10
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, n_startup_trials=5)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=10)
    if name == "shuffled":
        return optuna.samplers.RandomSampler(seed=seed)  # never consulted: every trial is enqueued
    raise SystemExit(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS + EXTRA)}")


def run_sampler(name: str, seed: int, cfg, grid: list[dict], lookup: dict, teacher: dict,
                n_trials: int) -> tuple[np.ndarray, np.ndarray]:
    """One run: (hypervolume of trials 0..n-1, distinct candidates among them) for n = 1..n_trials."""
    objectives = list(cfg.objectives)
    study = optuna.create_study(directions=[DIRECTIONS[o] for o in objectives], sampler=make(name, cfg, seed))
    study.set_user_attr("objectives", objectives)
    study.set_user_attr("teacher", teacher)
    if name == "shuffled":
        for i in np.random.default_rng(seed).permutation(len(grid))[:n_trials]:
            study.enqueue_trial(grid[i])
    seen: list[str] = []

    def objective(trial: optuna.Trial) -> tuple[float, ...]:
        key = key_of(cfg.space.sample(trial))
        seen.append(key)
        rec = lookup[key]
        if "failed" in rec:
            raise TrialFailure(rec["failed"])
        for o in objectives:
            trial.set_user_attr(METRIC_NAMES[o], rec[METRIC_NAMES[o]])
        return tuple(float(rec[METRIC_NAMES[o]]) for o in objectives)

    study.optimize(objective, n_trials=n_trials, catch=(TrialFailure,))
    hv = hypervolume_series(study, trials_frame(study))
    distinct = np.array([len(set(seen[: n + 1])) for n in range(len(seen))])
    return hv.to_numpy(float), distinct


def trials_to_reach(curve: np.ndarray, target: float) -> int | None:
    """Smallest n (1-based) with ``curve[n-1] >= target`` (up to rounding), or None."""
    hit = np.nonzero(curve >= target - 1e-12)[0]
    return int(hit[0]) + 1 if len(hit) else None


FLOOR = 1e-5  # a gap of 0 (the whole front found) is drawn here on the log axis


def plot(curves: dict, full_hv: float, n_grid: int, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.arange(1, n_grid + 1)
    fig, (ax, gap) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, runs in curves.items():
        hv = np.array(runs["hv"])
        mean, std = hv.mean(axis=0), hv.std(axis=0)
        c, ls = STYLES.get(name, (None, "-"))
        ax.plot(n, mean, color=c, ls=ls, label=f"{name} (mean of {len(hv)})")
        ax.fill_between(n, mean - std, mean + std, color=c, alpha=0.15, lw=0)
        g = full_hv - hv
        gmean = g.mean(axis=0)
        gap.plot(n, np.maximum(gmean, FLOOR), color=c, ls=ls, label=name)
        gap.fill_between(n, np.maximum(np.percentile(g, 25, axis=0), FLOOR), np.maximum(np.percentile(g, 75, axis=0), FLOOR),
                         color=c, alpha=0.15, lw=0)
    ax.axhline(full_hv, color="k", ls=":", lw=1, label="every candidate")
    ax.set(xlabel="trials n", ylabel="hypervolume of trials 1..n", title="mean ± 1 std over sampler seeds")
    lo = min(np.array(r["hv"]).mean(axis=0)[min(4, n_grid - 1)] for r in curves.values())
    ax.set_ylim(lo - 0.3 * (full_hv - lo), full_hv + 0.1 * (full_hv - lo))
    ax.legend(fontsize=8, loc="lower right")
    gap.set_yscale("log")
    gap.set(xlabel="trials n", ylabel="hypervolume missing (log scale)",
            title=f"gap to every candidate: mean, 25-75 % ({FLOOR:g}: none)")
    gap.legend(fontsize=8)
    for a in (ax, gap):
        a.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="12 candidates, 2-epoch students, 5-epoch teacher, 5 seeds")
    ap.add_argument("--smoke", action="store_true", help="a check in seconds (tests/test_benchmarks.py runs it): "
                    "2 candidates, 1-epoch teacher and students, 2 seeds; figures mean nothing")
    ap.add_argument("--seeds", type=int, help="sampler seeds per sampler (default 20; 5 with --quick, 2 with --smoke)")
    ap.add_argument("--samplers", default=",".join(SAMPLERS),
                    help=f"comma-separated, from {', '.join(SAMPLERS + EXTRA)} (default: {','.join(SAMPLERS)})")
    ap.add_argument("--train-seed", type=int, default=0,
                    help="study seed for the candidates' training seeds (default 0, the quickstart's): another "
                         "value trains every candidate again under other seeds, in runs/search_efficiency_seed<S>/")
    ap.add_argument("--objectives", help="comma-separated (default: the quickstart's accuracy,params,latency); "
                                         "the cached candidates hold params, macs and latency")
    ap.add_argument("--curves", type=Path, help="where every run's curve goes (default runs/<name>/curves.json)")
    ap.add_argument("--plot", type=Path,
                    help="default reports/search_efficiency.png (in runs/<name>/ with --quick or --train-seed)")
    args = ap.parse_args()
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.ERROR)

    if args.smoke:
        args.seeds = args.seeds or 2
    name = ("search_efficiency_smoke" if args.smoke else "search_efficiency_quick" if args.quick else "search_efficiency") + \
        (f"_seed{args.train_seed}" if args.train_seed else "")
    run_dir = Path("runs") / name
    run_dir.mkdir(parents=True, exist_ok=True)
    space_path = run_dir / "space.yaml"
    space_path.write_text(SMOKE_SPACE if args.smoke else QUICK_SPACE if args.quick else SPACE)
    overrides = {"name": name, "seed": args.train_seed, **({"objectives": args.objectives.split(",")} if args.objectives else {}),
                 "search": {"space": str(space_path.resolve()), "early_stopping": {"enabled": False}}}
    if args.quick:
        overrides.update(teacher={"train": {"epochs": 5, "batch_size": 64, "lr": 0.1}},
                         student={"train": {"epochs": 2, "batch_size": 64, "lr": 0.1}})
    # The study file goes into run_dir: kdnas keeps the study's own run folder (the teacher) beside it.
    cfg = load_study(_studies.derive(STUDY, run_dir, overrides, smoke=args.smoke))
    grid = enumerate_space(cfg.space)

    teacher, lookup = train_all(cfg, grid, run_dir / "candidates.json")
    t_train = time.perf_counter() - started
    ok = [r for r in lookup.values() if "failed" not in r]
    objectives = list(cfg.objectives)
    full_points = normalise(ok, objectives, teacher)
    full_hv = hypervolume(full_points[pareto_mask(full_points, ["minimize"] * len(objectives))])
    front = [r for r, m in zip(ok, pareto_mask(full_points, ["minimize"] * len(objectives))) if m]
    accs = np.array([r["val_accuracy"] for r in ok])
    print(f"\n{len(ok)} candidates trained ({len(lookup) - len(ok)} failed), val accuracy {accs.min():.1%} .. "
          f"{accs.max():.1%} (median {np.median(accs):.1%}); {len(front)} on the front of every candidate "
          f"(objectives {', '.join(objectives)}); hypervolume of every candidate {full_hv:.4f}")
    for r in sorted(front, key=lambda r: r["params"]):
        print(f"  front: {r['student']:<32} {r['method']:<28} val {r['val_accuracy']:.1%}  {r['params']:>7,} params  "
              f"{r['latency_ms']:.3f} ms")

    n_trials = len(grid)
    seeds = range(args.seeds or (5 if args.quick else 20))
    samplers = [s for s in args.samplers.split(",") if s]
    curves: dict[str, dict] = {}
    t1 = time.perf_counter()
    for s in samplers:
        runs = [run_sampler(s, seed, cfg, grid, lookup, teacher, n_trials) for seed in seeds]
        curves[s] = {"hv": [r[0].tolist() for r in runs], "distinct": [r[1].tolist() for r in runs]}
        print(f"{s}: {len(runs)} runs of {n_trials} trials in {time.perf_counter() - t1:.1f}s", flush=True)
        t1 = time.perf_counter()
    curves_path = args.curves or run_dir / "curves.json"
    curves_path.write_text(json.dumps({"full_hv": full_hv, "objectives": objectives,
                                                     "teacher": teacher, "curves": curves}))

    # The table: hypervolume at n (mean ± std over seeds), distinct candidates, and how many trials random
    # sampling needs to reach TPE's mean hypervolume at n.
    ns = sorted({n for n in (5, 10, 15, 20, 30, 40, 60, n_trials) if n <= n_trials})
    mean = {s: np.array(c["hv"]).mean(axis=0) for s, c in curves.items()}
    std = {s: np.array(c["hv"]).std(axis=0) for s, c in curves.items()}
    print(f"\nHypervolume after n trials, mean ± std over {len(seeds)} sampler seeds (every candidate: {full_hv:.4f}); "
          f"[distinct candidates among the n, mean]")
    both = {"tpe", "random"} <= set(samplers)
    print("| n | " + " | ".join(samplers) + (" | random's mean curve reaches TPE's mean at n after | a random "
                                             "run reaches it after (median) |" if both else " |"))
    print("|---:|" + "---:|" * len(samplers) + ("---:|---:|" if both else ""))
    for n in ns:
        cells = [f"{mean[s][n - 1]:.4f} ± {std[s][n - 1]:.4f} [{np.mean(np.array(curves[s]['distinct'])[:, n - 1]):.0f}]"
                 for s in samplers]
        if both:
            m = trials_to_reach(mean["random"], mean["tpe"][n - 1])
            cells.append(f"{m} ({m / n:.2f}x)" if m else f"> {n_trials} (> {n_trials / n:.2f}x)")
            hits = [trials_to_reach(np.array(run), mean["tpe"][n - 1]) or n_trials + 1 for run in curves["random"]["hv"]]
            med = int(np.quantile(hits, 0.5, method="inverted_cdf"))
            cells.append(f"{med} ({med / n:.2f}x)" if med <= n_trials else f"> {n_trials}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    if {"tpe", "random"} <= set(samplers):
        tpe, rnd = np.array(curves["tpe"]["hv"]), np.array(curves["random"]["hv"])
        print("\nShare of (TPE seed, random seed) pairs in which TPE's hypervolume is higher (ties count half):")
        print("  " + "  ".join(f"n={n}: {np.mean((tpe[:, None, n - 1] > rnd[None, :, n - 1]) + 0.5 * (tpe[:, None, n - 1] == rnd[None, :, n - 1])):.0%}"
                               for n in ns))
    # Per run: trials until the hypervolume is within 1 % (0.5 %) of every candidate's.
    print(f"\nTrials until a run's hypervolume reaches 99 % / 99.5 % of every candidate's ({0.99 * full_hv:.4f} / "
          f"{0.995 * full_hv:.4f}): median [25th-75th percentile] over runs; runs that never reach it in "
          f"{n_trials} trials count as more")
    print("| sampler | 99 % | 99.5 % |")
    print("|---|---:|---:|")
    for s in samplers:
        cells = []
        for f in (0.99, 0.995):
            hits = [trials_to_reach(np.array(run), f * full_hv) or n_trials + 1 for run in curves[s]["hv"]]
            q = [int(np.quantile(hits, p, method="inverted_cdf")) for p in (0.5, 0.25, 0.75)]
            fmt = [str(v) if v <= n_trials else f">{n_trials}" for v in q]
            never = sum(h > n_trials for h in hits)
            cells.append(f"{fmt[0]} [{fmt[1]}-{fmt[2]}]" + (f", {never} of {len(hits)} never" if never else ""))
        print(f"| {s} | " + " | ".join(cells) + " |")
    path = args.plot or (run_dir / "search_efficiency.png" if args.quick or args.smoke or args.train_seed
                         else Path("reports/search_efficiency.png"))
    title = (f"digits, {len(ok)} candidates (ResNet depth x width x Hinton KD settings), objectives "
             f"{', '.join(objectives)}; {len(seeds)} seeds per sampler")
    plot(curves, full_hv, n_trials, path, title)
    print(f"\nfigure: {path}; curves: {curves_path}; teacher and candidates {t_train:.0f}s (loaded when cached), "
          f"total {time.perf_counter() - started:.0f}s")


if __name__ == "__main__":
    main()
