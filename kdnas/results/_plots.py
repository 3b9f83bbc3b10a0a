"""The report's figures. Each function draws one PNG from trial DataFrames (see ``report.trials_frame``)."""

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


def front_2d(df: pd.DataFrame, cost: str) -> pd.DataFrame:
    """Trials no other trial beats on both validation accuracy and ``cost``, by increasing cost."""
    mask = pareto_mask(df[["val_accuracy", cost]].to_numpy(float), ["maximize", "minimize"])
    return df[mask].sort_values(cost)


def plot_pareto(studies: Sequence[tuple[str, pd.DataFrame, dict | None]], path: Path, title: str) -> Path:
    """Accuracy against each cost, one panel per cost. ``studies``: (name, trials, teacher) per study.

    With one study: its fronts as step lines with trial numbers, dominated trials faded, label-only
    (no-distillation) trials marked, the teacher as a star. With several: each study's fronts overlaid.
    Failed and pruned trials are never drawn.
    """
    plt = _plt()
    overlay = len(studies) > 1
    fig, axes = plt.subplots(1, len(COSTS), figsize=(6 * len(COSTS), 4.8), constrained_layout=True)
    for ax, (cost, label) in zip(axes, COSTS):
        for i, (name, df, teacher) in enumerate(studies):
            color = f"C{i}"
            done = df[(df["state"] == "COMPLETE") & df[cost].notna()]
            if not overlay:
                ax.scatter(done[cost], 100 * done["val_accuracy"], s=20, color="0.7", alpha=0.5, label="dominated trials")
                baseline = done[done["method"].fillna("").str.startswith("none")]
                if len(baseline):
                    ax.scatter(baseline[cost], 100 * baseline["val_accuracy"], s=40, facecolors="none",
                               edgecolors="C2", lw=1.2, zorder=3, label="no distillation (labels only)")
            if len(done):
                front = front_2d(done, cost)
                ax.step(front[cost], 100 * front["val_accuracy"], where="post", color=color, lw=1.4, alpha=0.9)
                ax.scatter(front[cost], 100 * front["val_accuracy"], s=40, color=color, zorder=4,
                           label=f"{name}: Pareto front" if overlay else "Pareto front")
                if not overlay:
                    # One label per point: trials with identical cost and accuracy share it.
                    for (x, acc), group in front.groupby([cost, "val_accuracy"], sort=False):
                        text = ",".join(f"#{int(n)}" for n in sorted(group["number"]))
                        ax.annotate(text, (x, 100 * acc), textcoords="offset points", xytext=(4, -10), fontsize=7,
                                    color=color)
            if teacher and teacher.get(cost) is not None and teacher.get("val_accuracy") is not None:
                ax.scatter([teacher[cost]], [100 * teacher["val_accuracy"]], marker="*", s=220,
                           color="C3" if not overlay else color, edgecolors="k", lw=0.5, zorder=5,
                           label=f"{name}: teacher" if overlay else "teacher")
        ax.set_xscale("log")
        values = [v for _, df, t in studies for v in [*df[cost].dropna(), (t or {}).get(cost)] if v and v > 0]
        if cost == "latency_ms" and values:
            plain_log_ticks(ax.xaxis, min(values), max(values))
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(title)
    return save(fig, path)


def baseline_gains(df: pd.DataFrame) -> pd.DataFrame:
    """Completed distillation trials with ``gain``: their val accuracy minus the mean val accuracy of the
    label-only (``none``) trials of the same student architecture. Trials without such a baseline are left out."""
    done = df[df["state"] == "COMPLETE"].copy()
    is_base = done["method"].fillna("").str.startswith("none")
    base = done[is_base].groupby("student")["val_accuracy"].mean()
    kd = done[~is_base & done["student"].isin(base.index)].copy()
    kd["gain"] = kd["val_accuracy"] - kd["student"].map(base)
    kd["method_name"] = kd["method"].str.split("(").str[0]
    return kd


