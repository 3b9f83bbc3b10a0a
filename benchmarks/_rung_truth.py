"""The long-budget truth of the MNIST-5k yardstick space (benchmarks/_enumerated.py), with each rung's figure.

Every candidate trains for the longest rung's epochs under one learning-rate schedule over that budget (what a
promoted candidate of a study with ``search.rungs`` is: docs/search.md), and its validation accuracy is read at
every rung's epoch on the way. A search with rungs is then replayed exactly from these curves: a candidate
promoted from rung r continues the very run whose rung-r figure ranked it. A second table, every candidate
trained for the first rung's epochs alone (its own schedule, annealed to zero), is what a flat brief search of
that budget would see: the two schedules compared at equal epochs decide which one rungs use. A third
(``--restarts``) trains each rung's stretch under its own schedule, annealed to zero at the rung's end and
restarted (new optimizer, new order) for the next: what rungs with "an annealed schedule per rung" would train;
its figures at the last rung say what that choice costs a promoted candidate.

Seeds are kdnas's own (``trial_seed(study seed, candidate index)``); caches per seed beside the 3-epoch ones.

    PYTHONPATH=. python benchmarks/_rung_truth.py --cache DIR --seeds 0,1 [--rungs 2,6,18]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _enumerated  # noqa: E402
import _studies  # noqa: E402
import search_efficiency as se  # noqa: E402

from kdnas.config import load_study  # noqa: E402
from kdnas.core import TrialFailure  # noqa: E402
from kdnas.study import _trial  # noqa: E402
from kdnas.study._runtime import prepare  # noqa: E402

RUNGS = [2, 6, 18]
_REAL_FIT = _trial.fit  # before any seed's training replaces it (train(..., restarts=True))


def mnist_cfg(cache: Path, seed: int, epochs: int, smoke: bool = False):
    """The yardstick's MNIST-5k study (``_enumerated.MNIST``) with the students trained ``epochs`` epochs; with
    ``smoke``, ``_enumerated.SMOKE``'s space on digits (benchmarks/rungs.py --smoke)."""
    name, space = (_enumerated.SMOKE_NAME, _enumerated.SMOKE_SPACE) if smoke else (_enumerated.MNIST_NAME,
                                                                                  _enumerated.MNIST_SPACE)
    run_dir = cache / name
    run_dir.mkdir(parents=True, exist_ok=True)
    space_path = run_dir / "space.yaml"
    space_path.write_text(space)
    overrides = {"name": name, "seed": seed, "threads": 1, "student": {"train": {"epochs": epochs}},
                 "search": {"space": str(space_path.resolve()), "early_stopping": {"enabled": False}}}
    if smoke:  # _studies.SMOKE, but the students keep this table's budget (SMOKE's would be 1 epoch)
        overrides = _studies.merge(_studies.merge(overrides, _studies.SMOKE),
                                   {"student": {"train": {"epochs": epochs}}, "assistants": {"train": {"epochs": 1}}})
    return load_study(_studies.derive(_studies.STUDIES / "mnist5k.yaml", run_dir, overrides))


def cache_file(cache: Path, seed: int, rungs: list[int], curve: bool, restarts: bool = False,
               smoke: bool = False) -> Path:
    joined = "-".join(map(str, rungs))
    tag = f"restarts{joined}" if restarts else f"curve{joined}" if curve else f"annealed{rungs[0]}"
    return cache / (_enumerated.SMOKE_NAME if smoke else _enumerated.MNIST_NAME) / f"candidates_{tag}_seed{seed}.json"


def _restarting_fit(rungs: list[int], split, real_fit, curve_now: dict):
    """``fit`` as rungs with a schedule per rung would run it: each rung's stretch its own annealed run (a fresh
    optimizer and order each time; the weights carried over), the validation accuracy read at each rung's end."""
    import dataclasses

    from kdnas.train import accuracy

    def fit(model, data, recipe, loss_fn, seed, on_epoch=None, extra=None, checkpoint=None, resume=None, until=None,
            precision="fp32"):
        history, start = [], 0
        for k, end in enumerate(rungs):
            part = dataclasses.replace(recipe, epochs=end - start)
            history += real_fit(model, data, part, loss_fn, seed + k, extra=extra, precision=precision)
            curve_now[str(end)] = accuracy(model, split.val)
            start = end
        return history
    return fit


def train(cache: Path, seed: int, rungs: list[int], curve: bool, restarts: bool = False, smoke: bool = False) -> None:
    """Train every candidate not yet in the cache: for ``rungs[-1]`` epochs reading the rungs on the way
    (``curve``), or for ``rungs[0]`` epochs alone, or rung by rung with restarts."""
    epochs = rungs[-1] if curve or restarts else rungs[0]
    cfg = mnist_cfg(cache, seed, epochs, smoke)
    grid = _enumerated.enumerate_space(cfg.space)
    path = cache_file(cache, seed, rungs, curve, restarts, smoke)
    data = json.loads(path.read_text()) if path.exists() else {"rungs": rungs, "candidates": {}}
    done = data["candidates"]
    rt = prepare(cfg)
    at = set(rungs[:-1]) if curve else set()
    curve_now: dict[str, float] = {}

    def recorder(rule, trial, total, params, val_accuracy, objective=None):  # checkpoint_hook's signature
        def on_epoch(epoch: int, loss: float) -> None:
            if epoch + 1 in at:
                curve_now[str(epoch + 1)] = val_accuracy()
        return on_epoch

    _trial.checkpoint_hook = recorder  # reads the validation accuracy mid-run; no draw from any generator
    # kdnas's own fit, wrapped afresh for each seed: wrapping the last seed's wrapper would run each rung's
    # stretch as a whole restarted schedule (54 epochs, not 18: seeds after the first of a --seeds list were).
    _trial.fit = _restarting_fit(rungs, rt.split, _REAL_FIT, curve_now) if restarts else _REAL_FIT
    objective = _trial.make_objective(rt)
    t0 = time.perf_counter()
    for i, params in enumerate(grid):
        key = se.key_of(cfg.space.sample(optuna.trial.FixedTrial(params)))
        if key in done:
            continue
        trial = optuna.trial.FixedTrial(params, number=i)
        curve_now.clear()
        try:
            objective(trial)
            ua = trial.user_attrs
            rec = {k: ua[k] for k in ("val_accuracy", "test_accuracy", "params", "train_seconds")}
            rec["curve"] = {**curve_now, str(epochs): ua["val_accuracy"]}
        except (TrialFailure, optuna.TrialPruned) as err:
            rec = {"failed": str(err)}
        rec.update(index=i, student=trial.user_attrs.get("student"), method=trial.user_attrs.get("method"))
        done[key] = rec
        path.write_text(json.dumps(data, indent=1))
        print(f"[seed {seed} {'restarts' if restarts else 'curve' if curve else 'annealed'} {i + 1}/{len(grid)} {time.perf_counter() - t0:6.0f}s] "
              f"{rec['student']} {rec['method']}: {rec.get('curve') or rec.get('failed')}", flush=True)
    rt.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", required=True, type=Path)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--rungs", default=",".join(map(str, RUNGS)))
    ap.add_argument("--annealed", action="store_true", help="the first rung's budget alone (its own schedule)")
    ap.add_argument("--restarts", action="store_true", help="rung by rung, a schedule annealed within each rung")
    args = ap.parse_args()
    rungs = [int(r) for r in args.rungs.split(",")]
    for s in (int(x) for x in args.seeds.split(",")):
        train(args.cache.resolve(), s, rungs, curve=not (args.annealed or args.restarts), restarts=args.restarts)


if __name__ == "__main__":
    main()
