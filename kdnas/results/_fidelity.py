"""`kdnas fidelity`: how well the search's brief training ranks candidates, measured by training some fully.

A search trains each candidate for a few epochs only: a proxy. This retrains K candidates with the full budget,
exactly as ``kdnas train`` trains an exported bundle (the whole chain, assistants first, then the student with
the method, hyperparameters and seed of the candidate's representative trial: the replicate closest to its
mean), and compares the two rankings on the validation split with Kendall's tau and Spearman's rho; test
accuracy is shown beside them, never used. The brief figure of a candidate is the mean of its replicates.

With ``--seeds 2`` each candidate is trained fully a second time under another seed, and the two full
trainings' agreement is reported beside brief-vs-full: the ceiling, since brief training cannot be expected to
order candidates more like one full training than another full training does (kdnas/results/_fidelity_text.py).

Each retraining is a bundle under ``runs/<name>/fidelity/`` (named by trial, epochs and seed), so a fully
trained student can be loaded like any export. The bundle's ``recipe.json`` holding ``full_result`` marks it
done; a bundle without it is continued from its last finished epoch. So a run stopped by Ctrl-C or ``kill -9``
continues where it stopped when the same command is run again. ``fidelity.csv`` (one row per retraining) is
rewritten atomically after every one; ``fidelity.png`` and ``fidelity.md`` follow it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
import pandas as pd

from kdnas.bundle import export_trial, train_bundle
from kdnas.candidates import Entry
from kdnas.config import StudyConfig
from kdnas.core import KdnasError, TrialFailure, atomic_write_bytes
from kdnas.costs import resolve_device
from kdnas.results._fidelity_text import (CSV_NAME, SPLITS, _pct, agreement, brief_vs_second, caption, ceiling_text,
                                          describe, figure, first_seed, markdown, rank_agreement, read_fidelity,
                                          seed_agreement, summary_lines)
from kdnas.results._teachers import label_of
from kdnas.study import candidates_of, open_study, trial_seed

# What kdnas.results._report and the tests read as `fidelity.X`: the texts live in _fidelity_text.py.
__all__ = ["CSV_NAME", "agreement", "brief_vs_second", "caption", "ceiling_text", "describe", "first_seed",
           "markdown", "rank_agreement", "read_fidelity", "run_fidelity", "seed_agreement", "select_trials", "spread",
           "summary_lines", "SPLITS"]

COLUMNS = [
    "trial", "candidate", "seed_index", "pareto", "brief_val_accuracy", "brief_val_half_width", "brief_replicates",
    "full_val_accuracy", "brief_test_accuracy", "full_test_accuracy", "params", "student", "method", "chain",
    "teacher_name", "brief_epochs", "epochs", "assistant_epochs", "seed", "device", "reason", "bundle",
]
MAX_SEEDS = 2
ORDINAL = ("1st", "2nd")


def spread(items: Sequence, m: int) -> list:
    """``m`` of ``items`` (already ranked) evenly spaced from the first to the last; one: the middle one."""
    n = len(items)
    if m >= n:
        return list(items)
    if m <= 0:
        return []
    if m == 1:
        return [items[n // 2]]
    # Steps of (n - 1) / (m - 1) >= 1, so the rounded positions are all different.
    return [items[int(i * (n - 1) / (m - 1) + 0.5)] for i in range(m)]


@dataclass(frozen=True)
class Chosen:
    """A candidate to retrain: its representative trial (the replicate closest to its mean) and its entry."""

    trial: optuna.trial.FrozenTrial
    entry: Entry
    pareto: bool


def select_trials(study: optuna.Study, top: int) -> list[Chosen]:
    """The candidates to retrain, by representative trial number.

    Every candidate on the front of means first (evenly spread by mean validation accuracy when there are more
    than ``top``), then a spread of the others by the same rank, from the best to the worst: the comparison needs
    weak candidates too, not only good ones. Deterministic: ties in accuracy go to the lower trial number."""
    trials = study.get_trials(deepcopy=False)
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    table = candidates_of(study, trials) if done else None  # no trial: maybe no kdnas attribute either
    entries = table.estimates() if table is not None else []
    if len(entries) < 2:
        raise KdnasError(f"study {study.study_name!r} has {done} completed trial{'s' * (done != 1)} of "
                         f"{len(entries)} candidate{'s' * (len(entries) != 1)}; fidelity ranks candidates, so it "
                         "needs at least 2 (run `kdnas search` for more)")
    by_number = {t.number: t for t in trials}
    front = {e.key for e in table.front()}
    chosen = sorted((Chosen(by_number[e.representative()], e, e.key in front) for e in entries),
                    key=lambda c: (-c.entry.estimate.mean, c.trial.number))
    on, off = [c for c in chosen if c.pareto], [c for c in chosen if not c.pareto]
    k = min(top, len(chosen))
    picked = spread(on, k) if len(on) >= k else on + spread(off, k - len(on))
    return sorted(picked, key=lambda c: c.trial.number)


def check_arguments(top: int, epochs: int | None, threads: int | None, seeds: int = 1) -> None:
    problems = []
    if top < 2:
        problems.append(f"--top: `top >= 2` must hold (a ranking needs two candidates), but got top={top}")
    if epochs is not None and epochs < 1:
        problems.append(f"--epochs: `epochs >= 1` must hold, but got epochs={epochs}")
    if threads is not None and threads < 1:
        problems.append(f"--threads: `threads >= 1` must hold, but got threads={threads}")
    if not 1 <= seeds <= MAX_SEEDS:
        problems.append(f"--seeds: `1 <= seeds <= {MAX_SEEDS}` must hold (2: each candidate also under a second "
                        f"seed, for the seed-to-seed ceiling), but got seeds={seeds}")
    if problems:
        raise KdnasError("; ".join(problems))


def bundle_name(number: int, epochs: int | None, seed: int) -> str:
    """One folder per (trial, epochs, seed): a run with other settings never continues another's state."""
    return f"trial_{number}-epochs_{epochs if epochs is not None else 'full'}-seed_{seed}"


