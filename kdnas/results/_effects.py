"""Did distillation help, and did assistants help? Gains over labels-only as paired differences with intervals.

The baseline of an architecture is its labels-only training (method ``none``): the candidates of that student
with method ``none`` (whatever their chain: labels-only training uses no guide), their replicates pooled. A
distilled candidate's gain is the paired difference of its mean and the baseline's
(``kdnas.candidates.difference``: both are measured on the same validation images, so only the seed parts of
their errors count).

A group (a method, or a chain length) is judged architecture by architecture: its candidates of one architecture
are averaged (the average gain over the hyperparameters and chains this study tried, not over every setting the
method could take), then those per-architecture gains are averaged over the architectures
(``kdnas.candidates.mean_difference``). A 90 % interval holding 0 is *within noise*: the study cannot tell the
group from labels-only at its brief training budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdnas.candidates import CandidateTable, Difference, Entry, Estimate, difference, estimate, mean_difference


@dataclass(frozen=True)
class Gain:
    """One group's gain over labels-only: per architecture (label, difference, candidates) and over them all."""

    group: str
    by_arch: list[tuple[str, Difference, int]]
    overall: Difference

    @property
    def candidates(self) -> int:
        return sum(n for _, _, n in self.by_arch)

    def text(self) -> str:
        """``+1.2 points [0.4, 2.0]``, then ``within noise`` when the interval holds 0."""
        d = self.overall
        verdict = "within noise" if d.within_noise else ("a gain" if d.mean > 0 else "a loss")
        return f"{100 * d.mean:+.1f} points [{100 * d.lo:+.1f}, {100 * d.hi:+.1f}], {verdict}"


def method_name(e: Entry) -> str:
    return str(e.attrs.get("method") or "?").split("(")[0]


def is_baseline(e: Entry) -> bool:
    return method_name(e) == "none"


def baselines(table: CandidateTable, entries: list[Entry]) -> dict[str, Estimate]:
    """Each architecture's labels-only estimate (student label -> estimate), its candidates' replicates pooled."""
    pooled: dict[str, list[float]] = {}
    for e in entries:
        if is_baseline(e):
            pooled.setdefault(str(e.attrs.get("student")), []).extend(e.val)
    return {s: estimate(v, table.n_val, table.ratio) for s, v in pooled.items()}


def _average(estimates: list[Estimate]) -> Estimate:
    """The mean of independent candidates' estimates; its ``seed_var`` (with ``n`` 1) is the variance of that mean
    from the seeds, which is all ``difference`` reads."""
    m = len(estimates)
    var = sum(e.seed_var / e.n for e in estimates) / m ** 2
    return Estimate(sum(e.mean for e in estimates) / m, math.sqrt(var), 1, var)


def gains(table: CandidateTable, by: str) -> list[Gain]:
    """Gains over labels-only of the distilled candidates grouped ``by`` ``"method"`` or ``"chain_length"``, in
    the groups' order; [] when no distilled candidate has a baseline of its architecture."""
    entries = table.estimates()
    base = baselines(table, entries)
    groups: dict[str, dict[str, list[Estimate]]] = {}
    for e in entries:
        student = str(e.attrs.get("student"))
        if is_baseline(e) or student not in base:
            continue
        key = method_name(e) if by == "method" else str(e.attrs.get("chain_length"))
        groups.setdefault(key, {}).setdefault(student, []).append(e.estimate)
    out = []
    for key in sorted(groups, key=lambda k: (by != "method", k)):
        per_arch = [(s, difference(_average(ests), base[s]), len(ests)) for s, ests in sorted(groups[key].items())]
        out.append(Gain(key, per_arch, mean_difference([d for _, d, _ in per_arch])))
    return out


def summary_lines(table: CandidateTable) -> list[str]:
    """The effects section of ``summary.md``."""
    lines = ["", "## Gain over labels-only (same architecture, paired)", ""]
    rows = [("method", g) for g in gains(table, "method")] + [("assistants", g) for g in gains(table, "chain_length")]
    if not rows:
        return lines + ["No distilled candidate has a labels-only (method `none`) candidate of the same architecture "
                        "to compare with; add `none: {}` to the space's methods to measure what distillation adds."]
    lines += ["Validation accuracy of the distilled candidates minus that of labels-only training of the same "
              "student, averaged per architecture, then over architectures; 90 % intervals. *Within noise*: the "
              "interval holds 0, so at this brief training budget the study cannot tell it from labels-only. Plot: "
              "`effects.png`.", "",
              "| by | group | architectures | candidates | gain (points, 90 % interval) |", "|---|---|---:|---:|---|"]
    for by, g in rows:
        lines.append(f"| {by} | `{g.group}` | {len(g.by_arch)} | {g.candidates} | {g.text()} |")
    return lines
