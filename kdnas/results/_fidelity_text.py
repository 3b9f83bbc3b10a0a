"""What ``kdnas fidelity`` says: rank agreement of brief against full training, the seed-to-seed agreement of
two full trainings (its ceiling), ``fidelity.md``, the section of ``summary.md`` and the figure.

``fidelity.csv`` holds one row per retraining: ``seed_index`` 0 is each candidate's first full training (compared
with brief training), 1 its second, under another seed (``--seeds 2``). A file written before kdnas had
``seed_index`` holds first trainings only.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Sequence

import pandas as pd

from kdnas.results import _plots as plots

CSV_NAME = "fidelity.csv"
SPLITS = {"val": "validation", "test": "test"}


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


def first_seed(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of each candidate's first full training."""
    return df[df["seed_index"].fillna(0) == 0] if "seed_index" in df.columns else df


def agreement(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``rank_agreement`` of brief against (first) full accuracy, per split (``val``, ``test``)."""
    df = first_seed(df)
    return {s: rank_agreement(df[f"brief_{s}_accuracy"].tolist(), df[f"full_{s}_accuracy"].tolist()) for s in SPLITS}


def paired_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate trained under both seeds: its first rows with ``full_{split}_accuracy_2`` beside."""
    if "seed_index" not in df.columns:
        return df.iloc[:0]
    second = df[df["seed_index"] == 1].set_index("trial")
    first = first_seed(df)
    first = first[first["trial"].isin(second.index)]
    return first.assign(**{f"full_{s}_accuracy_2": first["trial"].map(second[f"full_{s}_accuracy"]) for s in SPLITS})


def seed_agreement(df: pd.DataFrame) -> dict[str, dict[str, float]] | None:
    """``rank_agreement`` of the two full trainings of each candidate (seed against seed), per split; None
    when no candidate was trained under a second seed. Two full trainings order the candidates only this alike:
    brief training cannot be expected to agree better with one of them (the ceiling for brief against full)."""
    both = paired_seeds(df)
    if not len(both):
        return None
    return {s: rank_agreement(both[f"full_{s}_accuracy"].tolist(), both[f"full_{s}_accuracy_2"].tolist())
            for s in SPLITS}


def brief_vs_second(df: pd.DataFrame) -> dict[str, dict[str, float]] | None:
    """``rank_agreement`` of brief against the second full training, per split; None without second trainings.
    The first full training shares its seed with one of the candidate's brief replicates (its representative),
    which flatters their agreement; the second shares none, like the two full trainings of the ceiling."""
    both = paired_seeds(df)
    if not len(both):
        return None
    return {s: rank_agreement(both[f"brief_{s}_accuracy"].tolist(), both[f"full_{s}_accuracy_2"].tolist())
            for s in SPLITS}


def _num(v: float, fmt: str = ".2f") -> str:
    return "undefined" if math.isnan(v) else format(v, fmt)


def describe(stats: dict[str, float], what: str = "candidates") -> str:
    """``Kendall tau 0.71 (p 0.01), Spearman rho 0.86 (p 0.006) over 8 candidates``."""
    return (f"Kendall tau {_num(stats['tau'])} (p {_num(stats['tau_p'], '.2g')}), Spearman rho {_num(stats['rho'])} "
            f"(p {_num(stats['rho_p'], '.2g')}) over {stats['n']} {what}")


def ceiling_text(df: pd.DataFrame) -> str:
    """One sentence: the seed-to-seed agreement, or how to measure it."""
    seeds = seed_agreement(df)
    if seeds is None:
        return ("Seed against seed: not measured (`--seeds 2` trains each candidate fully under a second seed; the "
                "agreement of the two full trainings is the ceiling for brief against full).")
    second = brief_vs_second(df)
    return (f"Seed against seed, the ceiling (two full trainings of each candidate under different seeds): "
            f"validation {describe(seeds['val'])}; test {describe(seeds['test'])}. Brief against the second full "
            f"training (no seed shared): validation {describe(second['val'])}.")


def read_fidelity(path: Path) -> pd.DataFrame | None:
    """The rows of a ``fidelity.csv``, or None when there is none (or it has no row)."""
    if not Path(path).is_file():
        return None
    df = pd.read_csv(path)
    return df if len(df) else None


def summary_lines(df: pd.DataFrame) -> list[str]:
    """The fidelity section of ``summary.md``."""
    st = agreement(df)
    done = first_seed(df).dropna(subset=["full_val_accuracy"])
    epochs = ", ".join(str(int(e)) for e in sorted(done["epochs"].dropna().unique())) or "?"
    return ["", "## Does brief training rank like full training?", "",
            f"{len(done)} candidates retrained with the full budget ({epochs} epochs; `kdnas fidelity`, details in "
            f"`fidelity.md`). Brief (the mean of the candidate's replicates) against full **validation** accuracy: "
            f"{describe(st['val'])}. Test accuracy (reported only): {describe(st['test'])}. {ceiling_text(df)} "
            f"Plot: `fidelity.png`."]


def caption(df: pd.DataFrame) -> str:
    st = agreement(df)["val"]
    seeds = seed_agreement(df)
    ceiling = "" if seeds is None else f"; seed against seed (the ceiling): tau {_num(seeds['val']['tau'])}"
    return (f"Brief against full training: Kendall tau {_num(st['tau'])}, Spearman rho {_num(st['rho'])} "
            f"on validation accuracy, {st['n']} candidates{ceiling}")


def figure(df: pd.DataFrame, path: Path, title: str) -> Path:
    return plots.plot_fidelity(first_seed(df), agreement(df), path, title, seed_agreement(df))


def _teacher(v) -> str:
    return "labels only" if pd.isna(v) else f"`{v}`"


def _pct(v) -> str:
    return "–" if pd.isna(v) else f"{100 * float(v):.1f}%"


def markdown(df: pd.DataFrame, study_name: str, command: str, selected: int, completed: int, seeds: int = 1) -> str:
    """``fidelity.md``: ``selected`` candidates, each to be trained under ``seeds`` seeds."""
    st, ceiling = agreement(df), seed_agreement(df)
    first = first_seed(df)
    done = first.dropna(subset=["full_val_accuracy"]).sort_values(["brief_val_accuracy", "trial"],
                                                                  ascending=[False, True])
    # A teacher column where candidates learned from different teachers (a study with several teacher choices);
    # a file written before kdnas recorded the teacher has no such column.
    names = set(first["teacher_name"].dropna()) if "teacher_name" in first.columns else set()
    teachers = bool(names - {"teacher"})
    lines = [f"# Fidelity of brief training: study `{study_name}`", "", f"Command: `{command}`", ""]
    missing = selected * seeds - len(df)
    lines.append(f"{len(done)} of {selected} selected candidates (of {completed} completed trials) retrained from scratch with the full budget"
                 + (f"; {missing} retrainings not yet done: run the command again to continue" if missing > 0 else "")
                 + ". Candidates on the front of means first, then a spread of the others by brief validation accuracy (the "
                   "mean of each candidate's replicates); each is retrained from its representative trial.")
    lines += ["", "| accuracy compared | Kendall tau | Spearman rho | candidates |", "|---|---:|---:|---:|"]
    rows = [(f"{name}, brief vs full ({'used for selection' if s == 'val' else 'reported only'})", st[s])
            for s, name in SPLITS.items()]
    if ceiling is not None:
        second = brief_vs_second(df)
        rows += [(f"{name}, full vs full under another seed (the ceiling)", ceiling[s]) for s, name in SPLITS.items()]
        rows += [(f"{name}, brief vs the full training under the 2nd seed (no seed shared)", second[s])
                 for s, name in SPLITS.items()]
    for what, x in rows:
        lines.append(f"| {what} | {_num(x['tau'])} (p {_num(x['tau_p'], '.2g')}) | "
                     f"{_num(x['rho'])} (p {_num(x['rho_p'], '.2g')}) | {x['n']} |")
    if ceiling is None:
        lines += ["", ceiling_text(df)]
    if len(done) >= 2:
        best_brief = done.iloc[0]
        top = done["full_val_accuracy"].max()
        best_full = ", ".join(f"#{int(n)}" for n in sorted(done.loc[done["full_val_accuracy"] == top, "trial"]))
        lines += ["", f"The best candidate by brief validation accuracy, #{int(best_brief['trial'])}, reaches "
                      f"{_pct(best_brief['full_val_accuracy'])} when fully trained; the best when fully trained: "
                      f"{best_full} at {_pct(top)}. Mean change from brief to "
                      f"full validation accuracy: {100 * (done['full_val_accuracy'] - done['brief_val_accuracy']).mean():+.1f} points."]
    lines += ["", "Tau is the share of candidate pairs that the two trainings order alike minus the share they order "
                  "differently (1: the same ranking, 0: unrelated, -1: reversed); rho is the correlation of the two "
                  "rankings. With few candidates both are noisy: the p-values say how often unrelated rankings would "
                  "agree this well by chance. Brief val: the candidate's mean ± the 90 % half-width (replicates).", "",
              "| trial | Pareto | brief val | full val | full val, 2nd seed | brief test | full test | params | student "
              "| method | chain |" + (" teacher |" if teachers else "") + " epochs |",
              "|---:|:---:|---:|---:|---:|---:|---:|---:|---|---|---|" + ("---|" if teachers else "") + "---:|"]
    second = paired_seeds(df).set_index("trial")
    for _, r in first.sort_values(["brief_val_accuracy", "trial"], ascending=[False, True]).iterrows():
        epochs = "" if pd.isna(r["epochs"]) else str(int(r["epochs"]))
        note = f" ({r['reason']})" if isinstance(r["reason"], str) and r["reason"] else ""
        brief = _pct(r["brief_val_accuracy"])
        if "brief_val_half_width" in r and not pd.isna(r["brief_val_half_width"]):
            brief += f" ± {100 * r['brief_val_half_width']:.1f} ({int(r['brief_replicates'])}x)"
        other = _pct(second.at[r["trial"], "full_val_accuracy_2"]) if r["trial"] in second.index else ""
        lines.append(f"| {int(r['trial'])} | {'yes' if r['pareto'] else ''} | {brief} | "
                     f"{_pct(r['full_val_accuracy'])}{note} | {other} | {_pct(r['brief_test_accuracy'])} | "
                     f"{_pct(r['full_test_accuracy'])} | {int(r['params']):,} | `{r['student']}` | `{r['method']}` | "
                     f"`{r['chain']}` | " + (f"{_teacher(r['teacher_name'])} | " if teachers else "") + f"{epochs} |")
    lines += ["", "Files: `fidelity.csv` (one row per retraining; `seed_index` 1: the second seed), `fidelity.png` "
                  "(full against brief accuracy). Each fully trained student is a bundle in the `bundle` column's "
                  "folder: `kdnas.load_student(FOLDER)`."]
    return "\n".join(lines) + "\n"
