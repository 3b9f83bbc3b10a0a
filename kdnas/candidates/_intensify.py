"""Intensification: spend part of the trainings on the candidates that decide the answer.

A brief training is noisy (kdnas/candidates/_estimate.py): a study that trains every proposal once reports a
front of the luckiest draws. SMAC3 answers this with *racing* (Hutter et al. 2011; Lindauer et al. 2022): the
incumbent is re-run on more seeds, and a challenger must hold up on the same number of seeds before it
replaces it. kdnas does the same for a front:

* after the first ``after`` trainings (exploration first: with few candidates there is nothing to decide),
* a ``share`` of the trainings re-evaluates a candidate,
* chosen among the front members and the challengers (off the front, but on it at the top of their interval):
  fewest replicates first, front members before challengers, then the widest interval. Why not the widest
  interval alone: at a given number of replicates the interval is narrowest at the highest accuracy (the
  binomial variance p (1 - p) is smallest there), so the luckiest single draw, the one most in need of a
  second look, would be re-evaluated last. A candidate at ``search.replicates`` replicates (or with that
  many running) is not chosen again.

A re-evaluation is an ordinary trial with enqueued parameters (``study.enqueue_trial``), so storage, workers
and resume treat it like any other; it records why it was chosen (``intensify``). docs/search.md has the
measurements behind the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kdnas.candidates._table import CandidateTable, Entry


@dataclass(frozen=True)
class Choice:
    entry: Entry
    why: str  # "front", "challenger", or "rest" (any candidate under the cap: see ``choose(..., rest=True)``)


def due(table: CandidateTable, after: int, share: float) -> bool:
    """Whether the next training should re-evaluate: past the first ``after`` trainings, until re-evaluations
    are ``share`` of the trainings that followed them."""
    trainings = table.trainings + sum(e.running for e in table.entries.values())
    if share <= 0 or trainings < after:
        return False
    return table.reevaluations + table.reevaluations_running < share * (trainings - after + 1)


def choose(table: CandidateTable, cap: int, count: Callable[[Entry], int] | None = None,
           rest: bool = False) -> Choice | None:
    """The candidate to re-evaluate among the front and its challengers under ``cap`` (module docstring).
    ``count``: a candidate's replicates, done and running (default: in ``table``; in a study with rungs, its
    runs at the first rung, where a re-evaluation starts). ``rest``: when none of those is under the cap, any
    candidate that is (fewest replicates first): a sampler stuck on what it knows still has arms to complete."""
    count = count or (lambda e: e.n + e.running)
    front = table.front()
    pool = [Choice(e, "front") for e in front] + [Choice(e, "challenger") for e in table.challengers()]
    pool = [c for c in pool if count(c.entry) < cap]
    if not pool and rest:
        pool = [Choice(e, "rest") for e in table.estimates() if count(e) < cap]
    if not pool:
        return None
    return min(pool, key=lambda c: (count(c.entry), c.why != "front", -c.entry.estimate.se))
