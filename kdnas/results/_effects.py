"""Did distillation help, and did assistants help? Gains over labels-only as paired differences with intervals.

The baseline of an architecture is its labels-only training (method ``none``): the candidates of that student
with method ``none`` (whatever their chain: labels-only training uses no guide), their replicates pooled. A
distilled candidate's gain is the paired difference of its mean and the baseline's
(``kdnas.candidates.difference``: both are measured on the same validation images, so only the seed parts of
their errors count).

A group (a method, a chain length, or in a study with several teacher choices a teacher) is judged architecture by architecture: its candidates of one architecture
are averaged (the average gain over the hyperparameters and chains this study tried, not over every setting the
method could take), then those per-architecture gains are averaged over the architectures
(``kdnas.candidates.mean_difference``). A 90 % interval holding 0 is *within noise*: the study cannot tell the
group from labels-only at its training budget.

With rungs (``search.rungs``) a gain is only as true as its budget: a brief one ranks what converges fast (on
MNIST-5k small students, Hinton KD gained 22.8 points over labels-only after 4 epochs, 0.6 after 20). So each
architecture's gain is measured at the highest rung where both arms are (its distilled candidates of the group
and a labels-only one), and said with that budget. Where that rung is above the first, the same runs' gain at
the first rung is measured too (each run's figure there, read mid-schedule: one schedule spans the last budget),
and when the two differ (the 90 % interval of their difference excludes 0; the difference's standard error
takes the two as independent, which overstates it when a run's figures at two budgets go together) the summary
says the brief budget over- or understates the gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from kdnas.candidates import (CandidateTable, Difference, Entry, Estimate, Ladder, Merged, difference, estimate,
                              mean_difference)
from kdnas.results._rungs_text import epochs
from kdnas.results._teachers import label_of


@dataclass(frozen=True)
class ArchGain:
    """One architecture's gain: the paired difference, how many distilled candidates it averages, and with rungs
    its budget (``epochs``) and the same runs' gain at the first rung (``brief``; None at the first rung)."""

    student: str
    diff: Difference
    candidates: int
    epochs: int | None = None
    brief: Difference | None = None


@dataclass(frozen=True)
class Gain:
    """One group's gain over labels-only: per architecture and over them all (``first``: the first rung's budget,
    with rungs)."""

    group: str
    by_arch: list[ArchGain]
    overall: Difference
    first: int | None = None
    lower: tuple[ArchGain, ...] = ()  # with rungs: architectures whose arms met only below the group's budget

    @property
    def candidates(self) -> int:
        return sum(a.candidates for a in self.by_arch)

    @property
    def budget(self) -> str:
        """``18 ep``, or ``6-18 ep`` when architectures are measured at different budgets; empty without rungs."""
        eps = sorted({a.epochs for a in self.by_arch if a.epochs is not None})
        return "" if not eps else f"{eps[0]} ep" if len(eps) == 1 else f"{eps[0]}-{eps[-1]} ep"

    def text(self) -> str:
        """``+1.2 points [0.4, 2.0]``, then ``within noise`` when the interval holds 0."""
        return _text(self.overall)

    def change(self) -> tuple[Difference, Difference, Difference] | None:
        """Over the architectures measured above the first rung: (their gain there, the same runs' gain at the
        first rung, the first minus the second); None when none is above it."""
        above = [a for a in self.by_arch if a.brief is not None]
        if not above:
            return None
        long = mean_difference([a.diff for a in above])
        brief = mean_difference([a.brief for a in above])  # type: ignore[misc]  # not None: filtered above
        return long, brief, Difference(long.mean - brief.mean, math.hypot(long.se, brief.se))


def _interval(d: Difference) -> str:
    return f"{100 * d.mean:+.1f} points [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}]"


def _text(d: Difference) -> str:
    verdict = "within noise" if d.within_noise else ("a gain" if d.mean > 0 else "a loss")
    return f"{_interval(d)}, {verdict}"


def method_name(e: Entry) -> str:
    return str(e.attrs.get("method") or "?").split("(")[0]


def is_baseline(e: Entry) -> bool:
    return method_name(e) == "none"


def _group_of(e: Entry, by: str) -> str:
    if by == "teacher":
        return str(label_of(e.attrs))
    return method_name(e) if by == "method" else str(e.attrs.get("chain_length"))


def _baseline_entries(entries: list[Entry]) -> dict[str, list[Entry]]:
    out: dict[str, list[Entry]] = {}
    for e in entries:
        if is_baseline(e):
            out.setdefault(str(e.attrs.get("student")), []).append(e)
    return out


