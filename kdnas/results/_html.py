"""One self-contained ``report.html``: figures embedded as data URIs, tables inline, no script, no network.

Accuracies are shown as a candidate's mean ± the 90 % half-width with its replicates; a trial's own measurement
stands beside its candidate's figure in the table of trials."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from kdnas.core import atomic_write_bytes
from kdnas.results._candidates import separability

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td.text, th.text { text-align: left; font-family: ui-monospace, monospace; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.muted { color: #777; }
"""

TABLE_COLUMNS = [("number", "trial"), ("state", "state"), ("val_accuracy", "val acc (this trial)"),
                 ("candidate_val", "candidate val acc (90 %)"), ("replicate", "replicate"),
                 ("test_accuracy", "test acc (this trial)"), ("params", "params"), ("macs", "MACs"),
                 ("latency_ms", "latency (ms)"), ("student", "student"), ("method", "method"), ("chain", "chain"),
                 ("reason", "reason")]
FRONT_COLUMNS = [("representative", "trial"), ("candidate_val", "val acc (90 %)"), ("replicates", "replicates"),
                 ("candidate_test", "test acc (90 %)"), ("params", "params"), ("macs", "MACs"),
                 ("latency_ms", "latency (ms)"), ("student", "student"), ("method", "method"), ("chain", "chain"),
                 ("separable", "separable")]
_TEXT = {"state", "student", "method", "chain", "reason", "separable"}


def _cell(col: str, v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if isinstance(v, str):
        return html.escape(v)
    if col in ("val_accuracy", "test_accuracy"):
        return f"{100 * float(v):.1f}%"
    if col in ("params", "macs", "number", "representative", "replicates", "replicate"):
        return f"{int(v):,}"
    if col == "latency_ms":
        return f"{float(v):.3f}"
    return html.escape(str(v))


def table(df: pd.DataFrame, columns: list[tuple[str, str]] = TABLE_COLUMNS) -> str:
    cols = [(c, t) for c, t in columns if c in df.columns]
    head = "".join(f'<th class="{"text" if c in _TEXT else ""}">{t}</th>' for c, t in cols)
    rows = "".join("<tr>" + "".join(f'<td class="{"text" if c in _TEXT else ""}">{_cell(c, r[c])}</td>' for c, _ in cols)
                   + "</tr>" for _, r in df.iterrows())
    return f"<table><tr>{head}</tr>{rows}</table>"


def _interval(mean, half_width, n=None) -> str:
    if mean is None or pd.isna(mean):
        return ""
    text = f"{100 * float(mean):.1f}% ± {100 * float(half_width):.1f}"
    return text if n is None else f"{text} ({int(n)}x)"


def _with_figures(df: pd.DataFrame, cands: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The candidates with their figures as text, and the trials with their candidate's (by study too, when
    several studies are compared: one candidate key can be in two studies)."""
    cands = cands.assign(
        candidate_val=[_interval(m, h) for m, h in zip(cands["val_accuracy_mean"], cands["val_accuracy_half_width"])],
        candidate_test=[_interval(m, h) for m, h in zip(cands["test_accuracy_mean"], cands["test_accuracy_half_width"])],
        separable=[separability(r) for _, r in cands.iterrows()])
    scope = ["study"] if "study" in cands.columns and "study" in df.columns else []
    text = {tuple(r[c] for c in scope + ["candidate"]): _interval(r["val_accuracy_mean"], r["val_accuracy_half_width"],
                                                                   r["replicates"]) for _, r in cands.iterrows()}
    trials = df.assign(candidate_val=[text.get(tuple(r[c] for c in scope + ["candidate"]), "")
                                      for _, r in df.iterrows()],
                       replicate=[("answered" if r["reused"] else r["replicate"]) for _, r in df.iterrows()])
    return trials, cands


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_html(path: Path, title: str, intro: list[str], df: pd.DataFrame, cands: pd.DataFrame,
               figures: list[tuple[str, Path]]) -> Path:
    trials, cands = _with_figures(df, cands)
    front = cands[cands["pareto"].astype(bool)].sort_values(["params", "representative"])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in intro]
    parts.append(f"<h2>Pareto-optimal candidates ({len(front)}, front of means)</h2>" + table(front, FRONT_COLUMNS))
    parts.append("<p class='muted'>± is the half-width of the 90 % interval of the candidate's mean over its "
                 "replicates; trial: the replicate closest to the mean. Every candidate: "
                 "<a href='candidates.csv'>candidates.csv</a>; every trial: <a href='trials.csv'>trials.csv</a>.</p>")
    for caption, fig in figures:
        parts.append(f"<h2>{html.escape(caption)}</h2>{image(fig, caption)}")
    parts.append(f"<h2>All trials ({len(df)})</h2>" + table(trials.sort_values("number")))
    parts.append("<p class='muted'>Written by kdnas report. Candidates are ranked on the validation split; "
                 "test accuracy is reported only.</p></body></html>")
    atomic_write_bytes(path, "".join(parts).encode("utf-8"))  # a temporary file of its own (see plots.save)
    return path
