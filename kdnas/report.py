"""Study -> DataFrame -> trials.csv, pareto.png, hypervolume.png, summary.md. Reads only the storage."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd

from kdnas.artifacts import atomic_write_bytes
from kdnas.score import METRIC_NAMES, feasible, hypervolume_history, measured_front, normalise, pareto_mask

COLUMNS = [
    "number", "state", "val_accuracy", "test_accuracy", "params", "macs", "latency_ms", "latency_iqr_ms",
    "student", "method", "duration_s", "seed", "pareto", "fail_reason", "architecture", "method_params",
    "score", "latency_median_ms", "latency_stable", "feasible",
]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial; ``pareto`` marks the front over the study's own objectives."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
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
            "duration_s": t.duration.total_seconds() if t.duration else None,
            "seed": ua.get("seed"),
            "pareto": False,
            "fail_reason": ua.get("fail_reason") or ua.get("prune_reason"),
            "architecture": json.dumps(cand.get("student")) if cand else None,
            "method_params": json.dumps(cand.get("method")) if cand else None,
            "score": ua.get("score"),
            "latency_median_ms": ua.get("latency_median_ms"),
            "latency_stable": ua.get("latency_stable"),
            "feasible": feasible(t),
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    done = (df["state"] == "COMPLETE") & df["feasible"]
    if done.any():
        attrs = [t.user_attrs for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and feasible(t)]
        df.loc[done, "pareto"] = measured_front(attrs, study.user_attrs["objectives"])
    return df


def hypervolume_series(study: optuna.Study, df: pd.DataFrame) -> pd.Series | None:
    """Hypervolume of the front of trials 0..n, for every trial number n (kdnas.score has the normalisation);
    None when the teacher's costs, which normalise them, are not stored."""
    objectives = study.user_attrs["objectives"]
    teacher = study.user_attrs.get("teacher") or {}
    if any(o != "accuracy" and teacher.get(METRIC_NAMES[o]) is None for o in objectives):
        return None
    ok = (df["state"] == "COMPLETE") & df["feasible"]
    rows = [t.user_attrs for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and feasible(t)]
    history = hypervolume_history(normalise(rows, objectives, teacher)) if rows else []
    series = pd.Series(float("nan"), index=df["number"].to_numpy(), name="hypervolume")
    series[df.loc[ok, "number"].to_numpy()] = history
    return series.ffill().fillna(0.0)


def plot_hypervolume(series: pd.Series, objectives: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    ax.step(series.index, series.to_numpy(), where="post", color="C0", lw=1.5)
    ax.set_xlabel("trial number")
    ax.set_ylabel("hypervolume (normalised, 0 to 1)")
    ax.set_title(f"{title}\nfront of trials 0..n over {', '.join(objectives)}; 1 - accuracy and cost / teacher's, "
                 "reference point 1", fontsize=8)
    ax.grid(True, alpha=0.25)
    _save(fig, path)


def _front_2d(df: pd.DataFrame, cost: str) -> pd.DataFrame:
    mask = pareto_mask(df[["val_accuracy", cost]].to_numpy(float), ["maximize", "minimize"])
    return df[mask].sort_values(cost)


def plot_pareto(df: pd.DataFrame, teacher: dict | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = df[df["state"] == "COMPLETE"]
    panels = [("params", "parameters (count, log scale)"), ("latency_ms", "latency (ms / batch, log scale)")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for ax, (cost, label) in zip(axes, panels):
        ax.scatter(done[cost], 100 * done["val_accuracy"], s=22, color="0.65", alpha=0.6, label="trials")
        if len(done):
            front = _front_2d(done, cost)
            ax.step(front[cost], 100 * front["val_accuracy"], where="post", color="C0", lw=1.2, alpha=0.8)
            ax.scatter(front[cost], 100 * front["val_accuracy"], s=42, color="C0", zorder=3, label="Pareto front")
            # One label per point: trials with identical costs and accuracy share it.
            for (x, acc), group in front.groupby([cost, "val_accuracy"], sort=False):
                label = ",".join(f"#{int(n)}" for n in sorted(group["number"]))
                ax.annotate(label, (x, 100 * acc), textcoords="offset points", xytext=(4, -10), fontsize=7, color="C0")
        if teacher and teacher.get(cost) is not None:
            ax.scatter([teacher[cost]], [100 * teacher["val_accuracy"]], marker="*", s=220, color="C3",
                       zorder=4, label="teacher")
            ax.annotate("teacher", (teacher[cost], 100 * teacher["val_accuracy"]), textcoords="offset points",
                        xytext=(-12, -16), fontsize=8, color="C3", ha="right")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("validation accuracy (%)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _fmt_int(v) -> str:
    return "" if pd.isna(v) else f"{int(v):,}"


def summary_markdown(study: optuna.Study, df: pd.DataFrame, hv: pd.Series | None = None) -> str:
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
        best = scored.loc[scored["score"].idxmax()]
        lines.append(f"Best combined score: {best['score']:.4f}, trial {int(best['number'])} (`{best['student']}`).")
    lines += ["", f"## Pareto-optimal trials ({', '.join(objectives)})", ""]
    front = df[df["pareto"]].sort_values("params")
    lines.append("| trial | val acc | test acc | params | MACs | latency (ms) | student | method |")
    lines.append("|---:|---:|---:|---:|---:|---:|---|---|")
    for _, r in front.iterrows():
        lines.append(f"| {int(r['number'])} | {r['val_accuracy']:.1%} | {r['test_accuracy']:.1%} | {_fmt_int(r['params'])} | "
                     f"{_fmt_int(r['macs'])} | {r['latency_ms']:.3f} | `{r['student']}` | `{r['method']}` |")
    if not len(front):
        lines.append("| – | no completed trial yet | | | | | | |")
    failed = df[df["state"] == "FAIL"]
    if len(failed):
        lines += ["", "## Failed trials", ""]
        lines += [f"- trial {int(r['number'])}: {r['fail_reason'] or 'no reason recorded (interrupted?)'}" for _, r in failed.iterrows()]
    lines += ["", "Files: `trials.csv` (every trial), `pareto.png` (accuracy vs parameters and vs latency), "
              "`hypervolume.png` (hypervolume of the front, trial by trial)."]
    return "\n".join(lines) + "\n"


def write_report(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write ``trials.csv``, ``pareto.png``, ``hypervolume.png`` and ``summary.md`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study)
    csv = out_dir / "trials.csv"
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    png = out_dir / "pareto.png"
    plot_pareto(df, study.user_attrs.get("teacher"), png, f"{study.study_name}: validation accuracy vs cost")
    paths = [csv, png]
    hv = hypervolume_series(study, df)
    if hv is not None:
        paths.append(out_dir / "hypervolume.png")
        plot_hypervolume(hv, study.user_attrs["objectives"], paths[-1], f"{study.study_name}: hypervolume")
    md = out_dir / "summary.md"
    atomic_write_bytes(md, summary_markdown(study, df, hv).encode())
    return [*paths, md]