def training_seed(c: Chosen, index: int, study_seed: int, seed: int | None) -> int:
    """The seed of a candidate's ``index``-th full training. 0: its trial's own seed (``seed`` None) or the one
    a search with study seed ``seed`` gives that trial; 1: the one a search with study seed ``seed + 1`` (or the
    study's seed + 1) gives it, a different draw for the same trial number."""
    number = c.trial.number
    if index == 0:
        return int(c.trial.user_attrs["seed"]) if seed is None else trial_seed(seed, number)
    first = training_seed(c, 0, study_seed, seed)
    base = (study_seed if seed is None else seed) + index
    s = trial_seed(base, number)
    return s if s != first else trial_seed(base + MAX_SEEDS, number)  # 1 in 2**31: still never the same seed


def _finished(bundle: Path) -> dict[str, Any] | None:
    recipe = bundle / "recipe.json"
    if not recipe.is_file():
        return None
    data = json.loads(recipe.read_text())
    return data if data.get("full_result") else None


def _prepare_bundle(cfg: StudyConfig, study: optuna.Study, number: int, bundle: Path, seed: int) -> None:
    """Export the trial into ``bundle`` with ``seed`` as its training seed; all at once, or not at all."""
    tmp = bundle.with_name(f".{bundle.name}.export")
    export_trial(cfg, study, number, tmp, force=True)
    recipe = json.loads((tmp / "recipe.json").read_text())
    recipe["seed"] = seed
    atomic_write_bytes(tmp / "recipe.json", (json.dumps(recipe, indent=2) + "\n").encode())
    tmp.rename(bundle)


def _row(c: Chosen, index: int, recipe: dict | None, bundle: Path, seed: int, reason: str | None = None) -> dict[str, Any]:
    ua, est = c.trial.user_attrs, c.entry.estimate
    full = (recipe or {}).get("full_result") or {}
    return {
        "trial": c.trial.number, "candidate": c.entry.key, "seed_index": index, "pareto": c.pareto,
        "brief_val_accuracy": est.mean, "brief_val_half_width": est.half_width, "brief_replicates": est.n,
        "full_val_accuracy": full.get("val_accuracy"), "brief_test_accuracy": c.entry.test_mean(),
        "full_test_accuracy": full.get("test_accuracy"),
        "params": ua.get("params"), "student": ua.get("student"), "method": ua.get("method"), "chain": ua.get("chain"),
        "teacher_name": label_of(ua),  # the teacher choice it learned from (blank: labels only)
        # The budget the brief figure is from: the trial's (with rungs, the rung its candidate reached).
        "brief_epochs": ua.get("epochs", (recipe or {}).get("student_train", {}).get("epochs")),
        "epochs": full.get("epochs"),
        "assistant_epochs": full.get("assistant_epochs"), "seed": seed, "device": full.get("device"),
        "reason": reason, "bundle": str(bundle),
    }


