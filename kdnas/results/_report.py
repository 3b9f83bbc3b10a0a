"""Study -> DataFrame -> trials.csv, pareto.png, hypervolume.png, summary.md. Reads only the storage.

A report is made from one snapshot of the study's trials, read once: another process (a search in another
terminal, or this study's workers) may add or finish trials while it is written, and a table, a front and a
hypervolume history taken from different reads do not fit together (a trial that completed between two reads
made the front one entry longer than the table). A trial still RUNNING in the snapshot is on no front.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import logging
import sys
import types
import warnings
from pathlib import Path

import optuna
import pandas as pd

from kdnas.core import atomic_write_bytes
from kdnas.costs import METRIC_NAMES, feasible, hypervolume_history, measured_front, normalise
from kdnas.results import _fidelity as fidelity, _plots as plots
from kdnas.results._html import write_html

COLUMNS = [
    "number", "state", "val_accuracy", "test_accuracy", "params", "macs", "latency_ms", "latency_iqr_ms",
    "student", "method", "chain", "chain_length", "duration_s", "seed", "pareto", "reason", "architecture",
    "method_params", "chain_spec", "score", "latency_median_ms", "latency_stable", "feasible",
]


Trials = list[optuna.trial.FrozenTrial]


def trials_frame(study: optuna.Study, trials: Trials | None = None) -> pd.DataFrame:
    """One row per trial of ``trials`` (default: the study's, read now); ``pareto`` marks the front over the
    study's own objectives."""
    rows = []
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    # A dead worker's trial is retried as a new trial that records the original's number.
    retried = {t.system_attrs["retry_history"][-1]: t.number for t in trials if t.system_attrs.get("retry_history")}
    for t in trials:
        ua = t.user_attrs
        reason = ua.get("fail_reason") or ua.get("prune_reason")
        if t.state.name == "FAIL" and not reason:  # failed by Optuna's heartbeat check: no trace of its worker
            reason = "its worker died or lost the storage (no heartbeat)"
        if t.number in retried:
            reason = f"{reason}; retried as trial {retried[t.number]}"
        cand = ua.get("candidate", {})
        rows.append({
            "number": t.number,
            "state": t.state.name,
            "val_accuracy": ua.get("val_accuracy"),
            "test_accuracy": ua.get("test_accuracy"),
            "params": ua.get("params"),
            "macs": ua.get("macs"),
            "latency_ms": ua.get("latency_ms"),
            "latency_iqr_ms": ua.get("latency_iqr_ms"),
            "student": ua.get("student"),
            "method": ua.get("method"),
            "chain": ua.get("chain"),
            "chain_length": ua.get("chain_length"),
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "seed": ua.get("seed"),
            "pareto": False,
            "reason": reason,
            "architecture": json.dumps(cand.get("student")) if cand else None,
            "method_params": json.dumps(cand.get("method")) if cand else None,
            "chain_spec": json.dumps(cand.get("chain")) if cand else None,
            "score": ua.get("score"),
            "latency_median_ms": ua.get("latency_median_ms"),
            "latency_stable": ua.get("latency_stable"),
            "feasible": feasible(t),
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    done = (df["state"] == "COMPLETE") & df["feasible"]
    if done.any():  # from the rows themselves: the columns are named like the trial attributes
        df.loc[done, "pareto"] = measured_front(df.loc[done].to_dict("records"), study.user_attrs["objectives"])
    return df


def hypervolume_series(study: optuna.Study, df: pd.DataFrame) -> pd.Series | None:
    """Hypervolume of the front of trials 0..n, for every trial number n (kdnas.costs._score has the normalisation);
    None when the teacher's costs, which normalise them, are not stored."""
    objectives = study.user_attrs["objectives"]
    teacher = study.user_attrs.get("teacher") or {}
    if any(o != "accuracy" and teacher.get(METRIC_NAMES[o]) is None for o in objectives):
        return None
    ok = (df["state"] == "COMPLETE") & df["feasible"]
    rows = df.loc[ok].to_dict("records")  # the table's trials, in its order: one history entry per row
    history = hypervolume_history(normalise(rows, objectives, teacher)) if rows else []
    series = pd.Series(float("nan"), index=df["number"].to_numpy(), name="hypervolume")
    series[df.loc[ok, "number"].to_numpy()] = history
    return series.ffill().fillna(0.0)


def _fmt_int(v) -> str:
    return "" if pd.isna(v) else f"{int(v):,}"


def method_table(df: pd.DataFrame) -> list[str]:
    """Markdown lines: trials, best and median validation accuracy of each distillation method."""
    names = df["method_params"].map(lambda j: json.loads(j).get("name") if isinstance(j, str) else None)
    lines = ["", "## Accuracy by method", "",
             "| method | trials | completed | best val acc | median val acc |", "|---|---:|---:|---:|---:|"]
    for name, group in df.assign(method_name=names).dropna(subset=["method_name"]).groupby("method_name"):
        acc = group.loc[group["state"] == "COMPLETE", "val_accuracy"].astype(float)
        best, median = (f"{acc.max():.1%}", f"{acc.median():.1%}") if len(acc) else ("–", "–")
        lines.append(f"| `{name}` | {len(group)} | {len(acc)} | {best} | {median} |")
    return lines


def summary_markdown(study: optuna.Study, df: pd.DataFrame, hv: pd.Series | None = None,
                     fidelity_df: pd.DataFrame | None = None) -> str:
    teacher = study.user_attrs.get("teacher") or {}
    data = study.user_attrs.get("data") or {}
    counts = df["state"].value_counts().to_dict()
    lines = [f"# Study `{study.study_name}`", ""]
    lines.append("Trials: " + ", ".join(f"{counts.get(s, 0)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING") if counts.get(s)))
    if data:
        lines.append(f"Data: `{data.get('dataset')}`, {data.get('train')} train / {data.get('val')} val / "
                     f"{data.get('test')} test images. Candidates are ranked on **val**; test is only reported.")
    if teacher:
        lines.append(f"Teacher: `{json.dumps(teacher.get('spec'))}`, {_fmt_int(teacher.get('params'))} params, "
                     f"{_fmt_int(teacher.get('macs'))} MACs, {teacher.get('latency_ms', float('nan')):.3f} ms, "
                     f"val {teacher.get('val_accuracy', float('nan')):.1%}, test {teacher.get('test_accuracy', float('nan')):.1%}.")
    objectives = study.user_attrs.get("objectives", [])
    if hv is not None and len(hv):
        lines.append(f"Hypervolume: {hv.iloc[-1]:.4f} (objectives {', '.join(objectives)}, each normalised: "
                     f"1 - accuracy, cost / teacher's cost; reference point 1; history in `hypervolume.png`).")
    scored = df.dropna(subset=["score"])
    if study.user_attrs.get("score_mode") == "score" and len(scored):
        best = scored.loc[scored["score"].astype(float).idxmax()]
        lines.append(f"Best combined score: {best['score']:.4f}, trial {int(best['number'])} (`{best['student']}`).")
    lines += ["", f"## Pareto-optimal trials ({', '.join(objectives)})", ""]
    front = df[df["pareto"].astype(bool)].sort_values("params")  # astype: with no trials the column is not bool
    lines.append("| trial | val acc | test acc | params | MACs | latency (ms) | student | method | chain |")
    lines.append("|---:|---:|---:|---:|---:|---:|---|---|---|")
    for _, r in front.iterrows():
        lines.append(f"| {int(r['number'])} | {r['val_accuracy']:.1%} | {r['test_accuracy']:.1%} | {_fmt_int(r['params'])} | "
                     f"{_fmt_int(r['macs'])} | {r['latency_ms']:.3f} | `{r['student']}` | `{r['method']}` | `{r['chain']}` |")
    if not len(front):
        lines.append("| – | no completed trial yet | | | | | | | |")
    lines += method_table(df)
    if fidelity_df is not None:
        lines += fidelity.summary_lines(fidelity_df)
    for state, title in (("FAIL", "Failed trials"), ("PRUNED", "Pruned or rejected trials")):
        rows = df[df["state"] == state]
        if len(rows):
            lines += ["", f"## {title}", ""]
            lines += [f"- trial {int(r['number'])}: {r['reason'] or 'no reason recorded (interrupted?)'}" for _, r in rows.iterrows()]
    lines += ["", "Files: `trials.csv` (every trial), `report.html` (everything in one page), `pareto.png` "
              "(accuracy vs parameters, MACs and latency), `hypervolume.png` (hypervolume of the front, trial by trial), `effects.png` (gain over labels-only by method and chain "
              "length), `importances.png`."]
    return "\n".join(lines) + "\n"


@functools.cache  # the private copy is loaded once per process, not once per report
def _ped_anova_evaluator() -> type:
    """Optuna's default importance evaluator (PED-ANOVA), without the cost of ``import optuna.importance``.

    That package's ``__init__`` also imports the fANOVA evaluators, which import scikit-learn and SciPy's
    statistics at once: 2.4-3.4 s of every report on a 2-core machine, for evaluators kdnas does not use.
    PED-ANOVA needs neither. So its modules are loaded as a private copy under a bare stand-in for the
    package, and every module of that package is taken out of ``sys.modules`` again afterwards: whoever
    imports ``optuna.importance`` later in this process gets the real package, fANOVA included, unchanged.
    When the package is already imported (or its layout differs in another Optuna), the real one is used.
    """
    spec = None if "optuna.importance" in sys.modules else importlib.util.find_spec("optuna.importance")
    if spec is not None and spec.submodule_search_locations:
        before = set(sys.modules)
        stand_in = types.ModuleType("optuna.importance")
        stand_in.__path__ = list(spec.submodule_search_locations)
        sys.modules["optuna.importance"] = stand_in
        try:
            return importlib.import_module("optuna.importance._ped_anova").PedAnovaImportanceEvaluator
        except (ImportError, AttributeError):
            pass  # another layout: the real package below
        finally:
            for name in [n for n in sys.modules if n not in before and (n == "optuna.importance"
                                                                          or n.startswith("optuna.importance."))]:
                del sys.modules[name]
    from optuna.importance import PedAnovaImportanceEvaluator

    return PedAnovaImportanceEvaluator


def importances(study: optuna.Study, trials: Trials | None = None) -> dict[str, float]:
    """Parameter importances for validation accuracy by Optuna's default evaluator (PED-ANOVA), normalised
    to sum to 1 as ``optuna.importance.get_param_importances`` does; {} when too few trials. With ``trials``
    (a snapshot), of those trials only."""
    done = [t for t in (study.get_trials(deepcopy=False) if trials is None else trials)
            if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < 4:
        return {}
    if trials is not None:
        study = _in_memory(study, done)
    try:
        with warnings.catch_warnings():
            # PED-ANOVA ranks what leads to LOW target values, hence the minus sign; its reminder of that, and
            # its note on sparsely sampled choices, would print on every report.
            warnings.simplefilter("ignore", UserWarning)
            raw = _ped_anova_evaluator()().evaluate(study, target=lambda t: -t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError):  # e.g. every trial sampled the same values
        return {}
    total = sum(raw.values())
    return {k: (v / total if total else 1 / len(raw)) for k, v in raw.items()}


def _in_memory(study: optuna.Study, trials: Trials) -> optuna.Study:
    """A copy of ``study`` in memory holding only ``trials``: for an evaluator that reads a study, not a list."""
    storage = optuna.storages.InMemoryStorage()
    quiet = logging.getLogger("optuna.storages._in_memory")  # its "new study created in memory" line
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        storage.create_new_study(study.directions, study.study_name)
    finally:
        quiet.setLevel(level)
    copy = optuna.load_study(study_name=study.study_name, storage=storage)
    copy.add_trials(trials)
    return copy


def write_report(study: optuna.Study, out_dir: Path, fidelity_csv: Path | None = None) -> list[Path]:
    """Write the report files into ``out_dir``; return their paths. With a ``fidelity.csv`` (``kdnas fidelity``;
    by default the one in ``out_dir``), ``fidelity.png`` and a fidelity section are added."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)  # the one snapshot every file is made from (module docstring)
    df = trials_frame(study, trials)
    name = study.study_name
    csv = out_dir / "trials.csv"
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    teacher = study.user_attrs.get("teacher")
    figures = [
        ("Validation accuracy against each cost", plots.plot_pareto([(name, df, teacher)], out_dir / "pareto.png",
                                                                     f"{name}: validation accuracy vs cost")),
        ("Did distillation and assistants help?", plots.plot_effects(df, out_dir / "effects.png", f"{name}: effects")),
        ("Parameter importances", plots.plot_importances(importances(study, trials), out_dir / "importances.png",
                                                         f"{name}: what matters for validation accuracy")),
    ]
    hv = hypervolume_series(study, df)
    if hv is not None:
        figures.insert(1, ("Hypervolume over trials", plots.plot_hypervolume(
            hv, study.user_attrs["objectives"], out_dir / "hypervolume.png", f"{name}: hypervolume")))
    fid = fidelity.read_fidelity(fidelity_csv if fidelity_csv is not None else out_dir / fidelity.CSV_NAME)
    if fid is not None:
        figures.append((fidelity.caption(fid), plots.plot_fidelity(fid, fidelity.agreement(fid), out_dir / "fidelity.png",
                                                                   f"{name}: brief vs full training")))
    summary = summary_markdown(study, df, hv, fid)
    md = out_dir / "summary.md"
    atomic_write_bytes(md, summary.encode())
    intro = [line.replace("**", "").replace("`", "") for line in summary.splitlines()[1:6] if line and not line.startswith("#")]
    page = write_html(out_dir / "report.html", f"kdnas study {name}", intro, df, figures)
    return [csv, md, page, *(path for _, path in figures)]


def compare(studies: list[optuna.Study], out_dir: Path) -> list[Path]:
    """Several studies' fronts overlaid in one set of plots, and their trials in one CSV."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = [(s.study_name, trials_frame(s), s.user_attrs.get("teacher")) for s in studies]
    names = ", ".join(n for n, _, _ in frames)
    png = plots.plot_pareto(frames, out_dir / "pareto.png", f"{names}: validation accuracy vs cost")
    both = pd.concat([df.assign(study=n) for n, df, _ in frames], ignore_index=True)
    csv = out_dir / "trials.csv"
    atomic_write_bytes(csv, both.to_csv(index=False).encode())
    intro = [f"{n}: {int((df['state'] == 'COMPLETE').sum())} completed trials, {int(df['pareto'].sum())} Pareto-optimal"
             for n, df, _ in frames]
    page = write_html(out_dir / "report.html", f"kdnas comparison: {names}", intro,
                      both.assign(student=both["study"] + ": " + both["student"].fillna("")), [("Fronts", png)])
    return [csv, page, png]