def plot_effects(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Did distillation help, and did assistants help? Accuracy gain over the label-only baseline of the
    same architecture, by method and by chain length. Without baselines, raw accuracy is shown (and said)."""
    plt = _plt()
    gains = baseline_gains(df)
    done = df[df["state"] == "COMPLETE"].copy()
    done["method_name"] = done["method"].fillna("?").str.split("(").str[0]
    use_gain = len(gains) > 0
    data = gains if use_gain else done
    column = "gain" if use_gain else "val_accuracy"
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for ax, (by, xlabel) in zip(axes, [("method_name", "distillation method"), ("chain_length", "assistants in the chain")]):
        groups = [(k, 100 * g[column].to_numpy(float)) for k, g in data.groupby(by)] if len(data) else []
        if groups:
            ax.boxplot([v for _, v in groups], showmeans=True, showfliers=False)  # the points are drawn below
            ax.set_xticks(range(1, len(groups) + 1), [f"{k}\n(n={len(v)})" for k, v in groups])
            rng = np.random.default_rng(0)  # jitter only: which point is which does not matter here
            for i, (_, v) in enumerate(groups, start=1):
                ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), v, s=12, alpha=0.6, color="C0", zorder=3)
        if use_gain:
            ax.axhline(0, color="C3", lw=1, ls="--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("gain over labels-only, same architecture (points)" if use_gain else "validation accuracy (%)")
        ax.grid(True, axis="y", alpha=0.25)
    note = "gain over the no-distillation baseline" if use_gain else \
        "raw accuracy: this study has no label-only (method 'none') trial of the same architectures to compare with"
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
    """Hypervolume of the front of trials 0..n against n (a step line: it only changes when the front does)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    ax.step(series.index, series.to_numpy(), where="post", color="C0", lw=1.5)
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume (normalised, 0 to 1)")
    ax.set_title(f"{title}\nfront of trials 0..n over {', '.join(objectives)}; 1 - accuracy and cost / teacher's, "
                 "reference point 1", fontsize=8)
    ax.grid(True, alpha=0.25)
    return save(fig, path)


def plot_fidelity(df: pd.DataFrame, stats: dict[str, dict[str, float]], path: Path, title: str) -> Path:
    """Full against brief accuracy of the retrained trials (``kdnas fidelity``), validation and test side by
    side, with trial numbers and the line y = x; ``stats`` holds Kendall's tau and Spearman's rho per split."""
    plt = _plt()

    def num(v: float) -> str:
        return "undefined" if np.isnan(v) else f"{v:.2f}"

    val = stats["val"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
    for ax, (split, name) in zip(axes, [("val", "validation (used for selection)"), ("test", "test (reported only)")]):
        done = df.dropna(subset=[f"brief_{split}_accuracy", f"full_{split}_accuracy"])
        x, y = 100 * done[f"brief_{split}_accuracy"].astype(float), 100 * done[f"full_{split}_accuracy"].astype(float)
        on = done["pareto"].astype(bool).to_numpy()
        ax.scatter(x[~on], y[~on], s=36, color="C0", zorder=3, label="other trials")
        ax.scatter(x[on], y[on], s=36, color="C1", zorder=3, label="Pareto-optimal (brief)")
        # One label per point: trials with the same accuracies (a few hundred images: ties are common) share it.
        for (xi, yi), group in done.assign(x=x, y=y).groupby(["x", "y"], sort=False):
            text = ",".join(f"#{int(n)}" for n in sorted(group["trial"]))
            ax.annotate(text, (xi, yi), textcoords="offset points", xytext=(4, 3), fontsize=7)
        if len(done):
            lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
            pad = max(0.5, 0.05 * (hi - lo))
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", color="0.5", lw=1, label="y = x (no change)")
        st = stats[split]
        ax.set_title(f"{name}: tau {num(st['tau'])}, rho {num(st['rho'])}", fontsize=9)
        ax.set_xlabel(f"brief training: {split} accuracy (%)")
        ax.set_ylabel(f"full training: {split} accuracy (%)")
        ax.grid(True, alpha=0.25)
        ax.legend(loc="lower right", fontsize=7)
    fig.suptitle(f"{title}\nvalidation: Kendall tau {num(val['tau'])}, Spearman rho {num(val['rho'])} "
                 f"over {val['n']} trials", fontsize=10)
    return save(fig, path)
