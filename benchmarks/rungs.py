"""Do rungs find the long-budget front better than a flat brief search, at equal CPU time? (issue #26)

A brief budget ranks what converges fast: it biases the answer, not only blurs it. The MNIST-5k yardstick
space (benchmarks/_enumerated.py: 28 small students, labels only or Hinton KD, direct or through an assistant)
is trained under 6 seeds for 18 epochs under one schedule, read at epochs 2, 6 and 18 on the way
(benchmarks/_rung_truth.py), beside the 8 seeds of the flat brief search's own 3-epoch runs. The truth is each
candidate's mean over the 6 seeds at 18 epochs.

kdnas's search is replayed against those caches (benchmarks/_rung_replay.py: kdnas's sampler, replicate cap,
intensification, promotions and front; only the training is a lookup), with the shipped defaults (replicates
5, intensify after 10 trainings, share 0.25) and three ways to spend the CPU:

* ``flat``: every training 3 epochs (kdnas without rungs, as the yardstick studies are trained);
* ``flat18``: every training 18 epochs (honest, but few candidates);
* ``rungs2-6-18``: ``search.rungs: {epochs: [2, 6, 18], keep: 1/3}``;
* (optional) ``restarts``: the same rungs with each rung's stretch annealed and restarted
  (``_rung_truth.py --restarts``), the alternative schedule; ``rungs6-18``, ``_k0.5``: other rungs and shares.

A training costs the epochs it adds times the candidate's CPU seconds per epoch (its 18-epoch train_seconds /
18, one thread); budgets are in units of one flat brief training of the average candidate (3 epochs at the
mean cost per epoch). Each strategy runs under 20 sampler seeds; its report at each budget (the last
training that fits) is scored against the long truth, as search_reliability.py scores: hv regret, members'
optimism (reported minus true 18-epoch accuracy; held-out: the mean of the seeds the run did not draw),
``--pick params<=5000`` regret; and each student's direct-Hinton gain over labels-only as the report gives it
(at the highest rung with both arms) against its true 18-epoch gain.

The schedule question is answered from the caches alone: Kendall tau, seed by seed, of each candidate's figure
at epoch 2 and 6 of the long schedule, of 2 epochs annealed, and of the 3-epoch flat runs, against the truth.

    PYTHONPATH=. python benchmarks/rungs.py --cache DIR --no-train --jobs 2   # from caches trained into DIR
    PYTHONPATH=. python benchmarks/rungs.py --smoke                           # seconds, in a temporary folder
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _enumerated  # noqa: E402
import _rung_replay as rr  # noqa: E402
import _studies  # noqa: E402
import _yardstick as ys  # noqa: E402
from search_reliability import _Serial, cell, mean_hw  # noqa: E402

_STATE: dict = {}  # per process: the truth and the scorer, set before the pool forks


def _run(task: tuple[str, int, list[float]]) -> tuple[str, int, dict]:
    spec, seed, budgets = task
    rt, scorer, strategies = _STATE["rt"], _STATE["scorer"], _STATE["strategies"]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    return spec, seed, rr.simulate(rt, scorer, strategies[spec], seed, budgets)


def t_hw(vals) -> tuple[float, float, int]:
    """Mean, 90 % half-width (Student's t: a handful of training seeds), count."""
    v = np.asarray(vals, float)
    return float(v.mean()), float(stats.t.ppf(0.95, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))), len(v)


