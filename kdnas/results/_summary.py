"""``summary.md``: the study in a page. Every accuracy is a candidate's mean with its 90 % half-width and the
replicate count (kdnas/results/_candidates.py), and the front is the front of the candidates' means."""

from __future__ import annotations

import json

import optuna
import pandas as pd

from kdnas.candidates import LEVEL
from kdnas.results import _effects as effects, _fidelity_text as fidelity, _rungs_text as rungs
from kdnas.results._candidates import Snapshot, pm, separability
from kdnas.results._efficiency_text import efficiency_lines
from kdnas.results._teacher_effects import section_lines as teacher_lines
from kdnas.results._teachers import choices_line, reference


def _fmt_int(v) -> str:
    return "" if pd.isna(v) else f"{int(v):,}"


def _teacher(v) -> str:
    return "labels only" if v is None or pd.isna(v) else f"`{v}`"


def _pct(v) -> str:
    return "–" if v is None or pd.isna(v) else f"{float(v):.1%}"


def trials_line(df: pd.DataFrame) -> str:
    """``Trials: 12 complete (2 answered from replicates, not trained), 1 pruned``."""
    counts = df["state"].value_counts().to_dict()
    reused = int((df["state"].eq("COMPLETE") & df["reused"].fillna(False).astype(bool)).sum())
    parts = []
    for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING"):
        if counts.get(s):
            extra = f" ({reused} answered from replicates, not trained)" if s == "COMPLETE" and reused else ""
            parts.append(f"{counts[s]} {s.lower()}{extra}")
    return "Trials: " + ", ".join(parts)


def candidates_line(snap: Snapshot) -> str:
    """How many candidates, how replicated, and the study's overdispersion ratio."""
    table = snap.table
    entries = table.estimates()
    # With rungs, a promotion is a training too; replicates and the ratio are counted at the first rung.
    first = snap.ladder.first if snap.rungs else table
    replicated = sum(e.n >= 2 for e in first.estimates())
    promoted, at = "", ""
    if snap.rungs:
        promoted = f" ({table.trainings - first.trainings} of them promotions to a longer budget)"
        at = " at the first rung"
    return (f"Candidates: {len(entries)} from {table.trainings} trainings{promoted}, {replicated} of them "
            f"replicated (2+ seeds){at}. Overdispersion ratio {table.ratio:.2f}: the seed variance in units of the "
            f"binomial variance of {table.n_val} validation images, pooled over the replicated candidates (1 before "
            f"any is replicated). ± is the half-width of a {100 * LEVEL:.0f} % interval; (kx): replicates.")


def front_table(snap: Snapshot, objectives: list[str]) -> list[str]:
    cands = snap.candidates()
    front = cands[cands["pareto"].astype(bool)].sort_values(["params", "representative"])
    lines = ["", f"## Pareto-optimal candidates ({', '.join(objectives)}; on means)", "",
             "Trial: the replicate closest to the mean (what `kdnas export --trial` and `--pick` export). *Not "
             "separable from #N*: its interval overlaps that of a front member at least as cheap in every cost, so "
             "the study cannot yet say it is the more accurate one.", "",
             "| trial | val acc | replicates | test acc | params | MACs | latency (ms) | student | method | chain | separable |",
             "|---:|---:|---|---:|---:|---:|---:|---|---|---|---|"]
    budget = snap.rungs  # a budget column: with rungs, members' figures are from different budgets
    if budget:
        lines[-4] += (" Budget: the epochs the member's figures are from (the highest rung it reached); two "
                      "members are compared at the highest budget both reached.")
        lines[-2] = lines[-2].replace("| val acc |", "| budget | val acc |")
        lines[-1] = lines[-1].replace("|---:|---:|", "|---:|---:|---:|", 1)
    many = len(snap.choices) > 1  # a teacher column where there is a choice of teacher
    if many:
        lines[-2] = lines[-2].replace("| chain |", "| chain | teacher |")
        lines[-1] += "---|"
    entries = snap.table.entries
    for _, r in front.iterrows():
        e = entries[r["candidate"]]
        trials = " ".join(f"#{n}" for n in e.trials)
        test = "–" if pd.isna(r["test_accuracy_mean"]) else \
            f"{r['test_accuracy_mean']:.1%} ± {100 * r['test_accuracy_half_width']:.1f}"
        lines.append(f"| {int(r['representative'])} | " + (f"{int(r['epochs'])} ep | " if budget else "") +
                     f"{pm(e.estimate)} | {e.n}x ({trials}) | {test} | "
                     f"{_fmt_int(r['params'])} | {_fmt_int(r['macs'])} | {r['latency_ms']:.3f} | `{r['student']}` | "
                     f"`{r['method']}` | `{r['chain']}` | " + (f"{_teacher(r['teacher_name'])} | " if many else "") +
                     f"{separability(r)} |")
    if not len(front):
        lines.append("| – | no completed trial yet | | | | | | | | | |" + (" |" if budget else "") +
                     (" |" if many else ""))
    return lines


