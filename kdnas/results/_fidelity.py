"""`kdnas fidelity`: how well the search's brief training ranks candidates, measured by training some fully.

A search trains each candidate for a few epochs only: a proxy. This retrains K completed trials with the
full budget, exactly as ``kdnas train`` trains an exported bundle (the whole chain, assistants first, then
the student with the trial's method, hyperparameters and seed), and compares the two rankings on the
validation split with Kendall's tau and Spearman's rho; test accuracy is shown beside them, never used.

Each retrained trial is a bundle under ``runs/<name>/fidelity/`` (named by trial, epochs and seed), so a
fully trained student can be loaded like any export. The bundle's ``recipe.json`` holding ``full_result``
marks the trial done; a bundle without it is continued from its last finished epoch. So a run stopped by
Ctrl-C or ``kill -9`` continues where it stopped when the same command is run again. ``fidelity.csv`` (one
row per retrained trial) is rewritten atomically after every trial; ``fidelity.png`` and ``fidelity.md``
follow it.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
import pandas as pd

from kdnas.bundle import export_trial, train_bundle
from kdnas.config import StudyConfig
from kdnas.core import KdnasError, TrialFailure, atomic_write_bytes
from kdnas.costs import resolve_device
from kdnas.results import _plots as plots
from kdnas.study import front_trials, open_study, trial_seed

CSV_NAME = "fidelity.csv"
COLUMNS = [
    "trial", "pareto", "brief_val_accuracy", "full_val_accuracy", "brief_test_accuracy", "full_test_accuracy",
    "params", "student", "method", "chain", "brief_epochs", "epochs", "assistant_epochs", "seed", "device",
    "reason", "bundle",
]
SPLITS = {"val": "validation", "test": "test"}


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


def select_trials(study: optuna.Study, top: int) -> tuple[list[optuna.trial.FrozenTrial], set[int]]:
    """The trials to retrain (by number) and the numbers of those on the Pareto front.

    Every Pareto-optimal trial first (evenly spread by brief validation accuracy when there are more than
    ``top``), then a spread of the others by the same rank, from the best to the worst: the comparison needs
    weak candidates too, not only good ones. Deterministic: ties in accuracy go to the lower trial number."""
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("val_accuracy") is not None]
    if len(done) < 2:
        raise KdnasError(f"study {study.study_name!r} has {len(done)} completed trial{'s' * (len(done) != 1)}; "
                         "fidelity ranks trials, so it needs at least 2 (run `kdnas search` for more)")
    front = {t.number for t in front_trials(study)}

    def ranked(trials: list) -> list:
        return sorted(trials, key=lambda t: (-t.user_attrs["val_accuracy"], t.number))

    on, off = ranked([t for t in done if t.number in front]), ranked([t for t in done if t.number not in front])
    k = min(top, len(done))
    chosen = spread(on, k) if len(on) >= k else on + spread(off, k - len(on))
    return sorted(chosen, key=lambda t: t.number), front


def check_arguments(top: int, epochs: int | None, threads: int | None) -> None:
    problems = []
    if top < 2:
        problems.append(f"--top: `top >= 2` must hold (a ranking needs two trials), but got top={top}")
    if epochs is not None and epochs < 1:
        problems.append(f"--epochs: `epochs >= 1` must hold, but got epochs={epochs}")
    if threads is not None and threads < 1:
        problems.append(f"--threads: `threads >= 1` must hold, but got threads={threads}")
    if problems:
        raise KdnasError("; ".join(problems))


def bundle_name(number: int, epochs: int | None, seed: int) -> str:
    """One folder per (trial, epochs, seed): a run with other settings never continues another's state."""
    return f"trial_{number}-epochs_{epochs if epochs is not None else 'full'}-seed_{seed}"


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


def _row(t: optuna.trial.FrozenTrial, front: set[int], recipe: dict | None, bundle: Path, seed: int,
         reason: str | None = None) -> dict[str, Any]:
    ua = t.user_attrs
    full = (recipe or {}).get("full_result") or {}
    return {
        "trial": t.number, "pareto": t.number in front,
        "brief_val_accuracy": ua["val_accuracy"], "full_val_accuracy": full.get("val_accuracy"),
        "brief_test_accuracy": ua.get("test_accuracy"), "full_test_accuracy": full.get("test_accuracy"),
        "params": ua.get("params"), "student": ua.get("student"), "method": ua.get("method"), "chain": ua.get("chain"),
        "brief_epochs": (recipe or {}).get("student_train", {}).get("epochs"), "epochs": full.get("epochs"),
        "assistant_epochs": full.get("assistant_epochs"), "seed": seed, "device": full.get("device"),
        "reason": reason, "bundle": str(bundle),
    }