def schedule_table(rt: rr.RungTruth) -> list[str]:
    """Kendall tau of one seed's figures against the truth, per seed (mean ± 90 % half-width over seeds).
    Against the leave-one-out truth too (the other seeds' long runs): a seed's mid-schedule figure is read
    from the very run that is part of its all-seeds truth."""
    long = rt.curve[:, :, -1]
    K = long.shape[1]
    loo = lambda s: np.delete(long, s, axis=1).mean(axis=1) if s < K else long.mean(axis=1)  # noqa: E731
    tau = lambda x, y: stats.kendalltau(x, y).statistic  # noqa: E731
    e, ids = rt.epochs, list(range(K))
    rows = {f"epoch {e[r]} of the {e[-1]}-epoch schedule (rung {r + 1})": (rt.curve[:, :, r], ids)
            for r in range(len(e) - 1)}
    if rt.annealed is not None:
        rows[f"{e[0]} epochs alone, annealed"] = (rt.annealed, ids)
    rows[f"{rt.brief_epochs} epochs alone, annealed (the flat brief search)"] = (rt.base.acc, range(rt.base.seeds))
    rows[f"{e[-1]} epochs, one seed (the ceiling)"] = (long, ids)
    if rt.restarts is not None:
        rows.update({f"epoch {e[r]}, annealed within each rung (restarts)": (rt.restarts[:, :, r], rt.restart_seeds)
                     for r in range(1, len(e))})
    lines = [f"| figure (one seed) | seeds | tau vs truth ({K} seeds) | tau vs leave-one-out truth |",
             "|---|---:|---:|---:|"]
    per_seed = {}
    for name, (a, seeds) in rows.items():
        full = [tau(a[:, j], long.mean(axis=1)) for j in range(a.shape[1])]
        held = [tau(a[:, j], loo(s)) for j, s in enumerate(seeds)]
        per_seed[name] = held
        (m, h, n), (mh, hh, _) = t_hw(full), t_hw(held)
        lines.append(f"| {name} | {n} | {m:.3f} ± {h:.3f} | {mh:.3f} ± {hh:.3f} |")
    if rt.annealed is not None:
        mid, ann = per_seed[next(iter(rows))], per_seed[f"{e[0]} epochs alone, annealed"]
        m, h, n = t_hw(np.subtract(mid, ann))
        lines += ["", f"Paired by seed (leave-one-out truth), epoch {e[0]} mid-schedule minus {e[0]} epochs annealed: "
                  f"{m:+.3f} ± {h:.3f} ({n} seeds; {'within noise' if abs(m) <= h else 'a difference'})."]
    return lines