def method_table(df: pd.DataFrame, snap: Snapshot) -> list[str]:
    """Markdown lines: per distillation method, its trials, its candidates, the best candidate (mean ± half-width,
    replicates) and the median of its candidates' means."""
    df = df[~df["reused"].fillna(False).astype(bool)]  # an answer from replicates is no trial of the method's
    names = df["method_params"].map(lambda j: json.loads(j).get("name") if isinstance(j, str) else None)
    by_method: dict[str, list] = {}
    for e in snap.table.estimates():
        by_method.setdefault(effects.method_name(e), []).append(e)
    # With rungs: the best at the longest budget any of the method's candidates reached (a mean after 2 epochs
    # does not rank against one after 18), the median at the first budget, where every candidate is measured.
    first = {e.key: e for e in snap.ladder.first.estimates()} if snap.rungs else {}
    note = (f" Trials: at every rung (a promotion is a trial). Best: at the longest budget the method's candidates "
            f"reached; median: at the first budget, {snap.ladder.epochs[0]} epochs, which every candidate "
            "reached." if snap.rungs else "")
    lines = ["", "## Accuracy by method", "", "Trials answered from replicates are not counted here." + note, "",
             "| method | trials | completed | candidates | best candidate val acc | median of candidates' means |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, group in df.assign(method_name=names).dropna(subset=["method_name"]).groupby("method_name"):
        done = int((group["state"] == "COMPLETE").sum())
        cands = by_method.get(name, [])
        if cands:
            top = max(cands, key=lambda e: (e.rung, e.estimate.mean, -e.estimate.se))
            best = top.estimate.text() + snap.budget(top)
            means = [(first[e.key] if e.key in first else e).estimate.mean for e in cands]
            median = f"{pd.Series(means).median():.1%}"
        else:
            best, median = "–", "–"
        lines.append(f"| `{name}` | {len(group)} | {done} | {len(cands)} | {best} | {median} |")
    return lines


def summary_markdown(snap: Snapshot, df: pd.DataFrame, hv: pd.Series | None = None,
                     fidelity_df: pd.DataFrame | None = None) -> str:
    study: optuna.Study = snap.study
    teacher = study.user_attrs.get("teacher") or {}
    data = study.user_attrs.get("data") or {}
    lines = [f"# Study `{study.study_name}`", "", trials_line(df), candidates_line(snap)]
    if snap.rungs:
        lines.append(rungs.intro_line(snap.ladder))
    if data:
        lines.append(f"Data: `{data.get('dataset')}`, {data.get('train')} train / {data.get('val')} val / "
                     f"{data.get('test')} test images. Candidates are ranked on **val**; test is only reported.")
    labels = snap.choices
    if len(labels) > 1:
        lines.append(choices_line(snap.teachers, labels))
    elif teacher:
        lines.append(f"Teacher: `{json.dumps(teacher.get('spec'))}`, {_fmt_int(teacher.get('params'))} params, "
                     f"{_fmt_int(teacher.get('macs'))} MACs, {teacher.get('latency_ms', float('nan')):.3f} ms, "
                     f"val {_pct(teacher.get('val_accuracy'))}, test {_pct(teacher.get('test_accuracy'))} (one "
                     f"training).")
    objectives = study.user_attrs.get("objectives", [])
    if hv is not None and len(hv):
        at = "; each candidate at the highest budget it reached" if snap.rungs else ""
        lines.append(f"Hypervolume: {hv.iloc[-1]:.4f} (of the front of means{at}; objectives {', '.join(objectives)}, "
                     "each normalised: 1 - accuracy, cost / teacher's cost; reference point 1; history in "
                     "`hypervolume.png`).")
    scored = df[df["state"].eq("COMPLETE") & ~df["reused"].fillna(False).astype(bool)].dropna(subset=["score"])
    if study.user_attrs.get("score_mode") == "score" and len(scored):
        best = scored.loc[scored["score"].astype(float).idxmax()]
        lines.append(f"Best combined score: {best['score']:.4f}, trial {int(best['number'])} (`{best['student']}`; "
                     "one training, not a mean).")
    lines += front_table(snap, objectives)
    lines += method_table(df, snap)
    if snap.rungs:
        lines += rungs.ladder_lines(snap.ladder)
    lines += effects.summary_lines(snap.table, labels)
    lines += teacher_lines(snap.table, labels, reference(snap.teachers))
    lines += efficiency_lines(snap)
    if fidelity_df is not None:
        lines += fidelity.summary_lines(fidelity_df)
    for state, title in (("FAIL", "Failed trials"), ("PRUNED", "Pruned or rejected trials")):
        rows = df[df["state"] == state]
        if len(rows):
            lines += ["", f"## {title}", ""]
            lines += [f"- trial {int(r['number'])}: {r['reason'] or 'no reason recorded (interrupted?)'}" for _, r in rows.iterrows()]
    lines += ["", "Files: `trials.csv` (every trial: its own measurement, its candidate, replicate number), "
              "`candidates.csv` (every candidate: mean, standard error, 90 % interval, replicates), `report.html` "
              "(everything in one page), `pareto.png` (candidates' means and 90 % intervals against parameters, MACs "
              "and latency), `hypervolume.png` (hypervolume of the front of means, trial by trial), `effects.png` "
              "(gain over labels-only by method and chain length" + (", by teacher, and teacher against teacher" if
              len(labels) > 1 else "") + ", with intervals), `importances.png`."]
    return "\n".join(lines) + "\n"
