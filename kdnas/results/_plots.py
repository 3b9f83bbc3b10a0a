"""The report's figures. Each function draws one PNG from the candidates (``candidates.csv``, a
``CandidateTable``) or, for fidelity, its rows: accuracies are means of replicates with 90 % intervals."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kdnas.core import atomic_write_bytes
from kdnas.costs import pareto_mask

# (column, axis label): units always in the label; sizes span orders of magnitude, hence log axes.
COSTS = [("params", "parameters (count, log scale)"), ("macs", "MACs per image (log scale)"),
         ("latency_ms", "latency (ms per batch, log scale)")]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    """Write atomically: a reader never sees half a PNG. Through a temporary file of its own: two processes
    writing one study's report at once (two searches ending together) shared one temporary name before."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _plain(value: float, _pos=None) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")


def plain_log_ticks(axis, low: float, high: float) -> None:
    """Ticks in plain numbers (0.2, 0.5, 1 ms) on a log axis whose data run from ``low`` to ``high``.

    Why: latencies span one or two decades, where matplotlib labels the minor ticks in scientific notation
    (``6x10^-1``) and they overlap; milliseconds read as plain decimals. The wider the span, the fewer
    ticks per decade, so that labels never collide."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    decades = math.log10(max(high, low * 1.0001) / low) if low > 0 else 99
    subs = (1.0, 2.0, 3.0, 5.0) if decades <= 1.3 else (1.0, 2.0, 5.0) if decades <= 2.3 else (1.0, 3.0) if decades <= 3.3 else (1.0,)
    axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    axis.set_major_formatter(FuncFormatter(_plain))
    axis.set_minor_formatter(NullFormatter())


ACC = "val_accuracy_mean"


def front_2d(cands: pd.DataFrame, cost: str) -> pd.DataFrame:
    """Candidates no other candidate beats on both mean validation accuracy and ``cost``, by increasing cost, with
    ``separable``: False when the member's 90 % interval overlaps that of a cheaper member of this front (which
    has a lower mean): the study cannot yet say the dearer one is more accurate."""
    mask = pareto_mask(cands[[ACC, cost]].to_numpy(float), ["maximize", "minimize"])
    front = cands[mask].sort_values([cost, ACC], ascending=[True, False])
    his = front["val_accuracy_hi"].to_numpy(float)
    los = front["val_accuracy_lo"].to_numpy(float)
    # The highest upper end among the cheaper members decides: an overlap with any of them is one too many.
    cheaper_hi = np.maximum.accumulate(np.concatenate([[-np.inf], his[:-1]])) if len(front) else his
    return front.assign(separable=los > cheaper_hi)


def _errorbar(ax, df: pd.DataFrame, cost: str, **kw) -> None:
    y = 100 * df[ACC].to_numpy(float)
    err = [y - 100 * df["val_accuracy_lo"].to_numpy(float), 100 * df["val_accuracy_hi"].to_numpy(float) - y]
    ax.errorbar(df[cost].to_numpy(float), y, yerr=err, ls="none", **kw)


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">")


def _budgets(cands: pd.DataFrame) -> list[int]:
    """The budgets (epochs) of a study with rungs' candidates, longest first; [] without rungs."""
    if "epochs" not in cands or "rung" not in cands or not cands["rung"].notna().any():
        return []
    return sorted({int(n) for n in cands["epochs"].dropna()}, reverse=True)