def gains_table(rt: rr.RungTruth) -> list[str]:
    """Each student's direct Hinton gain over labels-only in the caches (mean over seeds), by budget."""
    e, pairs = rt.epochs, rr.kd_pairs(rt)
    cols = {f"{rt.brief_epochs} ep annealed (flat)": rt.base.acc}
    if rt.annealed is not None:
        cols[f"{e[0]} ep annealed"] = rt.annealed
    cols.update({f"ep {x} of {e[-1]}": rt.curve[:, :, r] for r, x in enumerate(e)})
    lines = ["| student | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for student, b, k in pairs:
        lines.append(f"| {student} | " + " | ".join(f"{100 * (a[k] - a[b]).mean():+.1f}" for a in cols.values()) + " |")
    mean = [np.mean([(a[k] - a[b]).mean() for _, b, k in pairs]) for a in cols.values()]
    return lines + ["| mean | " + " | ".join(f"{100 * m:+.1f}" for m in mean) + " |"]


COLUMNS = (("hv regret (x1000)", "hv_regret", 1000, 2), ("held-out", "hv_regret_heldout", 1000, 2),
           ("optimism (pts)", "optimism", 100, 1), ("held-out", "optimism_heldout", 100, 1),
           ("abs error (pts)", "abs_error", 100, 1), ("pick regret (pts)", "pick_regret", 100, 1),
           ("held-out", "pick_regret_heldout", 100, 1), ("pick optimism", "pick_optimism", 100, 1))
EFFECTS = (("students with both arms", "kd_measured", 1, 1), ("sign agrees (%)", "kd_sign", 100, 0),
           ("abs error (pts)", "kd_mae", 100, 1), ("bias (pts)", "kd_bias", 100, 1),
           ("truth in 90 % interval (%)", "kd_covered", 100, 0))


def table(res: dict, specs: list[str], budgets: list[float], columns, extra: bool) -> list[str]:
    lines = ["| strategy | budget | " + " | ".join(c[0] for c in columns)
             + (" | front | at top rung | member epochs | trainings (runs + promotions) | distinct |" if extra else " |"),
             "|---|---:|" + "---:|" * (len(columns) + 5 * extra)]
    for a in specs:
        for b in budgets:
            runs = [r[b] for r in res[a].values()]
            col = lambda k: [r[k] for r in runs]  # noqa: E731
            row = f"| {a} | {b:g} | " + " | ".join(cell(col(k), sc, d) for _, k, sc, d in columns) + " |"
            if extra:
                stopped = sum(r["stopped_early"] for r in runs)
                row += (f" {np.mean(col('front')):.1f} | {100 * np.nanmean(col('top_share')):.0f} % | "
                        f"{np.nanmean(col('member_epochs')):.1f} | {np.mean(col('trainings')):.1f} "
                        f"({np.mean(col('runs')):.1f} + {np.mean(col('promotions')):.1f}) | "
                        f"{np.mean(col('distinct')):.1f}{f' [{stopped:.0f} stopped]' if stopped else ''} |")
            lines.append(row)
    return lines


def versus(res: dict, specs: list[str], base: str, budgets: list[float]) -> list[str]:
    """Paired by sampler seed: each strategy minus ``base``; the cut of the mean hv regret (target >= 25 %)."""
    lines = [f"| strategy - {base} | budget | hv regret (x1000) | held-out | pick regret (pts) | held-out | "
             f"hv regret cut vs {base} | >= 25 % and beyond noise? |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for a in (s for s in specs if s != base):
        for b in budgets:
            d = {k: [res[a][s][b][k] - res[base][s][b][k] for s in res[a] if s in res[base]]
                 for k in ("hv_regret", "hv_regret_heldout", "pick_regret", "pick_regret_heldout")}
            mb = mean_hw([r[b]["hv_regret"] for r in res[base].values()])[0]
            m, h, _ = mean_hw(d["hv_regret"])
            cut = -m / mb if mb > 0 else float("nan")
            ok = "yes" if cut >= 0.25 and m + h < 0 else "no" + (" (beyond noise)" if m + h < 0 else "")
            lines.append(f"| {a} - {base} | {b:g} | " + " | ".join(cell(d[k], sc, 2) for k, sc in
                         (("hv_regret", 1000), ("hv_regret_heldout", 1000), ("pick_regret", 100),
                          ("pick_regret_heldout", 100))) + f" | {100 * cut:+.0f} % | {ok} |")
    return lines


def per_student(res: dict, specs: list[str], budget: float, rt: rr.RungTruth) -> list[str]:
    """Each student's reported direct Hinton gain at ``budget``: mean over the runs that measured both arms."""
    pairs = rr.kd_pairs(rt)
    true = rt.curve[:, :, -1].mean(axis=1)
    lines = ["| student | true gain (pts) | " + " | ".join(f"{a}: reported (runs, mean rung)" for a in specs) + " |",
             "|---|---:|" + "---:|" * len(specs)]
    for student, b, k in pairs:
        row = f"| {student} | {100 * (true[k] - true[b]):+.1f} |"
        for a in specs:
            got = [r[budget]["kd_per_student"][student] for r in res[a].values()
                   if student in r[budget]["kd_per_student"]]
            row += (f" {100 * np.mean([g[0] for g in got]):+.1f} ({len(got)}, {1 + np.mean([g[3] for g in got]):.1f}) |"
                    if got else " n/a (0) |")
        lines.append(row)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("runs"), help="where the trained caches are (default runs/)")
    ap.add_argument("--no-train", action="store_true", help="use the caches only; a missing one is an error")
    ap.add_argument("--brief-seeds", type=int, default=8, help="seeds of the flat brief caches (default 8)")
    ap.add_argument("--curve-seeds", type=int, default=6, help="seeds of the long curves (default 6)")
    ap.add_argument("--rungs", default="2,6,18", help="the curves' epochs (default 2,6,18)")
    ap.add_argument("--strategies", default="flat,flat18,rungs2-6-18", help="comma-separated: flat, flatE, "
                    "rungsA-B-C[_kK], restarts[_kK] (default flat,flat18,rungs2-6-18)")
    ap.add_argument("--budgets", default="20,40,80,160", help="CPU budgets in flat brief trainings of the average "
                    "candidate (default 20,40,80,160)")
    ap.add_argument("--seeds", type=int, default=20, help="sampler seeds per strategy (default 20)")
    ap.add_argument("--pick", type=float, default=5000, help="--pick params<=P (default 5000)")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the simulations (default 1)")
    ap.add_argument("--out", type=Path, help="every run's figures (default <cache>/rungs.json)")
    ap.add_argument("--smoke", action="store_true", help="seconds: a 3-candidate digits space trained into a "
                    "temporary folder (2 seeds, rungs 2,3; the flat brief 1 epoch), 2 sampler seeds; figures mean nothing")
    args = ap.parse_args()
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    try:
        epochs = [int(x) for x in args.rungs.split(",") if x]
        budgets = sorted({float(b) for b in args.budgets.split(",") if b})
        if args.smoke:
            epochs, budgets, args.seeds, args.pick = [2, 3], [4.0, 12.0], 2, 1000
            args.brief_seeds = args.curve_seeds = 2
            args.strategies = "flat,flat3,rungs2-3,restarts"
        if len(epochs) < 2 or epochs != sorted(set(epochs)) or epochs[0] < 1:
            raise ValueError(f"--rungs: increasing epochs, at least two (e.g. 2,6,18), got {args.rungs!r}")
        if not budgets or budgets[0] <= 0:
            raise ValueError("--budgets: positive numbers of flat brief trainings, e.g. 20,40,80")
        if min(args.seeds, args.brief_seeds, args.curve_seeds, args.jobs) < 1:
            raise ValueError("--seeds, --brief-seeds, --curve-seeds and --jobs must be at least 1")
        specs = [s for s in args.strategies.split(",") if s]
        strategies = {s: rr.strategy(s, 3, epochs) for s in specs}  # the brief budget is checked below
    except ValueError as err:
        ap.error(str(err))  # exit 2
    with _studies.work_folder(None, "kdnas-rungs-") if args.smoke else _nullfolder(args.cache) as cache:
        sd = _enumerated.SMOKE if args.smoke else _enumerated.MNIST
        rt = rr.load(sd, cache, list(range(args.brief_seeds)), list(range(args.curve_seeds)), epochs,
                     train=not args.no_train, smoke=args.smoke,
                     restarts=any(s.source == "restarts" for s in strategies.values()))
        if args.smoke and len(rt.restart_seeds) != args.curve_seeds:
            raise SystemExit("--smoke: a restarted schedule trained just now was refused (see above)")
        strategies = {s: rr.strategy(s, rt.brief_epochs, epochs) for s in specs}
        scorer = ys.Scorer(rt.long, args.pick)
        _STATE.update(rt=rt, scorer=scorer, strategies=strategies)
        report(args, rt, scorer, specs, budgets, cache, started)


def report(args, rt: rr.RungTruth, scorer, specs: list[str], budgets: list[float], cache: Path, started: float) -> None:
    true = rt.curve[:, :, -1].mean(axis=1)
    print(f"{rt.base.name}: {len(true)} candidates; truth: {rt.curve.shape[1]} seeds x {rt.epochs[-1]} epochs, "
          f"{true.min():.1%} .. {true.max():.1%}; brief: {rt.base.seeds} seeds x {rt.brief_epochs} epochs; CPU per "
          f"epoch {rt.epoch_cost.min():.2f} .. {rt.epoch_cost.max():.2f} s, budget unit (one flat brief training of "
          f"the average candidate) {rt.unit:.2f} s; true front hv {scorer.true_hv:.4f}; --pick params<="
          f"{args.pick:g}: true best {scorer.best_within:.1%}", flush=True)
    print("\n## Which figure at a rung ranks like the long budget? (Kendall tau over the candidates, mean ± 90 % "
          "half-width over seeds, t)\n")
    print("\n".join(schedule_table(rt)))
    print("\n## Direct Hinton gain over labels-only by budget (points, mean over the cached seeds)\n")
    print("\n".join(gains_table(rt)))
    tasks = [(a, seed, budgets) for a in specs for seed in range(args.seeds)]
    res: dict = {a: {} for a in specs}
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.jobs) if args.jobs > 1 else _Serial() as pool:
        for j, (a, seed, out) in enumerate(pool.imap_unordered(_run, tasks)):
            res[a][seed] = out
            if (j + 1) % max(1, len(tasks) // 10) == 0:
                print(f"  [{j + 1}/{len(tasks)} runs, {time.perf_counter() - t0:.0f}s]", flush=True)
    n = args.seeds
    print(f"\n## Reports scored against the {rt.epochs[-1]}-epoch truth, at equal CPU (mean ± 90 % half-width over "
          f"{n} sampler seeds)\n")
    print("\n".join(table(res, specs, budgets, COLUMNS, True)))
    print(f"\n## Paired differences against {specs[0]} (same sampler seed; negative = better)\n")
    print("\n".join(versus(res, specs, specs[0], budgets)))
    print(f"\n## Direct Hinton gain over labels-only as each report gives it, against the true {rt.epochs[-1]}-epoch "
          f"gain (per run: the students it measured; mean ± 90 % half-width over {n} sampler seeds)\n")
    print("\n".join(table(res, specs, budgets, EFFECTS, False)))
    print(f"\n### Per student at budget {budgets[-1]:g}\n")
    print("\n".join(per_student(res, specs, budgets[-1], rt)))
    out = args.out or cache / "rungs.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"budgets": budgets, "unit_seconds": rt.unit, "sampler_seeds": n, "epochs": rt.epochs,
                               "true_hv": scorer.true_hv, "runs": {a: {s: {str(b): r for b, r in v.items()}
                                                                        for s, v in res[a].items()} for a in res}}))
    print(f"\nfigures: {out}; {time.perf_counter() - started:.0f}s")
    if args.smoke and not any(r[budgets[-1]]["promotions"] for a in specs if "rungs" in a for r in res[a].values()):
        raise SystemExit("--smoke: no run was promoted: the rung replay did not exercise kdnas's promotions")


class _nullfolder:
    """``work_folder``'s interface for a folder that stays."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return self.path.resolve()

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    main()
