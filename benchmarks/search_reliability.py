"""The yardstick: how far is the front kdnas reports from the truth, one seed per trial against replicates + intensification?

Two enumerated spaces are trained candidate by candidate under K study seeds each (benchmarks/_enumerated.py;
cached, a rerun trains nothing it has): search_efficiency.py's digits space (84 ResNet x Hinton-setting
candidates) and an MNIST-5k space of small students (28 candidates, 438-19,074 params, labels only or KD,
direct or through one assistant). A candidate's *true* accuracy is its mean over the K seeds.

Then kdnas's search is replayed many times against that table (benchmarks/_yardstick.py: kdnas's sampler,
space, candidate keys, replicate cap, intensification and trial loop; only the training is a lookup, the r-th
training of a candidate drawing the r-th of its seeds in a per-run random order). Each arm runs under 20
sampler seeds; after 10, 20, 40 and 80 trainings (a replicate counts, an answer past the cap does not) its
reported front is scored against the truth:

* hv_regret: the hypervolume of the true front (every candidate at its true mean) minus that of the reported
  members at their true means (objectives normalised by the teacher's costs, reference point 1);
* optimism: members' reported accuracy minus their true accuracy (mean over members), in points;
* coverage: how often a member's 90 % interval holds its true accuracy (one seed: the binomial interval);
* the ``--pick params<=P`` winner (the reported member with the highest reported accuracy within P
  parameters): its optimism, and its regret (the best true accuracy within P minus the winner's).

The truth shares seeds with the draws (a member drawn 3 times out of K is a third of its own truth at K=9), which
shrinks optimism by (K - m)/K and widens coverage. So optimism and coverage are also given against each member's
held-out truth, the mean of the seeds this run did not draw for it: unbiased for optimism, and a conservative
coverage (that truth has its own noise).

    PYTHONPATH=. python benchmarks/search_reliability.py --cache DIR      # both spaces, from caches trained earlier into DIR
    PYTHONPATH=. python benchmarks/search_reliability.py --spaces digits --arms one_seed,rep5_a10_s0.25
    PYTHONPATH=. python benchmarks/search_reliability.py --smoke                          # seconds
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _enumerated  # noqa: E402
import _yardstick as ys  # noqa: E402

# kdnas before #25; replicates without re-evaluation; kdnas now (cap 5, after 10, share 0.25) and neighbours of
# its defaults; the two samplers (item 5) on the arms that matter.
ARMS = ("one_seed", "rep5", "rep5_a10_s0.25", "rep3_a10_s0.25", "rep5_a0_s0.25", "rep5_a20_s0.25", "rep5_a10_s0.5",
        "one_seed+mv", "rep5_a10_s0.25+mv")
BASELINE, KDNAS = "one_seed", "rep5_a10_s0.25"
DEFAULT_TRAIN_SEEDS = {"digits": 10, "mnist5k": 8, "smoke": 2}
# --pick params<=P: a round number near each space's median parameter count.
PICK = {"digits": 50_000, "mnist5k": 5_000, "smoke": 1_000}

_STATE: dict = {}  # per process: space name -> (truth, scorer), set before the pool forks


def _run(task: tuple[str, str, int, list[int]]) -> tuple[str, str, int, dict]:
    space, spec, seed, budgets = task
    truth, scorer = _STATE[space]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    return space, spec, seed, ys.simulate(truth, scorer, ys.arm(spec), seed, budgets)


def mean_hw(vals) -> tuple[float, float, int]:
    """Mean, 90 % half-width of the mean (normal), count, over the non-NaN values."""
    v = np.asarray([x for x in vals if x == x], float)
    if not len(v):
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(1.645 * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan"), len(v)


def cell(vals, scale: float = 100.0, digits: int = 1) -> str:
    m, h, n = mean_hw(vals)
    return "n/a" if n == 0 else f"{m * scale:.{digits}f} ± {h * scale:.{digits}f}"


COLUMNS = (("hv regret (x1000)", "hv_regret", 1000, 2), ("held-out", "hv_regret_heldout", 1000, 2),
           ("optimism (pts)", "optimism", 100, 1), ("held-out", "optimism_heldout", 100, 1),
           ("coverage (%)", "coverage", 100, 0), ("held-out", "coverage_heldout", 100, 0),
           ("seed part", "coverage_seed", 100, 0), ("pick optimism", "pick_optimism", 100, 1),
           ("held-out", "pick_optimism_heldout", 100, 1), ("pick regret", "pick_regret", 100, 1),
           ("held-out", "pick_regret_heldout", 100, 1))


def table(res: dict, space: str, arms: list[str], budgets: list[int]) -> list[str]:
    """Every arm at every budget (mean ± 90 % half-width over sampler seeds)."""
    lines = ["| arm | trainings | " + " | ".join(c[0] for c in COLUMNS) + " | distinct | front (reps/member) |",
             "|---|" + "---:|" * (len(COLUMNS) + 3)]
    for a in arms:
        for b in budgets:
            runs = [r[b] for r in res[space][a].values()]
            col = lambda k: [r[k] for r in runs]  # noqa: E731
            stopped = [r["trainings"] for r in runs if r["stopped_early"]]
            lines.append(f"| {a} | {b} | " + " | ".join(cell(col(k), sc, d) for _, k, sc, d in COLUMNS)
                         + f" | {np.mean(col('distinct')):.1f} | {np.mean(col('front')):.1f} "
                         f"({np.mean(col('member_reps')):.1f})"
                         + (f" [{len(stopped)} stopped at {np.mean(stopped):.0f} trainings]" if stopped else "") + " |")
    return lines


def paired(res: dict, space: str, a: str, b: str, budget: int, key: str) -> list[float]:
    """Per sampler seed, arm ``a``'s figure minus arm ``b``'s (same seed: paired)."""
    ra, rb = res[space][a], res[space][b]
    return [ra[s][budget][key] - rb[s][budget][key] for s in ra if s in rb]


def acceptance(res: dict, space: str, budgets: list[int], new: str, old: str) -> list[str]:
    """The issue's targets for ``new`` against ``old`` at each budget. Optimism is judged on the held-out truth
    (the all-seeds truth shares the drawn seeds: it flatters replicates most, module docstring), shown beside."""
    lines = [f"| trainings | front optimism, held-out (all seeds), {old} -> {new}, pts | pick optimism, held-out "
             f"(all seeds) | held-out coverage >= 80 % | hv regret, new - old (x1000; held-out) | pick regret, "
             f"new - old (pts; held-out) |", "|---:|---:|---:|---:|---:|---:|"]

    def m(arm: str, b: int, k: str) -> float:
        return mean_hw([r[b][k] for r in res[space][arm].values()])[0]

    def verdict(mean: float, hw: float) -> str:
        return "within noise" if abs(mean) <= hw else ("lower" if mean < 0 else "HIGHER")
    for b in budgets:
        def halved(k: str) -> str:
            o, n = m(old, b, k + "_heldout"), m(new, b, k + "_heldout")
            ok = abs(n) <= 0.5 * abs(o)
            return (f"{100 * o:.2f} -> {100 * n:.2f} ({100 * m(old, b, k):.2f} -> {100 * m(new, b, k):.2f}): "
                    f"{'met' if ok else 'NOT met'}")
        cov = m(new, b, "coverage_heldout")
        diffs = []
        for k, sc in (("hv_regret", 1000), ("pick_regret", 100)):
            d, dh = (mean_hw(paired(res, space, new, old, b, kk)) for kk in (k, k + "_heldout"))
            diffs.append(f"{sc * d[0]:+.2f} ± {sc * d[1]:.2f} {verdict(*d[:2])}; {sc * dh[0]:+.2f} ± {sc * dh[1]:.2f} "
                         f"{verdict(*dh[:2])}")
        lines.append(f"| {b} | {halved('optimism')} | {halved('pick_optimism')} | {100 * cov:.0f} % "
                     f"({'met' if cov >= 0.8 else 'NOT met'}; all seeds {100 * m(new, b, 'coverage'):.0f} %, seed part "
                     f"{100 * m(new, b, 'coverage_seed'):.0f} %) | {diffs[0]} | {diffs[1]} |")
    return lines


def comparisons(res: dict, space: str, pairs: list[tuple[str, str]], budgets: list[int]) -> list[str]:
    """Paired differences (first arm minus second) of the scored figures, mean ± 90 % half-width."""
    lines = ["| first - second | trainings | hv regret (x1000) | held-out | held-out optimism (pts) | pick regret (pts) "
             "| held-out | held-out coverage (pts) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for a, b in pairs:
        if a not in res[space] or b not in res[space]:
            continue
        for n in budgets:
            c = [cell(paired(res, space, a, b, n, k), s, d) for k, s, d in
                 (("hv_regret", 1000, 2), ("hv_regret_heldout", 1000, 2), ("optimism_heldout", 100, 2),
                  ("pick_regret", 100, 2), ("pick_regret_heldout", 100, 2), ("coverage_heldout", 100, 1))]
            lines.append(f"| {a} - {b} | {n} | " + " | ".join(c) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spaces", default="digits,mnist5k", help="comma-separated: digits, mnist5k (default both)")
    ap.add_argument("--cache", type=Path, default=Path("runs"), help="where the trained spaces are cached "
                    "(default runs/ under the working folder; digits in search_efficiency.py's layout)")
    ap.add_argument("--train-seeds", type=int, help="study seeds per space (default: digits 10, mnist5k 8)")
    ap.add_argument("--no-train", action="store_true", help="use the caches only; a missing one is an error")
    ap.add_argument("--seeds", type=int, help="sampler seeds per arm (default 20)")
    ap.add_argument("--budgets", default="10,20,40,80", help="trainings at which fronts are scored (default 10,20,40,80)")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated: one_seed, repN, repN_aA_sS, each with "
                    f"an optional +mv (multivariate grouped TPE); default {','.join(ARMS)}")
    ap.add_argument("--jobs", type=int, default=1, help="processes for the simulations (default 1)")
    ap.add_argument("--out", type=Path, help="every run's figures (default <cache>/search_reliability.json)")
    ap.add_argument("--smoke", action="store_true", help="a check in seconds: 3 candidates, 1 epoch, 2 training "
                    "seeds, budget 4, 2 sampler seeds, in the working folder; figures mean nothing")
    args = ap.parse_args()
    started = time.perf_counter()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore")
    try:
        budgets = sorted({int(b) for b in args.budgets.split(",") if b})
        specs = [s for s in args.arms.split(",") if s]
        for s in specs:
            ys.arm(s)
        if not budgets or budgets[0] < 1:
            raise ValueError("--budgets: positive trainings, e.g. 20,40,80")
    except ValueError as err:
        ap.error(str(err))  # exit 2
    spaces = ["smoke"] if args.smoke else [s for s in args.spaces.split(",") if s]
    for s in [] if args.smoke else spaces:
        if s not in _enumerated.SPACES or s == "smoke":
            ap.error(f"--spaces: unknown space {s!r}; known: digits, mnist5k")
    if args.smoke:
        budgets, args.seeds = [4], args.seeds or 2
        specs = [BASELINE, KDNAS, "rep3_a2_s0.25", "one_seed+mv"]
    n_seeds = args.seeds or 20
    for s in spaces:
        k = args.train_seeds or DEFAULT_TRAIN_SEEDS[s]
        truth = _enumerated.load_truth(_enumerated.SPACES[s], args.cache, list(range(k)), train=not args.no_train)
        scorer = ys.Scorer(truth, PICK[s])
        _STATE[s] = (truth, scorer)
        spread = truth.acc.std(axis=1, ddof=1)
        print(f"\n{s}: {len(truth.keys)} candidates x {truth.seeds} seeds, {truth.n_val} validation images; true "
              f"accuracy {truth.acc.mean(axis=1).min():.1%} .. {truth.acc.mean(axis=1).max():.1%}, seed spread (sd) "
              f"median {np.median(spread):.2%}, max {spread.max():.2%}; true front hypervolume {scorer.true_hv:.4f}; "
              f"--pick params<={PICK[s]:,}: true best {scorer.best_within:.1%}", flush=True)
    tasks = [(s, a, seed, budgets) for s in spaces for a in specs for seed in range(n_seeds)]
    res: dict = {s: {a: {} for a in specs} for s in spaces}
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.jobs) if args.jobs > 1 else _Serial() as pool:
        for j, (s, a, seed, out) in enumerate(pool.imap_unordered(_run, tasks)):
            res[s][a][seed] = out
            if (j + 1) % max(1, len(tasks) // 20) == 0:
                print(f"  [{j + 1}/{len(tasks)} runs, {time.perf_counter() - t0:.0f}s]", flush=True)
    for s in spaces:
        print(f"\n## {s}: every arm, mean ± 90 % half-width over {n_seeds} sampler seeds\n")
        print("\n".join(table(res, s, specs, budgets)))
        if BASELINE in specs and KDNAS in specs:
            print(f"\n### {s}: the issue's targets, {KDNAS} (kdnas now) against {BASELINE} (before #25)\n")
            print("\n".join(acceptance(res, s, budgets, KDNAS, BASELINE)))
        pairs = [(KDNAS, BASELINE), ("rep3", BASELINE), (KDNAS, "rep3"), *[(a, KDNAS) for a in specs if a.startswith("rep")
                 and a not in (KDNAS, "rep3") and "+" not in a], (KDNAS + "+mv", KDNAS), (BASELINE + "+mv", BASELINE)]
        print(f"\n### {s}: paired differences (same sampler seed), mean ± 90 % half-width; negative regret = first better\n")
        print("\n".join(comparisons(res, s, pairs, budgets)))
    out = args.out or args.cache / ("search_reliability_smoke.json" if args.smoke else "search_reliability.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {s: {"candidates": len(_STATE[s][0].keys), "train_seeds": _STATE[s][0].seeds, "pick_params": PICK[s],
                "true_hv": _STATE[s][1].true_hv, "true_best_within_pick": _STATE[s][1].best_within,
                "true_accuracy": dict(zip(_STATE[s][0].labels, _STATE[s][0].acc.mean(axis=1).tolist()))} for s in spaces}
    out.write_text(json.dumps({"budgets": budgets, "sampler_seeds": n_seeds, "spaces": meta, "runs": res}, indent=1))
    print(f"\nfigures: {out}; {time.perf_counter() - started:.0f}s")


class _Serial:
    """``Pool``'s interface, in this process (``--jobs 1``)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap_unordered(self, fn, tasks):
        return map(fn, tasks)


if __name__ == "__main__":
    main()