def plot_pareto(studies: Sequence[tuple[str, pd.DataFrame, dict | None]], path: Path, title: str) -> Path:
    """Mean validation accuracy against each cost, one panel per cost, with 90 % intervals as error bars.
    ``studies``: (name, candidates, teacher) per study; candidates as ``candidates.csv`` holds them.

    With one study: in each panel the front of the means against that cost as a step line with the
    representative trial numbers, members not separable from a cheaper one drawn hollow, the other candidates
    faded, label-only (no-distillation) candidates marked, the teacher (one training) as a star. With several:
    each study's fronts overlaid.
    """
    plt = _plt()
    overlay = len(studies) > 1
    fig, axes = plt.subplots(1, len(COSTS), figsize=(6 * len(COSTS), 4.8), constrained_layout=True)
    for ax, (cost, label) in zip(axes, COSTS):
        for i, (name, cands, teacher) in enumerate(studies):
            color = f"C{i}"
            done = cands[cands[cost].notna() & cands[ACC].notna()]
            budgets = _budgets(done)
            if not overlay and len(done) and not budgets:
                _errorbar(ax, done, cost, marker="o", ms=4, color="0.7", alpha=0.5, elinewidth=0.8,
                          label="other candidates (mean, 90 % interval)")
            elif not overlay and len(done):  # rungs: one marker per budget, the longest a plain dot
                for n, marker in zip(budgets, _MARKERS):
                    _errorbar(ax, done[done["epochs"] == n], cost, marker=marker, ms=4, color="0.7", alpha=0.5,
                              elinewidth=0.8, label=f"candidates stopped at {n} ep (mean, 90 % interval)")
                baseline = done[done["method"].fillna("").str.startswith("none")]
                if len(baseline):
                    ax.scatter(baseline[cost], 100 * baseline[ACC], s=40, facecolors="none",
                               edgecolors="C2", lw=1.2, zorder=3, label="no distillation (labels only)")
            if len(done):
                front = front_2d(done, cost)
                ax.step(front[cost], 100 * front[ACC], where="post", color=color, lw=1.4, alpha=0.9)
                _errorbar(ax, front, cost, color=color, elinewidth=1.2, capsize=2, zorder=4)
                sep, loose = front[front["separable"]], front[~front["separable"]]
                ax.scatter(sep[cost], 100 * sep[ACC], s=40, color=color, zorder=5,
                           label=f"{name}: front of means" if overlay else "front of means")
                if len(loose):
                    ax.scatter(loose[cost], 100 * loose[ACC], s=44, facecolors="white", edgecolors=color, lw=1.5,
                               zorder=5, label=f"{name}: not separable from a cheaper member" if overlay
                               else "front, not separable from a cheaper member")
                if not overlay:
                    # One label per point: candidates with identical cost and mean share it.
                    for (x, acc), group in front.groupby([cost, ACC], sort=False):
                        text = ",".join(f"#{int(r['representative'])}" + (f" ({int(r['replicates'])}x)"
                                                                          if r["replicates"] > 1 else "")
                                        + (f" @{int(r['epochs'])}ep" if budgets else "")
                                        for _, r in group.sort_values("representative").iterrows())
                        ax.annotate(text, (x, 100 * acc), textcoords="offset points", xytext=(4, -10), fontsize=7,
                                    color=color)
            if teacher and teacher.get(cost) is not None and teacher.get("val_accuracy") is not None:
                ax.scatter([teacher[cost]], [100 * teacher["val_accuracy"]], marker="*", s=220,
                           color="C3" if not overlay else color, edgecolors="k", lw=0.5, zorder=6,
                           label=f"{name}: teacher" if overlay else "teacher (one training)")
        ax.set_xscale("log")
        values = [v for _, c, t in studies for v in [*c[cost].dropna(), (t or {}).get(cost)] if v and v > 0]
        if cost == "latency_ms" and values:
            plain_log_ticks(ax.xaxis, min(values), max(values))
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%), mean of replicates")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(loc="lower right", fontsize=7)
    rungs = not overlay and any(_budgets(c) for _, c, _ in studies)
    fig.suptitle(f"{title}\nerror bars: 90 % intervals; #N (kx): representative trial, replicates" +
                 ("; @E ep: the budget (epochs) of the figure: each candidate at the highest rung it reached, two "
                  "compared at the highest budget both reached" if rungs else ""), fontsize=10)
    return save(fig, path)