def baselines(table: CandidateTable, entries: list[Entry]) -> dict[str, Estimate]:
    """Each architecture's labels-only estimate (student label -> estimate), its candidates' replicates pooled."""
    return {s: estimate([v for e in es for v in e.val], table.n_val, table.ratio)
            for s, es in _baseline_entries(entries).items()}


def _average(estimates: list[Estimate]) -> Estimate:
    """The mean of independent candidates' estimates; its ``seed_var`` (with ``n`` 1) is the variance of that mean
    from the seeds, which is all ``difference`` reads."""
    m = len(estimates)
    var = sum(e.seed_var / e.n for e in estimates) / m ** 2
    return Estimate(sum(e.mean for e in estimates) / m, math.sqrt(var), 1, var)


def _distilled(entries: list[Entry], by: str) -> dict[str, dict[str, list[Entry]]]:
    """group -> student -> the distilled candidates of that group and architecture."""
    out: dict[str, dict[str, list[Entry]]] = {}
    for e in entries:
        if not is_baseline(e):
            out.setdefault(_group_of(e, by), {}).setdefault(str(e.attrs.get("student")), []).append(e)
    return out


def _order(keys, by: str, order: Sequence[str] = ()) -> list[str]:
    """Groups by name (methods before chain lengths); ``order`` first (the declared teachers), in its order."""
    first = {k: i for i, k in enumerate(order)}
    return sorted(keys, key=lambda k: (first.get(k, len(first)), by != "method", k))


def gains(table: CandidateTable | Merged, by: str, order: Sequence[str] = ()) -> list[Gain]:
    """Gains over labels-only of the distilled candidates grouped ``by`` ``"method"``, ``"chain_length"`` or
    ``"teacher"`` (the teacher choice), in the groups' order (``order`` first: the declared teacher choices); []
    when no distilled candidate has a baseline of its architecture. With rungs (a ``Merged``), each
    architecture's at the highest rung with both arms (module docstring)."""
    if isinstance(table, Merged):
        return _ladder_gains(table.ladder, by, order)
    entries = table.estimates()
    base = baselines(table, entries)
    groups = _distilled(entries, by)
    out = []
    for key in _order(groups, by, order):
        per_arch = [ArchGain(s, difference(_average([e.estimate for e in es]), base[s]), len(es))
                    for s, es in sorted(groups[key].items()) if s in base]
        if per_arch:
            out.append(Gain(key, per_arch, mean_difference([a.diff for a in per_arch])))
    return out


def _first_rung_values(first: CandidateTable, e: Entry) -> list[float] | None:
    """The first rung's figures of the runs of ``e`` (an entry at a higher rung); None if one is missing."""
    e0 = first.entries.get(e.key)
    runs = set(e.runs)
    vals = [v for v, run in zip(e0.val, e0.runs) if run in runs] if e0 is not None else []
    return vals if len(vals) == len(runs) else None


def _brief(first: CandidateTable, dist: list[Entry], base: list[Entry]) -> Difference | None:
    """The gain of the same runs (``dist`` against ``base``, entries at a higher rung) at the first rung."""
    d = [_first_rung_values(first, e) for e in dist]
    b = [_first_rung_values(first, e) for e in base]
    if any(v is None for v in d + b):
        return None
    ests = [estimate(v, first.n_val, first.ratio) for v in d]  # type: ignore[arg-type]
    pooled = estimate([x for v in b for x in v], first.n_val, first.ratio)  # type: ignore[union-attr]
    return difference(_average(ests), pooled)


def _ladder_gains(ladder: Ladder, by: str, order: Sequence[str] = ()) -> list[Gain]:
    rungs = [(_baseline_entries(t.estimates()), _distilled(t.estimates(), by)) for t in ladder.tables]
    epochs = ladder.epochs or [None] * ladder.rungs
    out = []
    for key in _order({k for _, groups in rungs for k in groups}, by, order):
        per_arch = []
        for s in sorted({s for _, groups in rungs for s in groups.get(key, {})}):
            for r in range(ladder.rungs - 1, -1, -1):  # the highest rung with both arms
                base, dist = rungs[r][0].get(s), rungs[r][1].get(key, {}).get(s)
                if base and dist:
                    break
            else:
                continue
            table = ladder.tables[r]
            pooled = estimate([v for e in base for v in e.val], table.n_val, table.ratio)
            diff = difference(_average([e.estimate for e in dist]), pooled)
            brief = _brief(ladder.first, dist, base) if r > 0 else None
            per_arch.append(ArchGain(s, diff, len(dist), epochs[r], brief))
        if per_arch:
            # The group's gain is that of the architectures measured at its highest budget: one lower down is a
            # brief budget's figure, which misstates the gain (docs/results.md), and would be averaged in unsaid.
            top = max(per_arch, key=lambda a: a.epochs or 0).epochs
            head = [a for a in per_arch if a.epochs == top]
            out.append(Gain(key, head, mean_difference([a.diff for a in head]), epochs[0],
                            tuple(a for a in per_arch if a.epochs != top)))
    return out


