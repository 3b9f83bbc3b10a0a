"""Study -> trials.csv, candidates.csv, summary.md, report.html and the figures. Reads only the storage.

Two tables: ``trials.csv`` (one row per trial, its own measurement) and ``candidates.csv`` (one row per
candidate: the mean over its replicates, standard error, 90 % interval, replicates; kdnas/candidates). The
front, the figures and the summary are computed on the candidates' means.

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

import numpy as np
import optuna
import pandas as pd

from kdnas.candidates import EPOCHS, INTENSIFY, PROMOTED_FROM, REUSED, RUN, RUNG, trial_key
from kdnas.core import atomic_write_bytes
from kdnas.costs import EFFICIENCY_KEYS, METRIC_NAMES, feasible, hypervolume, normalise, pareto_mask, recorded_efficiency
from kdnas.results import _effects as effects, _fidelity_text as fidelity, _plots as plots, _rungs_text as rungs
from kdnas.results._candidates import Snapshot
from kdnas.results._efficiency import score_of, trial_metrics
from kdnas.results._efficiency_text import efficiency_lines
from kdnas.results._teacher_effects import section_lines as teacher_lines
from kdnas.results._teachers import label_of, reference
from kdnas.results._html import write_html
from kdnas.results._summary import summary_markdown

COLUMNS = [
    "number", "state", "val_accuracy", "test_accuracy", "params", "macs", "latency_ms", "latency_iqr_ms",
    "student", "method", "chain", "chain_length", "duration_s", "seed", "pareto", "reason", "architecture",
    "method_params", "chain_spec", "score", "latency_median_ms", "latency_stable", "feasible",
    "candidate", "replicate", "reused", "intensify", "rung", "epochs", "run", "promoted_from",
    "teacher_name", *EFFICIENCY_KEYS,
]


Trials = list[optuna.trial.FrozenTrial]


def trials_frame(study: optuna.Study, trials: Trials | None = None, snap: Snapshot | None = None) -> pd.DataFrame:
    """One row per trial of ``trials`` (default: the study's, read now), each with its own measurement.

    ``candidate`` names the trial's candidate (``candidates.csv`` has its mean and interval), ``replicate`` which
    replicate it is, ``reused`` whether it was answered from the candidate's replicates without training (its
    ``val_accuracy`` is then the candidate's mean), ``intensify`` why it re-evaluated a candidate. ``pareto``:
    the trial's candidate is on the front of the candidates' means (every replicate of a front candidate is
    marked), over the study's measured objectives. ``snap``: the report's snapshot (built here when absent).

    Every figure says its budget: ``epochs``, the epochs the trial trained to. With rungs (``search.rungs``) also
    ``rung`` (1-based, as ``candidates.csv`` and the progress lines count them), ``run`` (the trial that started
    the run: one replicate's trials across rungs share it) and ``promoted_from`` (the trial whose checkpoint it
    continued); ``pareto`` then marks only the trials at the rung its candidate's front figures are from.

    ``teacher_name``: the trial's teacher choice (blank: labels only), and its distillation efficiency against it
    (``retained``, ``compression_*``, ``efficiency``; kdnas/results/_efficiency.py)."""
    snap = snap or Snapshot.of(study, trials)
    attrs = study.user_attrs  # once: each read is a storage query and a deep copy
    objectives, score, teachers = attrs.get("objectives", []), score_of(attrs), snap.teachers
    trials = snap.trials
    front = snap.front_keys
    recipe = snap.table.recipe
    at = {e.key: e.rung for e in snap.table.estimates()} if snap.rungs else {}
    rows = []
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
        key = trial_key(ua, recipe)
        ok = t.state.name == "COMPLETE" and feasible(t)
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
            "pareto": bool(ok and key in front and (not at or int(ua.get(RUNG, 0)) == at.get(key))),
            "reason": reason,
            "architecture": json.dumps(cand.get("student")) if cand else None,
            "method_params": json.dumps(cand.get("method")) if cand else None,
            "chain_spec": json.dumps(cand.get("chain")) if cand else None,
            "score": ua.get("score"),
            "latency_median_ms": ua.get("latency_median_ms"),
            "latency_stable": ua.get("latency_stable"),
            "feasible": feasible(t),
            "candidate": key,
            "replicate": ua.get("replicate"),
            "reused": bool(ua.get(REUSED)),
            "intensify": ua.get(INTENSIFY),
            "rung": int(ua[RUNG]) + 1 if snap.rungs and RUNG in ua else None,
            "epochs": ua.get(EPOCHS),
            "run": ua.get(RUN) if snap.rungs else None,
            "promoted_from": ua.get(PROMOTED_FROM),
            **(trial_metrics(ua, teachers, objectives, score) if ok else
               {"teacher_name": label_of(ua), **recorded_efficiency(ua)}),
        })
    # Whole numbers stay whole in the CSV (a column with gaps would be written as 1.0, 2.0).
    return pd.DataFrame(rows, columns=COLUMNS).astype({c: "Int64" for c in ("rung", "epochs", "run", "promoted_from")})


def hypervolume_series(study: optuna.Study, df: pd.DataFrame) -> pd.Series | None:
    """Hypervolume of the front of the candidates' means after trials 0..n, for every trial number n
    (kdnas.costs._score has the normalisation); None when the teacher's costs, which normalise them, are not stored.

    On means, so that the last value is the hypervolume of the front the report shows (a front of single
    measurements would reward the luckiest draws): a trial that trains a candidate again moves its mean, which
    can also shrink the front. Trials answered from replicates change no mean; a trial without a candidate
    (a study made outside kdnas) is a candidate of its own. With rungs (a ``rung`` column), each candidate counts
    with its mean at the highest rung it reached so far (a brief figure never pooled with a longer one)."""
    objectives = study.user_attrs["objectives"]
    teacher = study.user_attrs.get("teacher") or {}
    if any(o != "accuracy" and teacher.get(METRIC_NAMES[o]) is None for o in objectives):
        return None
    reused = df["reused"].fillna(False).astype(bool) if "reused" in df else False
    ok = (df["state"] == "COMPLETE") & df["feasible"] & df["val_accuracy"].notna() & ~reused
    rows = df.loc[ok].to_dict("records")  # the table's trials, in its order: one history entry per row
    keys = [r.get("candidate") if isinstance(r.get("candidate"), str) else f"#{r['number']}" for r in rows]
    rungs = None
    if "rung" in df and df.loc[ok, "rung"].notna().any():
        rungs = [0 if pd.isna(r["rung"]) else int(r["rung"]) for r in rows]
    history = means_history(keys, normalise(rows, objectives, teacher), rungs) if rows else []
    series = pd.Series(float("nan"), index=df["number"].to_numpy(), name="hypervolume")
    series[df.loc[ok, "number"].to_numpy()] = history
    return series.ffill().fillna(0.0)


def means_history(keys: list[str], points: np.ndarray, rungs: list[int] | None = None) -> list[float]:
    """``h[n]``: hypervolume of the front of the per-key means of normalised ``points`` 0..n (to minimise).

    A key's points differ only in the accuracy coordinate, so a mean that improves (or a new key) only needs the
    running front and the new point; only a front member whose mean worsens makes the front be found again from
    every key (what it dominated may come back): O(front) per trial, and O(keys) for those.

    ``rungs`` (by point): a key's mean is that of its points at the highest rung it reached; a point at a lower
    rung changes nothing, one at a higher rung starts the mean anew."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    means: dict[str, np.ndarray] = {}
    level: dict[str, int] = {}
    front: list[str] = []
    out = []
    minimise = ["minimize"] * points.shape[1]
    for i, (key, p) in enumerate(zip(keys, points)):
        old = means.get(key)
        if rungs is not None:
            if key in level and rungs[i] < level[key]:
                out.append(out[-1])  # a new run's brief figure: the key is known at a longer budget
                continue
            if key in level and rungs[i] > level[key]:
                del sums[key], counts[key]
            level[key] = rungs[i]
        sums[key] = sums[key] + p if key in sums else p.astype(float)
        counts[key] = counts.get(key, 0) + 1
        means[key] = sums[key] / counts[key]
        if out and key not in front:  # off the front, and dominated still: the front and its volume are unchanged
            f = np.array([means[k] for k in front])
            if ((f <= means[key]).all(axis=1) & (f < means[key]).any(axis=1)).any():
                out.append(out[-1])
                continue
        worse = old is not None and key in front and bool((means[key] > old).any())
        members = list(means) if worse else [k for k in front if k != key] + [key]
        mask = pareto_mask([means[k] for k in members], minimise)
        front = [k for k, m in zip(members, mask) if m]
        out.append(hypervolume(np.array([means[k] for k in front])))
    return out


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
    # An answer from replicates is no new measurement: it would count its candidate's mean once more. Nor is a
    # promotion (rungs): the same run at a longer budget; every candidate is compared at the first one.
    done = [t for t in (study.get_trials(deepcopy=False) if trials is None else trials)
            if t.state == optuna.trial.TrialState.COMPLETE and not t.user_attrs.get(REUSED)
            and PROMOTED_FROM not in t.user_attrs]
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


def write_report(study: optuna.Study, out_dir: Path, fidelity_csv: Path | None = None,
                 snap: Snapshot | None = None) -> list[Path]:
    """Write the report files into ``out_dir``; return their paths. With a ``fidelity.csv`` (``kdnas fidelity``;
    by default the one in ``out_dir``), ``fidelity.png`` and a fidelity section are added. ``snap``: the snapshot
    to report (read now when absent; `kdnas search` passes the one its closing lines print)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    snap = snap or Snapshot.of(study)  # the one snapshot every file is made from (module docstring)
    df = trials_frame(study, snap=snap)
    cands = snap.candidates()
    name = study.study_name
    csv, ccsv = out_dir / "trials.csv", out_dir / "candidates.csv"
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    atomic_write_bytes(ccsv, cands.to_csv(index=False).encode())
    teacher = study.user_attrs.get("teacher")
    # With rungs every figure says its budget: the front's members their own, the effects the highest budget with
    # both arms, the importances the first rung's (where every candidate is measured).
    first = f" at the first budget, {snap.ladder.epochs[0]} epochs" if snap.rungs else ""
    figures = [
        ("Validation accuracy against each cost (candidates' means, 90 % intervals" +
         ("; @E ep: the budget of the figure" if snap.rungs else "") + ")", plots.plot_pareto(
            [(name, cands, teacher)], out_dir / "pareto.png", f"{name}: validation accuracy vs cost")),
        ("Did distillation and assistants help" + (", and which teacher" if len(snap.choices) > 1 else "") +
         "? (gain over labels-only, 90 % intervals" +
         ("; at the highest budget with both" if snap.rungs else "") + ")", plots.plot_effects(
            snap.table, out_dir / "effects.png", f"{name}: effects", snap.choices)),
        (f"Parameter importances{first}", plots.plot_importances(
            importances(study, snap.trials), out_dir / "importances.png",
            f"{name}: what matters for validation accuracy{first}")),
    ]
    hv = hypervolume_series(study, df)
    if hv is not None:
        at = "; each candidate at the highest budget it reached so far" if snap.rungs else ""
        figures.insert(1, (f"Hypervolume over trials (front of means{at})", plots.plot_hypervolume(
            hv, study.user_attrs["objectives"], out_dir / "hypervolume.png", f"{name}: hypervolume")))
    fid = fidelity.read_fidelity(fidelity_csv if fidelity_csv is not None else out_dir / fidelity.CSV_NAME)
    if fid is not None:
        figures.append((fidelity.caption(fid), fidelity.figure(fid, out_dir / "fidelity.png",
                                                               f"{name}: brief vs full training")))
    summary = summary_markdown(snap, df, hv, fid)
    md = out_dir / "summary.md"
    atomic_write_bytes(md, summary.encode())
    head = summary.split("\n## ", 1)[0].splitlines()[1:]  # the lines above the first section (a rungs line too)
    intro = [line.replace("**", "").replace("`", "") for line in head if line and not line.startswith("#")]
    # With rungs, the page shows how rankings changed between them as summary.md does (and the effects' budgets);
    # with several teachers, what the teacher did; always, the distillation efficiency of the front.
    labels = snap.choices
    sections = rungs.ladder_lines(snap.ladder) if snap.rungs else []
    if snap.rungs or len(labels) > 1:
        sections += effects.summary_lines(snap.table, labels) + teacher_lines(snap.table, labels, reference(snap.teachers))
    sections += efficiency_lines(snap)
    page = write_html(out_dir / "report.html", f"kdnas study {name}", intro, df, cands, figures, sections)
    return [csv, ccsv, md, page, *(path for _, path in figures)]


def compare(studies: list[optuna.Study], out_dir: Path) -> list[Path]:
    """Several studies' fronts of means overlaid in one set of plots, their trials and candidates in one CSV each."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    snaps = [Snapshot.of(s) for s in studies]
    frames = [(s.study_name, trials_frame(s, snap=snap), snap.candidates(), s.user_attrs.get("teacher"))
              for s, snap in zip(studies, snaps)]
    names = ", ".join(n for n, *_ in frames)
    png = plots.plot_pareto([(n, c, t) for n, _, c, t in frames], out_dir / "pareto.png",
                            f"{names}: validation accuracy vs cost")
    both = pd.concat([df.assign(study=n) for n, df, _, _ in frames], ignore_index=True)
    cands = pd.concat([c.assign(study=n) for n, _, c, _ in frames], ignore_index=True)
    csv, ccsv = out_dir / "trials.csv", out_dir / "candidates.csv"
    atomic_write_bytes(csv, both.to_csv(index=False).encode())
    atomic_write_bytes(ccsv, cands.to_csv(index=False).encode())
    intro = [f"{n}: {int((df['state'] == 'COMPLETE').sum())} completed trials, {len(c)} candidates, "
             f"{int(c['pareto'].sum())} on the front of means" for n, df, c, _ in frames]
    page = write_html(out_dir / "report.html", f"kdnas comparison: {names}", intro,
                      both.assign(student=both["study"] + ": " + both["student"].fillna("")),
                      cands.assign(student=cands["study"] + ": " + cands["student"].fillna("")), [("Fronts", png)])
    return [csv, ccsv, page, png]
