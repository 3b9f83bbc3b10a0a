"""One self-contained ``report.html``: figures embedded as data URIs, tables inline, no script, no network.

Accuracies are shown as a candidate's mean ± the 90 % half-width with its replicates; a trial's own measurement
stands beside its candidate's figure in the table of trials."""

from __future__ import annotations

import base64
import html
import re
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
                 ("teacher_name", "teacher"), ("rung", "rung"), ("epochs", "epochs"), ("reason", "reason")]
# ``epochs`` is in a study with rungs' candidates only: the budget a member's figures are from.
FRONT_COLUMNS = [("representative", "trial"), ("epochs", "budget (epochs)"), ("candidate_val", "val acc (90 %)"),
                 ("replicates", "replicates"),
                 ("candidate_test", "test acc (90 %)"), ("params", "params"), ("macs", "MACs"),
                 ("latency_ms", "latency (ms)"), ("student", "student"), ("method", "method"), ("chain", "chain"),
                 ("teacher_name", "teacher"), ("efficiency", "distillation efficiency"), ("separable", "separable")]
_TEXT = {"state", "student", "method", "chain", "reason", "separable", "teacher_name"}


def _cell(col: str, v) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and pd.isna(v)):  # NA: a gap in a whole-number column
        return ""
    if isinstance(v, str):
        return html.escape(v)
    if col in ("val_accuracy", "test_accuracy"):
        return f"{100 * float(v):.1f}%"
    if col in ("params", "macs", "number", "representative", "replicates", "replicate", "rung", "epochs"):
        return f"{int(v):,}"
    if col == "latency_ms":
        return f"{float(v):.3f}"
    if col == "efficiency":
        return f"{float(v):.2f}"
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


def markdown(lines: list[str]) -> str:
    """The few forms the summary's sections use (paragraphs, ``- `` items, pipe tables, `code`, **bold**) as
    HTML: so that a section of ``summary.md`` reads the same in ``report.html``."""
    def inline(text: str) -> str:
        text = html.escape(text)
        text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
        return re.sub(r"\*\*([^*]*)\*\*", r"<b>\1</b>", text)

    parts: list[str] = []
    rows: list[list[str]] = []
    items: list[str] = []

    def flush() -> None:
        if rows:
            head, *body = rows
            parts.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>")
        if items:
            parts.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
        rows.clear()
        items.clear()

    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-:") for c in cells):  # not the separator row
                rows.append([inline(c) for c in cells])
            continue
        if line.startswith("- "):
            if rows:
                flush()
            items.append(inline(line[2:]))
            continue
        flush()
        if line.startswith("## "):
            parts.append(f"<h2>{inline(line[3:])}</h2>")
        elif line.strip():
            parts.append(f"<p>{inline(line)}</p>")
    flush()
    return "".join(parts)


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_html(path: Path, title: str, intro: list[str], df: pd.DataFrame, cands: pd.DataFrame,
               figures: list[tuple[str, Path]], sections: list[str] = ()) -> Path:
    """``sections``: lines of ``summary.md`` to show after the front (markdown, see ``markdown``)."""
    trials, cands = _with_figures(df, cands)
    if "rung" in trials and not trials["rung"].notna().any():  # no rungs: every trial at one budget, said once
        trials = trials.drop(columns=["rung", "epochs"])
    # The teacher column only where there is a choice: a single-teacher study's distilled trials all say `teacher`.
    if "teacher_name" in trials and not set(trials["teacher_name"].dropna()) - {"teacher"}:
        trials, cands = trials.drop(columns=["teacher_name"]), cands.drop(columns=["teacher_name"], errors="ignore")
    front = cands[cands["pareto"].astype(bool)].sort_values(["params", "representative"])
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in intro]
    parts.append(f"<h2>Pareto-optimal candidates ({len(front)}, front of means)</h2>" + table(front, FRONT_COLUMNS))
    parts.append("<p class='muted'>± is the half-width of the 90 % interval of the candidate's mean over its "
                 "replicates; trial: the replicate closest to the mean. Every candidate: "
                 "<a href='candidates.csv'>candidates.csv</a>; every trial: <a href='trials.csv'>trials.csv</a>.</p>")
    if sections:
        parts.append(markdown(list(sections)))
    for caption, fig in figures:
        parts.append(f"<h2>{html.escape(caption)}</h2>{image(fig, caption)}")
    parts.append(f"<h2>All trials ({len(df)})</h2>" + table(trials.sort_values("number")))
    parts.append("<p class='muted'>Written by kdnas report. Candidates are ranked on the validation split; "
                 "test accuracy is reported only.</p></body></html>")
    atomic_write_bytes(path, "".join(parts).encode("utf-8"))  # a temporary file of its own (see plots.save)
    return path