def rank_agreement(brief: Sequence[float], full: Sequence[float]) -> dict[str, float]:
    """Kendall's tau-b and Spearman's rho (scipy.stats) with their p-values; NaN where undefined (fewer
    than two trials, or one side all equal)."""
    from scipy import stats

    pairs = [(b, f) for b, f in zip(brief, full) if not (pd.isna(b) or pd.isna(f))]
    nan = float("nan")
    out = {"n": len(pairs), "tau": nan, "tau_p": nan, "rho": nan, "rho_p": nan}
    if len(pairs) < 2:
        return out
    x, y = [p[0] for p in pairs], [p[1] for p in pairs]
    with warnings.catch_warnings():  # constant input: scipy warns and returns NaN, which we report as such
        warnings.simplefilter("ignore")
        tau = stats.kendalltau(x, y)
        rho = stats.spearmanr(x, y)
    out.update(tau=float(tau.statistic), tau_p=float(tau.pvalue), rho=float(rho.statistic), rho_p=float(rho.pvalue))
    return out


def agreement(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``rank_agreement`` of brief against full accuracy, per split (``val``, ``test``)."""
    return {s: rank_agreement(df[f"brief_{s}_accuracy"].tolist(), df[f"full_{s}_accuracy"].tolist()) for s in SPLITS}


def _num(v: float, fmt: str = ".2f") -> str:
    return "undefined" if math.isnan(v) else format(v, fmt)


def describe(stats: dict[str, float]) -> str:
    """``Kendall tau 0.71 (p 0.01), Spearman rho 0.86 (p 0.006) over 8 trials``."""
    return (f"Kendall tau {_num(stats['tau'])} (p {_num(stats['tau_p'], '.2g')}), Spearman rho {_num(stats['rho'])} "
            f"(p {_num(stats['rho_p'], '.2g')}) over {stats['n']} trials")


def read_fidelity(path: Path) -> pd.DataFrame | None:
    """The rows of a ``fidelity.csv``, or None when there is none (or it has no row)."""
    if not Path(path).is_file():
        return None
    df = pd.read_csv(path)
    return df if len(df) else None


def summary_lines(df: pd.DataFrame) -> list[str]:
    """The fidelity section of ``summary.md``."""
    st = agreement(df)
    done = df.dropna(subset=["full_val_accuracy"])
    epochs = ", ".join(str(int(e)) for e in sorted(done["epochs"].dropna().unique())) or "?"
    return ["", "## Does brief training rank like full training?", "",
            f"{len(done)} trials retrained with the full budget ({epochs} epochs; `kdnas fidelity`, details in "
            f"`fidelity.md`). Brief against full **validation** accuracy: {describe(st['val'])}. "
            f"Test accuracy (reported only): {describe(st['test'])}. Plot: `fidelity.png`."]


def caption(df: pd.DataFrame) -> str:
    st = agreement(df)["val"]
    return (f"Brief against full training: Kendall tau {_num(st['tau'])}, Spearman rho {_num(st['rho'])} "
            f"on validation accuracy, {st['n']} trials")


def _pct(v) -> str:
    return "–" if pd.isna(v) else f"{100 * float(v):.1f}%"


def markdown(df: pd.DataFrame, study_name: str, command: str, selected: int, completed: int) -> str:
    st = agreement(df)
    done = df.dropna(subset=["full_val_accuracy"]).sort_values(["brief_val_accuracy", "trial"], ascending=[False, True])
    lines = [f"# Fidelity of brief training: study `{study_name}`", "", f"Command: `{command}`", ""]
    missing = selected - len(df)
    lines.append(f"{len(done)} of {selected} selected trials (of {completed} completed) retrained from scratch with "
                 f"the full budget" + (f"; {missing} not yet: run the command again to continue" if missing else "")
                 + ". Pareto-optimal trials first, then a spread of the others by brief validation accuracy.")
    lines += ["", "| accuracy compared | Kendall tau | Spearman rho | trials |", "|---|---:|---:|---:|"]
    for s, name in SPLITS.items():
        x = st[s]
        use = "used for selection" if s == "val" else "reported only"
        lines.append(f"| {name}, brief vs full ({use}) | {_num(x['tau'])} (p {_num(x['tau_p'], '.2g')}) | "
                     f"{_num(x['rho'])} (p {_num(x['rho_p'], '.2g')}) | {x['n']} |")
    if len(done) >= 2:
        best_brief = done.iloc[0]
        top = done["full_val_accuracy"].max()
        best_full = ", ".join(f"#{int(n)}" for n in sorted(done.loc[done["full_val_accuracy"] == top, "trial"]))
        lines += ["", f"The best trial by brief validation accuracy, #{int(best_brief['trial'])}, reaches "
                      f"{_pct(best_brief['full_val_accuracy'])} when fully trained; the best when fully trained: "
                      f"{best_full} at {_pct(top)}. Mean change from brief to "
                      f"full validation accuracy: {100 * (done['full_val_accuracy'] - done['brief_val_accuracy']).mean():+.1f} points."]
    lines += ["", "Tau is the share of trial pairs that the two trainings order alike minus the share they order "
                  "differently (1: the same ranking, 0: unrelated, -1: reversed); rho is the correlation of the two "
                  "rankings. With few trials both are noisy: the p-values say how often unrelated rankings would "
                  "agree this well by chance.", "",
              "| trial | Pareto | brief val | full val | brief test | full test | params | student | method | chain | epochs |",
              "|---:|:---:|---:|---:|---:|---:|---:|---|---|---|---:|"]
    for _, r in df.sort_values(["brief_val_accuracy", "trial"], ascending=[False, True]).iterrows():
        epochs = "" if pd.isna(r["epochs"]) else str(int(r["epochs"]))
        note = f" ({r['reason']})" if isinstance(r["reason"], str) and r["reason"] else ""
        lines.append(f"| {int(r['trial'])} | {'yes' if r['pareto'] else ''} | {_pct(r['brief_val_accuracy'])} | "
                     f"{_pct(r['full_val_accuracy'])}{note} | {_pct(r['brief_test_accuracy'])} | "
                     f"{_pct(r['full_test_accuracy'])} | {int(r['params']):,} | `{r['student']}` | `{r['method']}` | "
                     f"`{r['chain']}` | {epochs} |")
    lines += ["", "Files: `fidelity.csv` (these rows), `fidelity.png` (full against brief accuracy). Each fully "
                  "trained student is a bundle in the `bundle` column's folder: `kdnas.load_student(FOLDER)`."]
    return "\n".join(lines) + "\n"


def write_outputs(df: pd.DataFrame, out_dir: Path, study_name: str, command: str, selected: int,
                  completed: int) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv = out_dir / CSV_NAME
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    png = plots.plot_fidelity(df, agreement(df), out_dir / "fidelity.png", f"{study_name}: brief vs full training")
    md = out_dir / "fidelity.md"
    atomic_write_bytes(md, markdown(df, study_name, command, selected, completed).encode())
    return [csv, png, md]


def run_fidelity(cfg: StudyConfig, top: int, epochs: int | None = None, device: str | None = None,
                 threads: int | None = None, seed: int | None = None, command: str = "kdnas fidelity",
                 say: Callable[[str], None] = print) -> tuple[pd.DataFrame, list[Path]]:
    """Retrain the selected trials fully (continuing any earlier run) and write the fidelity files.

    ``epochs`` None: each bundle's suggested full recipe (as ``kdnas train``). ``seed`` None: each trial's own
    seed; else the seed a search with study seed ``seed`` would give the trial. Returns the rows and files."""
    check_arguments(top, epochs, threads)
    device = device or cfg.device
    resolve_device(device)
    study = open_study(cfg, create=False)
    chosen, front = select_trials(study, top)
    completed = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))
    threads = threads or cfg.threads
    folder = cfg.run_dir / "fidelity"
    out_dir = cfg.report_dir
    say(f"retraining {len(chosen)} of {completed} completed trials of {cfg.name!r} "
        f"({sum(t.number in front for t in chosen)} Pareto-optimal): {', '.join(f'#{t.number}' for t in chosen)}; "
        f"bundles in {folder}")
    plan = []
    for t in chosen:
        s = int(t.user_attrs["seed"]) if seed is None else trial_seed(seed, t.number)
        plan.append((t, s, folder / bundle_name(t.number, epochs, s)))
    # Trials an earlier run finished count at once: an interrupted run's files still show all that is done.
    rows = {t.number: _row(t, front, recipe, bundle, s) for t, s, bundle in plan
            if (recipe := _finished(bundle)) is not None}
    if rows:
        say(f"done earlier: {', '.join(f'#{n}' for n in sorted(rows))}")
    todo = [p for p in plan if p[0].number not in rows]
    paths: list[Path] = []

    def table() -> pd.DataFrame:
        return pd.DataFrame([rows[n] for n in sorted(rows)], columns=COLUMNS)

    try:
        for i, (t, s, bundle) in enumerate(todo, start=1):
            head = f"[{i}/{len(todo)}] trial {t.number}"
            if not bundle.is_dir():
                _prepare_bundle(cfg, study, t.number, bundle, s)
            t0 = time.perf_counter()
            recipe, reason = None, None
            try:
                train_bundle(bundle, epochs, device, threads, say=lambda line, h=head: say(f"{h} {line}"))
                recipe = _finished(bundle)
            except TrialFailure as err:  # the full run diverged where the brief one did not: a result too
                reason = f"full training failed: {err.reason}"
            r = rows[t.number] = _row(t, front, recipe, bundle, s, reason)
            say(f"{head}: brief val {_pct(r['brief_val_accuracy'])} -> full val {_pct(r['full_val_accuracy'])} "
                f"(test {_pct(r['brief_test_accuracy'])} -> {_pct(r['full_test_accuracy'])}), "
                f"{time.perf_counter() - t0:.0f}s" + (f"; {reason}" if reason else ""))
            atomic_write_bytes(out_dir / CSV_NAME, table().to_csv(index=False).encode())
    finally:
        if rows:  # also when interrupted: the files describe what is done so far
            paths = write_outputs(table(), out_dir, cfg.name, command, len(chosen), completed)
    return table(), paths

