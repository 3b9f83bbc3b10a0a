"""Study -> DataFrame -> trials.csv, pareto.png, summary.md. Reads only the storage."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pandas as pd

from kdnas.artifacts import atomic_write_bytes
from kdnas.score import pareto_mask

COLUMNS = [
    "number", "state", "val_accuracy", "test_accuracy", "params", "macs", "latency_ms", "latency_iqr_ms",
    "student", "method", "chain", "chain_length", "duration_s", "seed", "pareto", "reason", "architecture",
    "method_params", "chain_spec",
]


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial; ``pareto`` marks the front over the study's own objectives."""
    rows = []
    trials = study.get_trials(deepcopy=False)
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
        })
    df = pd.DataFrame(rows, columns=COLUMNS)
    done = df["state"] == "COMPLETE"
    if done.any():
        values = [t.values for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        df.loc[done, "pareto"] = pareto_mask(values, [d.name.lower() for d in study.directions])
    return df


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _fmt_int(v) -> str:
    return "" if pd.isna(v) else f"{int(v):,}"


def summary_markdown(study: optuna.Study, df: pd.DataFrame) -> str:
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
    lines += ["", f"## Pareto-optimal trials ({', '.join(study.metric_names or [])})", ""]
    front = df[df["pareto"]].sort_values("params")
    lines.append("| trial | val acc | test acc | params | MACs | latency (ms) | student | method | chain |")
    lines.append("|---:|---:|---:|---:|---:|---:|---|---|---|")
    for _, r in front.iterrows():
        lines.append(f"| {int(r['number'])} | {r['val_accuracy']:.1%} | {r['test_accuracy']:.1%} | {_fmt_int(r['params'])} | "
                     f"{_fmt_int(r['macs'])} | {r['latency_ms']:.3f} | `{r['student']}` | `{r['method']}` | `{r['chain']}` |")
    if not len(front):
        lines.append("| – | no completed trial yet | | | | | | | |")
    for state, title in (("FAIL", "Failed trials"), ("PRUNED", "Pruned or rejected trials")):
        rows = df[df["state"] == state]
        if len(rows):
            lines += ["", f"## {title}", ""]
            lines += [f"- trial {int(r['number'])}: {r['reason'] or 'no reason recorded (interrupted?)'}" for _, r in rows.iterrows()]
    lines += ["", "Files: `trials.csv` (every trial), `pareto.png` (accuracy vs parameters and vs latency)."]
    return "\n".join(lines) + "\n"


def write_report(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Write ``trials.csv``, ``pareto.png`` and ``summary.md`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = trials_frame(study)
    csv = out_dir / "trials.csv"
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    png = out_dir / "pareto.png"
    plot_pareto(df, study.user_attrs.get("teacher"), png, f"{study.study_name}: validation accuracy vs cost")
    md = out_dir / "summary.md"
    atomic_write_bytes(md, summary_markdown(study, df).encode())
    return [csv, png, md]
