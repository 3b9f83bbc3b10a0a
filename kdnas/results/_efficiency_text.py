"""The "Distillation efficiency" section of ``summary.md``: per front member, and per distilled candidate with a
labels-only twin while they are few, its teacher, retained accuracy, compression, efficiency and gain over
labels-only (the metric: kdnas/results/_efficiency.py; what it is for and not for: docs/costs.md)."""

from __future__ import annotations

import pandas as pd

from kdnas.results._candidates import Snapshot, pm
from kdnas.results._effects import is_baseline
from kdnas.results._efficiency import kd_gain, rung_baselines
from kdnas.results._teachers import reference

FEW = 8  # distilled candidates off the front listed too, up to this many (more: the front alone, the CSV has all)


def _times(v) -> str:
    return "–" if v is None or pd.isna(v) else f"{float(v):.1f}x"


def _ratio(v) -> str:
    return "–" if v is None or pd.isna(v) else f"{float(v):.2f}"


def efficiency_lines(snap: Snapshot) -> list[str]:
    cands = snap.candidates().set_index("candidate")
    base = rung_baselines(snap.table)
    front = snap.front()
    keys = {e.key for e in front}
    twins = [e for e in snap.table.estimates() if e.key not in keys and kd_gain(e, base.get(e.rung)) is not None]
    extra = sorted(twins, key=lambda e: (e.attrs.get("params") or 0, e.key)) if len(twins) <= FEW else []
    ref, many = reference(snap.teachers), len(snap.choices) > 1  # one teacher choice: no teacher column
    whom = (f"its own teacher (labels-only: against the reference teacher `{ref}`)" if many else
            "the study's teacher")
    lines = ["", "## Distillation efficiency", "",
             f"Each candidate against {whom}: "
             "*retained*, its mean validation accuracy over the teacher's; *compression*, the teacher's cost over "
             "its own; *efficiency*, MnasNet's score with the teacher's costs as targets, in units of the teacher's "
             "accuracy (1: as good as the teacher at MnasNet's exchange rate); *gain*, its mean minus that of "
             "labels-only training of the same student at the same budget (paired, 90 % interval; replicates: "
             "its own vs the labels-only side's). For judging how well distillation turned a teacher's capacity "
             "into a small student, not for choosing the student to ship (that is the front above) nor for ranking "
             "teachers (a bigger teacher's student shows more compression for the same accuracy): "
             "docs/costs.md, \"Distillation efficiency\"." +
             (f" Below the front: the {len(extra)} other distilled candidates with a labels-only twin." if extra else
              f" The other {len(twins)} distilled candidates with a labels-only twin: `candidates.csv`." if twins
              else ""), "",
             "| trial | front | student | method | chain | " + ("teacher | " if many else "") + "val acc | retained | "
             "compression (params) | compression (latency) | efficiency | gain over labels-only (points, 90 % "
             "interval) |", "|---:|:---:|---|---|---|" + ("---|" if many else "") + "---:|---:|---:|---:|---:|---|"]
    for e in front + extra:
        r = cands.loc[e.key]
        gain, b = kd_gain(e, base.get(e.rung)), (base.get(e.rung) or {}).get(str(e.attrs.get("student")))
        if gain is None:
            text = "labels only" if is_baseline(e) else "no labels-only twin"
        else:
            text = (f"{100 * gain.mean:+.1f} [{100 * gain.lo:+.1f}, {100 * gain.hi:+.1f}] ({e.n}x vs {b.n}x)" +
                    (", within noise" if gain.within_noise else ""))
        teacher = "–" if pd.isna(r["teacher_name"]) else f"`{r['teacher_name']}`"
        lines.append(f"| {int(r['representative'])} | {'yes' if e.key in keys else ''} | `{r['student']}` | "
                     f"`{r['method']}` | `{r['chain']}` | " + (f"{teacher} | " if many else "") + f"{pm(e.estimate)} ({e.n}x){snap.budget(e)} | "
                     f"{_pct(r['retained'])} | {_times(r['compression_params'])} | "
                     f"{_times(r['compression_latency'])} | {_ratio(r['efficiency'])} | {text} |")
    if not front:
        lines.append("| – | | no completed trial yet | | | | | | | | |" + (" |" if many else ""))
    return lines


def _pct(v) -> str:
    return "–" if v is None or pd.isna(v) else f"{float(v):.1%}"