def _gain_panel(ax, groups, ylabel: str, unit: str = "cand.", empty: str = "") -> None:
    """Each group's per-architecture differences (grey) and their mean (a diamond), with 90 % intervals."""
    for i, g in enumerate(groups, start=1):
        offsets = np.linspace(-0.2, 0.2, len(g.by_arch)) if len(g.by_arch) > 1 else np.zeros(1)
        ds = [a.diff for a in g.by_arch]
        y = np.array([100 * d.mean for d in ds])
        ax.errorbar(i + offsets, y, yerr=[y - [100 * d.lo for d in ds], [100 * d.hi for d in ds] - y],
                    fmt="o", ms=3, color="0.6", elinewidth=0.8, alpha=0.8)  # one call: one artist per group
        d = g.overall
        color = "0.35" if d.within_noise else ("C2" if d.mean > 0 else "C3")
        ax.errorbar(i, 100 * d.mean, yerr=[[100 * (d.mean - d.lo)], [100 * (d.hi - d.mean)]], fmt="D",
                    ms=7, color=color, capsize=4, lw=2, zorder=4)
        ax.annotate("within noise" if d.within_noise else f"{100 * d.mean:+.1f}", (i, 100 * d.hi),
                    textcoords="offset points", xytext=(0, 5), ha="center", fontsize=8, color=color)
    ax.set_xticks(range(1, len(groups) + 1),
                  [f"{g.group}\n({len(g.by_arch)} arch., {g.candidates} {unit})"
                   + (f"\n@{g.budget}" if g.budget else "") for g in groups])
    ax.set_xlim(0.5, max(len(groups), 1) + 0.5)
    ax.axhline(0, color="C3", lw=1, ls="--")
    ax.set_ylabel(ylabel)
    if not groups and empty:
        ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, fontsize=9)


def plot_effects(table, path: Path, title: str, teachers: Sequence[str] = ()) -> Path:
    """Did distillation help, and did assistants help? Gain over the label-only baseline of the same
    architecture (kdnas/results/_effects.py), by method and by chain length: each architecture's paired
    difference and the mean over architectures, with 90 % intervals; *within noise* where an interval holds 0.
    With rungs, each gain at the highest budget with both arms, which its label says. Without baselines, the
    candidates' mean accuracies are shown (and said; with rungs, at the first budget, which every candidate
    reached). With several ``teachers`` (the study's teacher choices, the reference first), two panels more: the
    gain by teacher, and each teacher minus the reference over twin candidates
    (kdnas/results/_teacher_effects.py)."""
    from kdnas.candidates import Merged
    from kdnas.results._effects import gains, method_name
    from kdnas.results._teacher_effects import teacher_gains
    from kdnas.results._teachers import label_of

    plt = _plt()
    many = len(teachers) > 1
    panels = [("method", "distillation method"), ("chain_length", "assistants in the chain")]
    if many:
        panels.append(("teacher", "teacher (gain over labels-only)"))
    fig, axes = plt.subplots(2 if many else 1, 2, figsize=(12, 9.6 if many else 4.8), constrained_layout=True)
    axes = np.ravel(axes)
    found = {by: gains(table, by, teachers if by == "teacher" else ()) for by, _ in panels}
    use_gain = any(found.values())
    rungs = isinstance(table, Merged)
    for ax, (by, xlabel) in zip(axes, panels):
        if use_gain:
            _gain_panel(ax, found[by], "gain over labels-only, same architecture (points)")
        else:
            entries = table.ladder.first.estimates() if rungs else table.estimates()
            key = {"method": method_name, "teacher": lambda e: str(label_of(e.attrs) or "none")}.get(
                by, lambda e: str(e.attrs.get("chain_length")))
            names = sorted({key(e) for e in entries})
            for i, name in enumerate(names, start=1):
                ests = [e.estimate for e in entries if key(e) == name]
                y = np.array([100 * e.mean for e in ests])
                err = [y - [100 * e.lo for e in ests], [100 * e.hi for e in ests] - y]
                ax.errorbar(i + np.linspace(-0.2, 0.2, len(ests)) if len(ests) > 1 else [i], y, yerr=err, fmt="o",
                            ms=3, color="C0", elinewidth=0.8, alpha=0.7)
            ax.set_xticks(range(1, len(names) + 1), names)
            ax.set_ylabel("validation accuracy (%), candidates' means" +
                          (f" @{table.ladder.epochs[0]} ep" if rungs else ""))
        ax.set_xlabel(xlabel)
        ax.grid(True, axis="y", alpha=0.25)
    if many:
        ax = axes[3]
        _gain_panel(ax, teacher_gains(table, teachers), f"minus {teachers[0]}, same candidate (points)", "pairs",
                    f"no candidate trained under {teachers[0]} and another teacher\nalike in everything else yet")
        ax.set_xlabel(f"teacher minus the reference {teachers[0]} (twins: only the teacher differs)")
        ax.grid(True, axis="y", alpha=0.25)
    note = ("gain over the no-distillation baseline: grey points, each architecture; diamonds, the mean over "
            "architectures; bars, 90 % intervals" if use_gain else
            "raw accuracy: this study has no label-only (method 'none') candidate of the same architectures to "
            "compare with")
    if use_gain and rungs:
        note += "\n@E ep: each architecture at the highest budget where both it and labels-only were trained"
    if many:
        note += f"\nlast panel: each teacher minus the reference {teachers[0]}, paired over candidates alike but for it"
    fig.suptitle(f"{title}\n{note}", fontsize=10)
    return save(fig, path)


