"""What a study with rungs (``search.rungs``) says about its budgets, in ``summary.md`` and ``report.html``.

Why a section of its own: a brief budget does not only add noise, it biases the ranking towards what converges
fast (kdnas/candidates/_rungs.py). So the report shows, rung by rung, how many candidates reached each budget
and how many were kept, and between consecutive rungs how far the ranking of the candidates at both still holds
(Kendall's tau of their mean validation accuracies) and who moved most: the first rung's leader and where it
ended, the top rung's leader and where it started.
"""

from __future__ import annotations

import numpy as np

from kdnas.candidates import Entry, Ladder, kept_count


def kendall_tau(x, y) -> float:
    """Kendall's tau-b of two equally long sequences (ties counted as scipy.stats.kendalltau counts them); NaN
    when fewer than two pairs or one side is constant. In numpy: importing SciPy's statistics costs a report
    seconds on a small machine, and a rung holds at most a few thousand candidates (O(n^2) pairs, row by row)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return float("nan")
    num = untied_x = untied_y = 0.0
    for i in range(len(x) - 1):  # one row of pairs at a time: memory linear in the candidates, not quadratic
        sx, sy = np.sign(x[i + 1:] - x[i]), np.sign(y[i + 1:] - y[i])
        num += float((sx * sy).sum())
        untied_x += np.count_nonzero(sx)
        untied_y += np.count_nonzero(sy)
    denom = np.sqrt(untied_x * untied_y)
    return float("nan") if denom == 0 else num / denom


def epochs(n: int) -> str:
    return f"{n} epoch{'s' * (n != 1)}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _by_mean(entries: list[Entry]) -> list[str]:
    """Keys by decreasing mean validation accuracy (then key: a ranking never depends on finishing order)."""
    return [e.key for e in sorted(entries, key=lambda e: (-e.estimate.mean, e.key))]


def _name(e: Entry) -> str:
    return f"#{e.representative()} (`{e.attrs.get('student')}` `{e.attrs.get('method')}`)"


def rung_rows(ladder: Ladder) -> list[dict]:
    """Per rung: its budget, the candidates that reached it, how many of them are kept (``floor(n * keep)``; the
    last rung keeps none), how many went on, and Kendall's tau of the means with the rung before (its count)."""
    out = []
    at = [{e.key: e for e in t.estimates()} for t in ladder.tables]
    for r, here in enumerate(at):
        last = r == ladder.rungs - 1
        common = [k for k in here if r and k in at[r - 1]]
        tau = kendall_tau([at[r - 1][k].estimate.mean for k in common], [here[k].estimate.mean for k in common])
        out.append({"rung": r + 1, "epochs": ladder.epochs[r], "candidates": len(here),
                    "kept": None if last else kept_count(len(here), ladder.keep),
                    "went_on": None if last else sum(k in at[r + 1] for k in here),
                    "tau": tau if r else None, "common": len(common) if r else None})
    return out


def movers(ladder: Ladder) -> list[str]:
    """Lines on who moved: the first rung's leader and where it ended, the highest rung's leader and where it
    started, and between consecutive rungs the candidate whose rank (among those at both) moved most."""
    at = [{e.key: e for e in t.estimates()} for t in ladder.tables]
    if not at[0]:
        return []
    eps = ladder.epochs
    top = ladder.front_rung()
    highest = ladder.highest()
    lines = []
    lead = _by_mean(list(at[0].values()))[0]
    end = highest[lead]
    end_rank = _by_mean(list(at[end.rung].values())).index(lead) + 1
    lines.append(f"- The most accurate candidate at the first rung ({eps[0]} ep), {_name(end)}, "
                 f"{at[0][lead].estimate.text()}, " + (
                     "went no further (not kept, or not promoted yet)." if end.rung == 0 else
                     f"reached rung {end.rung + 1} ({eps[end.rung]} ep): {end.estimate.text()}, "
                     f"{_ordinal(end_rank)} of {len(at[end.rung])} there."))
    best = _by_mean(list(at[top].values()))[0]
    if top > 0 and best != lead:
        start = _by_mean(list(at[0].values())).index(best) + 1
        lines.append(f"- The most accurate candidate at the highest rung reached ({eps[top]} ep), "
                     f"{_name(highest[best])}, {at[top][best].estimate.text()}, was {_ordinal(start)} of "
                     f"{len(at[0])} at the first rung ({at[0][best].estimate.text()}).")
    for r in range(1, top + 1):
        common = [k for k in at[r] if k in at[r - 1]]
        if len(common) < 3:
            continue  # two candidates swap or not: the tau says it
        before = {k: i for i, k in enumerate(_by_mean([at[r - 1][k] for k in common]), start=1)}
        after = {k: i for i, k in enumerate(_by_mean([at[r][k] for k in common]), start=1)}
        k = max(common, key=lambda k: (abs(after[k] - before[k]), -after[k]))
        if after[k] != before[k]:
            lines.append(f"- From {eps[r - 1]} to {eps[r]} ep the largest move among the {len(common)} candidates at "
                         f"both: {_name(highest[k])}, {_ordinal(before[k])} -> {_ordinal(after[k])} "
                         f"({at[r - 1][k].estimate.text()} -> {at[r][k].estimate.text()}).")
    return lines


def share(keep: float) -> str:
    """``1/3`` for a unit fraction (as a study file would say it), else the number."""
    n = round(1 / keep)
    return f"1/{n}" if abs(keep * n - 1) < 1e-6 else f"{keep:.3g}"


def _tau(v: float | None) -> str:
    return "–" if v is None else "undefined" if np.isnan(v) else f"{v:.2f}"


def ladder_lines(ladder: Ladder) -> list[str]:
    """The ``summary.md`` section "How rankings changed between rungs"."""
    keep = ladder.keep
    lines = ["", "## How rankings changed between rungs", "",
             f"Every candidate trains {epochs(ladder.epochs[0])}; at each rung the best {share(keep)} of the candidates "
             "that reached it (non-dominated sorting of their means, then crowding) go on from their checkpoint to "
             "the next budget, under one learning-rate schedule that spans the last. *Kept*: floor(n x keep) of the "
             "n candidates there; *went on*: those promoted so far (n only grows: one kept when fewer had arrived "
             "stays promoted). Kendall tau: how well the order of the mean "
             "validation accuracies at the rung before holds at this one, among the candidates at both (1: the same "
             "order, 0: unrelated; over a few close candidates, the best of the rung before, it is noisy).", "",
             "| rung | budget | candidates | kept | went on | Kendall tau with the rung before (candidates at both) |",
             "|---:|---:|---:|---:|---:|---|"]
    for row in rung_rows(ladder):
        kept = "–" if row["kept"] is None else str(row["kept"])
        went = "–" if row["went_on"] is None else str(row["went_on"])
        tau = "–" if row["common"] is None else f"{_tau(row['tau'])} ({row['common']})"
        lines.append(f"| {row['rung']} | {row['epochs']} ep | {row['candidates']} | {kept} | {went} | {tau} |")
    moved = movers(ladder)
    return lines + (["", *moved] if moved else [])


def intro_line(ladder: Ladder) -> str:
    """The rungs line at the top of ``summary.md``."""
    eps = ", ".join(map(str, ladder.epochs))
    return (f"Rungs: budgets of {eps} epochs, keep {share(ladder.keep)}. Each candidate's figures are at the highest "
            "budget it reached (`@E ep`); two candidates are compared at the highest budget both reached.")