def write_outputs(df: pd.DataFrame, out_dir: Path, study_name: str, command: str, selected: int,
                  completed: int, seeds: int = 1) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / CSV_NAME
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    png = figure(df, out_dir / "fidelity.png", f"{study_name}: brief vs full training")
    md = out_dir / "fidelity.md"
    atomic_write_bytes(md, markdown(df, study_name, command, selected, completed, seeds).encode())
    return [csv, png, md]


def run_fidelity(cfg: StudyConfig, top: int, epochs: int | None = None, device: str | None = None,
                 threads: int | None = None, seed: int | None = None, command: str = "kdnas fidelity",
                 say: Callable[[str], None] = print, seeds: int = 1) -> tuple[pd.DataFrame, list[Path]]:
    """Retrain the selected candidates fully (continuing any earlier run) and write the fidelity files.

    ``epochs`` None: each bundle's suggested full recipe (as ``kdnas train``). ``seed`` None: each
    representative trial's own seed; else the seed a search with study seed ``seed`` would give the trial.
    ``seeds`` 2: each candidate also under a second seed (``training_seed``), all first trainings before any
    second one. Returns the rows (one per retraining) and files."""
    check_arguments(top, epochs, threads, seeds)
    device = device or cfg.device
    resolve_device(device)
    study = open_study(cfg, create=False)
    chosen = select_trials(study, top)
    completed = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    threads = threads or cfg.threads
    folder = cfg.run_dir / "fidelity"
    out_dir = cfg.report_dir
    say(f"retraining {len(chosen)} candidates of {cfg.name!r} ({completed} completed trials; "
        f"{sum(c.pareto for c in chosen)} on the front of means){' under 2 seeds each' if seeds == 2 else ''}: "
        f"{', '.join(f'#{c.trial.number}' for c in chosen)}; bundles in {folder}")
    plan = []
    for index in range(seeds):
        for c in chosen:
            s = training_seed(c, index, cfg.seed, seed)
            plan.append((c, index, s, folder / bundle_name(c.trial.number, epochs, s)))
    # Retrainings an earlier run finished count at once: an interrupted run's files still show all that is done.
    rows = {(c.trial.number, i): _row(c, i, recipe, bundle, s) for c, i, s, bundle in plan
            if (recipe := _finished(bundle)) is not None}
    if rows:
        done = sorted(rows, key=lambda k: (k[1], k[0]))  # first trainings, then second seeds
        say(f"done earlier: {', '.join(f'#{n}' + (f' ({ORDINAL[i]} seed)' if i else '') for n, i in done)}")
    todo = [p for p in plan if (p[0].trial.number, p[1]) not in rows]
    paths: list[Path] = []

    def table() -> pd.DataFrame:
        return pd.DataFrame([rows[k] for k in sorted(rows, key=lambda k: (k[1], k[0]))], columns=COLUMNS)

    try:
        for i, (c, index, s, bundle) in enumerate(todo, start=1):
            head = f"[{i}/{len(todo)}] trial {c.trial.number}" + (f" ({ORDINAL[index]} seed)" if seeds > 1 else "")
            if not bundle.is_dir():
                _prepare_bundle(cfg, study, c.trial.number, bundle, s)
            t0 = time.perf_counter()
            recipe, reason = None, None
            try:
                train_bundle(bundle, epochs, device, threads, say=lambda line, h=head: say(f"{h} {line}"))
                recipe = _finished(bundle)
            except TrialFailure as err:  # the full run diverged where the brief one did not: a result too
                reason = f"full training failed: {err.reason}"
            r = rows[(c.trial.number, index)] = _row(c, index, recipe, bundle, s, reason)
            say(f"{head}: brief val {c.entry.estimate.text()} -> full val {_pct(r['full_val_accuracy'])} "
                f"(test {_pct(r['brief_test_accuracy'])} -> {_pct(r['full_test_accuracy'])}), "
                f"{time.perf_counter() - t0:.0f}s" + (f"; {reason}" if reason else ""))
            atomic_write_bytes(out_dir / CSV_NAME, table().to_csv(index=False).encode())
    finally:
        if rows:  # also when interrupted: the files describe what is done so far
            paths = write_outputs(table(), out_dir, cfg.name, command, len(chosen), completed, seeds)
    return table(), paths