def plot_importances(importances: dict[str, float], path: Path, title: str) -> Path:
    plt = _plt()
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(items), 2) + 1.2), constrained_layout=True)
    if items:
        ax.barh([k for k, _ in items], [v for _, v in items], color="C0")
    else:
        ax.text(0.5, 0.5, "not enough completed trials", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("importance for validation accuracy (PED-ANOVA, sums to 1)")
    ax.set_title(title)
    return save(fig, path)


def plot_hypervolume(series: pd.Series, objectives: list[str], path: Path, title: str) -> Path:
    """Hypervolume of the front of the candidates' means after trials 0..n against n (a step line: it only changes
    when the front does; a re-evaluation that lowers a front member's mean can lower it)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    ax.step(series.index, series.to_numpy(), where="post", color="C0", lw=1.5)
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume (normalised, 0 to 1)")
    ax.set_title(f"{title}\nfront of the candidates' means after trials 0..n over {', '.join(objectives)}; "
                 "1 - accuracy and cost / teacher's, "
                 "reference point 1", fontsize=8)
    ax.grid(True, alpha=0.25)
    return save(fig, path)


def plot_fidelity(df: pd.DataFrame, stats: dict[str, dict[str, float]], path: Path, title: str,
                  ceiling: dict[str, dict[str, float]] | None = None) -> Path:
    """Full against brief accuracy of the retrained candidates (``kdnas fidelity``; brief: the mean of the
    replicates), validation and test side by side, with trial numbers and the line y = x; ``stats`` holds
    Kendall's tau and Spearman's rho per split, ``ceiling`` the same for two full trainings under different
    seeds (their agreement bounds what brief training can reach)."""
    plt = _plt()

    def num(v: float) -> str:
        return "undefined" if np.isnan(v) else f"{v:.2f}"

    val = stats["val"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
    for ax, (split, name) in zip(axes, [("val", "validation (used for selection)"), ("test", "test (reported only)")]):
        done = df.dropna(subset=[f"brief_{split}_accuracy", f"full_{split}_accuracy"])
        x, y = 100 * done[f"brief_{split}_accuracy"].astype(float), 100 * done[f"full_{split}_accuracy"].astype(float)
        on = done["pareto"].astype(bool).to_numpy()
        ax.scatter(x[~on], y[~on], s=36, color="C0", zorder=3, label="other candidates")
        ax.scatter(x[on], y[on], s=36, color="C1", zorder=3, label="on the front of means (brief)")
        # One label per point: trials with the same accuracies (a few hundred images: ties are common) share it.
        for (xi, yi), group in done.assign(x=x, y=y).groupby(["x", "y"], sort=False):
            text = ",".join(f"#{int(n)}" for n in sorted(group["trial"]))
            ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if len(done):
            lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
            pad = max(0.5, 0.05 * (hi - lo))
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", color="0.5", lw=1, label="y = x (no change)")
        st = stats[split]
        seeds = "" if ceiling is None else f"; seed vs seed tau {num(ceiling[split]['tau'])} (ceiling)"
        ax.set_title(f"{name}: tau {num(st['tau'])}, rho {num(st['rho'])}{seeds}", fontsize=9)
        ax.set_xlabel(f"brief training: {split} accuracy (%), mean of replicates")
        ax.set_ylabel(f"full training: {split} accuracy (%)")
        ax.grid(True, alpha=0.25)
        ax.legend(loc="lower right", fontsize=7)
    ceil = "" if ceiling is None else f"; two full trainings, seed vs seed: tau {num(ceiling['val']['tau'])}"
    fig.suptitle(f"{title}\nvalidation: Kendall tau {num(val['tau'])}, Spearman rho {num(val['rho'])} "
                 f"over {val['n']} candidates{ceil}", fontsize=10)
    return save(fig, path)
