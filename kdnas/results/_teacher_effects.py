"""Teacher against teacher: what the choice of teacher did to the same candidate, paired, with intervals.

For each teacher choice B other than the reference A (the first declared teacher, kdnas/results/_teachers.py;
where no trial samples the reference alone, the first choice stands in for it), the difference B - A over *twins*: candidates identical except for the teacher (same student, method with every
hyperparameter, chain), so that nothing else moves between the two arms. Each twin pair's difference is a paired
difference of two candidates' means on the same validation images (``kdnas.candidates.difference``: only their
seed errors count); an architecture's difference is the mean over its pairs, and B's over the architectures
(``kdnas.candidates.mean_difference``), with a 90 % interval: *within noise* when it holds 0. It is the average
over the students, methods and chains the study tried under both teachers, not over every setting.

A chain is screened against the trial's own teacher (assistants strictly smaller), so a chain sampled under a
large teacher may have no twin under a small one: such candidates pair with nothing and are left out.

With rungs, as the gains over labels-only (kdnas/results/_effects.py): each architecture at the highest rung where
twins of it both are, B's difference over the architectures measured at its highest budget (the others listed
apart), and the same runs' difference at the first rung beside it, said when the brief budget misstates it.
"""

from __future__ import annotations

from typing import Sequence

from kdnas.candidates import CandidateTable, Difference, Entry, Merged, difference, estimate, mean_difference
from kdnas.results._effects import ArchGain, Gain, _first_rung_values, _interval, budget_lines
from kdnas.results._teachers import label_of, twin_key

Pairs = dict[str, list[tuple[Entry, Entry]]]  # student -> (A's candidate, B's candidate) twin pairs


def _pairs(entries: list[Entry], ref: str, other: str) -> Pairs:
    """Twin pairs of ``ref``'s and ``other``'s candidates among ``entries``, by student."""
    by_twin: dict[str, dict[str, Entry]] = {}
    for e in entries:
        label = label_of(e.attrs)
        if label in (ref, other):
            by_twin.setdefault(twin_key(e.attrs), {})[label] = e
    out: Pairs = {}
    for twins in by_twin.values():
        if ref in twins and other in twins:
            out.setdefault(str(twins[ref].attrs.get("student")), []).append((twins[ref], twins[other]))
    return out


def _diff(pairs: list[tuple[Entry, Entry]]) -> Difference:
    return mean_difference([difference(b.estimate, a.estimate) for a, b in pairs])


def _brief(first: CandidateTable, pairs: list[tuple[Entry, Entry]]) -> Difference | None:
    """The same runs' difference at the first rung (``pairs``: entries at a higher rung)."""
    diffs = []
    for a, b in pairs:
        va, vb = _first_rung_values(first, a), _first_rung_values(first, b)
        if va is None or vb is None:
            return None
        diffs.append(difference(estimate(vb, first.n_val, first.ratio), estimate(va, first.n_val, first.ratio)))
    return mean_difference(diffs)


def teacher_gains(table: CandidateTable | Merged, teachers: Sequence[str]) -> list[Gain]:
    """For each teacher choice after the first (the reference) that has twins of the reference's candidates, the
    difference to the reference (module docstring), in ``teachers``' order; ``Gain.group`` is the choice."""
    if len(teachers) < 2:
        return []
    ref = teachers[0]
    tables = table.ladder.tables if isinstance(table, Merged) else [table]
    epochs = table.ladder.epochs if isinstance(table, Merged) else [None]
    out = []
    for other in teachers[1:]:
        at = [_pairs(t.estimates(), ref, other) for t in tables]
        per_arch = []
        for s in sorted({s for rung in at for s in rung}):
            r = max(r for r, rung in enumerate(at) if s in rung)  # the highest rung with twins of it
            brief = _brief(tables[0], at[r][s]) if r > 0 else None
            per_arch.append(ArchGain(s, _diff(at[r][s]), len(at[r][s]), epochs[r], brief))
        if not per_arch:
            continue
        top = max(a.epochs or 0 for a in per_arch)
        head = [a for a in per_arch if (a.epochs or 0) == top]
        out.append(Gain(other, head, mean_difference([a.diff for a in head]), epochs[0],
                        tuple(a for a in per_arch if (a.epochs or 0) != top)))
    return out


def _text(d: Difference, ref: str) -> str:
    verdict = "within noise" if d.within_noise else ("better" if d.mean > 0 else "worse")
    return f"{_interval(d)}, {verdict}" + ("" if d.within_noise else f" than `{ref}`")


def section_lines(table: CandidateTable | Merged, teachers: Sequence[str], reference: str | None = None
                  ) -> list[str]:
    """The teacher-against-teacher section of ``summary.md``: only for a study with several teacher choices
    (``teachers``, each compared with the first: the ``reference`` teacher where it is a choice)."""
    if len(teachers) < 2:
        return []
    ref = teachers[0]
    role = ("the reference" if reference in (None, ref) else
            f"the first teacher choice (the reference teacher, `{reference}`, is not sampled alone)")
    lines = ["", "## Teacher against teacher (same candidate, paired)", ""]
    found = teacher_gains(table, teachers)
    if not found:
        return lines + [f"No candidate was trained under `{ref}` ({role}) and under another teacher "
                        "alike in everything else (student, method, hyperparameters, chain), so the study cannot "
                        "compare teachers yet: it takes more trials, or fewer settings to sample."]
    rungs = isinstance(table, Merged)
    lines += [f"Validation accuracy of each candidate distilled from a teacher minus that of its twin distilled from "
              f"`{ref}`, {role} (the same student, method, hyperparameters and chain: only the teacher "
              "differs), averaged per architecture, then over architectures; 90 % intervals. *Within noise*: the "
              "interval holds 0, so " + ("at that budget" if rungs else "at this training budget") + " the study "
              "cannot tell the two teachers apart for these students. A gain over labels-only per teacher is in the "
              "table above. Plot: `effects.png`.", ""]
    head = "| teacher | minus | " + ("budget | " if rungs else "") + "architectures | twin pairs | difference " \
           "(points, 90 % interval) |"
    lines += [head, "|---|---|" + ("---|" if rungs else "") + "---:|---:|---|"]
    for g in found:
        lines.append(f"| `{g.group}` | `{ref}` | " + (f"{g.budget} | " if rungs else "") +
                     f"{len(g.by_arch)} | {g.candidates} | {_text(g.overall, ref)} |")
    unpaired = [t for t in teachers[1:] if t not in {g.group for g in found}]
    if unpaired:
        lines += ["", f"No candidate under {', '.join(f'`{t}`' for t in unpaired)} has a twin under `{ref}` yet."]
    if rungs:
        lines += ["", *budget_lines([("teacher", g) for g in found], versus=f"`{ref}`")]
    return lines
