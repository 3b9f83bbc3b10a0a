"""One self-contained ``report.html``: figures embedded as data URIs, tables inline, no script, no network."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from kdnas.core import atomic_write_bytes

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; font-size: 13px; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td.text, th.text { text-align: left; font-family: ui-monospace, monospace; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.muted { color: #777; }
"""

TABLE_COLUMNS = [("number", "trial"), ("state", "state"), ("val_accuracy", "val acc"), ("test_accuracy", "test acc"),
                 ("params", "params"), ("macs", "MACs"), ("latency_ms", "latency (ms)"), ("student", "student"),
                 ("method", "method"), ("chain", "chain"), ("reason", "reason")]
_TEXT = {"state", "student", "method", "chain", "reason"}


def _cell(col: str, v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if col in ("val_accuracy", "test_accuracy"):
        return f"{100 * float(v):.1f}%"
    if col in ("params", "macs", "number"):
        return f"{int(v):,}"
    if col == "latency_ms":
        return f"{float(v):.3f}"
    return html.escape(str(v))


def table(df: pd.DataFrame) -> str:
    cols = [(c, t) for c, t in TABLE_COLUMNS if c in df.columns]
    head = "".join(f'<th class="{"text" if c in _TEXT else ""}">{t}</th>' for c, t in cols)
    rows = "".join("<tr>" + "".join(f'<td class="{"text" if c in _TEXT else ""}">{_cell(c, r[c])}</td>' for c, _ in cols)
                   + "</tr>" for _, r in df.iterrows())
    return f"<table><tr>{head}</tr>{rows}</table>"


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def write_html(path: Path, title: str, intro: list[str], df: pd.DataFrame, figures: list[tuple[str, Path]]) -> Path:
    front = df[df["pareto"].astype(bool)].sort_values("params")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p>{html.escape(line)}</p>" for line in intro]
    parts.append(f"<h2>Pareto-optimal trials ({len(front)})</h2>" + table(front))
    for caption, fig in figures:
        parts.append(f"<h2>{html.escape(caption)}</h2>{image(fig, caption)}")
    parts.append(f"<h2>All trials ({len(df)})</h2>" + table(df.sort_values("number")))
    parts.append("<p class='muted'>Written by kdnas report. Candidates are ranked on the validation split; "
                 "test accuracy is reported only.</p></body></html>")
    atomic_write_bytes(path, "".join(parts).encode("utf-8"))  # a temporary file of its own (see plots.save)
    return path