def summary_lines(table: CandidateTable | Merged, teachers: Sequence[str] = ()) -> list[str]:
    """The effects section of ``summary.md``; with several ``teachers`` (the study's teacher choices, declared
    order) the gain of each teacher choice too."""
    lines = ["", "## Gain over labels-only (same architecture, paired)", ""]
    rows = [("method", g) for g in gains(table, "method")] + [("assistants", g) for g in gains(table, "chain_length")]
    if len(teachers) > 1:
        rows += [("teacher", g) for g in gains(table, "teacher", teachers)]
    if not rows:
        return lines + ["No distilled candidate has a labels-only (method `none`) candidate of the same architecture "
                        "to compare with; add `none: {}` to the space's methods to measure what distillation adds."]
    if not isinstance(table, Merged):
        return lines + [
            "Validation accuracy of the distilled candidates minus that of labels-only training of the same "
            "student, averaged per architecture, then over architectures; 90 % intervals. *Within noise*: the "
            "interval holds 0, so at the study's training budget the study cannot tell it from labels-only. Plot: "
            "`effects.png`.", "",
            "| by | group | architectures | candidates | gain (points, 90 % interval) |", "|---|---|---:|---:|---|",
            *(f"| {by} | `{g.group}` | {len(g.by_arch)} | {g.candidates} | {g.text()} |" for by, g in rows)]
    lines += ["Validation accuracy of the distilled candidates minus that of labels-only training of the same "
              "student, per architecture at the **highest budget where both were trained** (a candidate goes on to "
              "a longer budget only while it ranks among the best, so that budget can differ by architecture), "
              "averaged over architectures; 90 % intervals. *Within noise*: the interval holds 0, so at that budget "
              "the study cannot tell it from labels-only. Plot: `effects.png`.", "",
              "| by | group | budget | architectures | candidates | gain (points, 90 % interval) |",
              "|---|---|---|---:|---:|---|",
              *(f"| {by} | `{g.group}` | {g.budget} | {len(g.by_arch)} | {g.candidates} | {g.text()} |"
                for by, g in rows)]
    return lines + ["", *budget_lines(rows)]


def _what(by: str, g: Gain) -> str:
    return f"`{g.group}`" + {"assistants": " assistants", "teacher": " teacher"}.get(by, "")


def budget_lines(rows: list[tuple[str, Gain]], versus: str = "labels-only") -> list[str]:
    """With rungs: for each gain measured above the first rung, whether the same runs' gain at the first rung
    differs from it (one line each where it does; one line for those that agree). ``versus``: what the gains are
    over."""
    out, agree, first = [], [], None
    for by, g in rows:
        change = g.change()
        first = g.first
        if change is None:
            continue
        long, brief, delta = change
        what = _what(by, g)
        if delta.within_noise:
            agree.append(what)
            continue
        eps = sorted({a.epochs for a in g.by_arch if a.brief is not None})
        at = f"{eps[0]}" if len(eps) == 1 else f"{eps[0]}-{eps[-1]}"
        over = brief.mean > long.mean
        by_how_much = Difference(abs(delta.mean), delta.se)
        out.append(f"- {what}: at {epochs(first)} it gained {_interval(brief)} over {versus}, at {at} epochs "
                   f"{_interval(long)} (the same runs): the brief budget {'over' if over else 'under'}states it by "
                   f"{_interval(by_how_much)}.")
    if agree:
        out.append(f"- {', '.join(agree)}: the same runs' gain at {epochs(first)} agrees with the longer budget's "
                   "within noise.")
    for by, g in rows:
        if g.lower:
            what = _what(by, g)
            eps = sorted({a.epochs for a in g.lower})
            low = mean_difference([a.diff for a in g.lower])
            out.append(f"- {what}: {len(g.lower)} more architecture{'s' * (len(g.lower) > 1)} had both arms only at "
                       f"{'-'.join(map(str, (eps[0], eps[-1]) if len(eps) > 1 else eps))} epochs, "
                       f"{_interval(low)} there: left out of its gain above (a brief budget's gain is not the "
                       f"longer one's).")
    if not out:
        both = ("no distilled and labels-only candidate of one architecture" if versus == "labels-only" else
                f"no two candidates alike but for the teacher (one of them `{versus.strip('`')}`'s)")
        return [f"No gain was measured above the first budget ({epochs(first)}) yet: {both} both went on to a "
                "longer one."]
    return ["How the budget changed each gain (first rung: each run's figure there, read mid-schedule; the "
            "difference's interval takes the two budgets as independent):", "", *out]
