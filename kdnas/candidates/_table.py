"""The candidate table: one row per candidate of a study, built from its trials' attributes.

A trial that trained a candidate is one *replicate* of it (kdnas/candidates/_identity.py names candidates);
the candidate's validation accuracy is the mean over its replicates with a standard error and a 90 % interval
(kdnas/candidates/_estimate.py). Fronts, picks and effects are computed on candidates, not trials: a
candidate trained three times is one point with a narrower interval, not three points of which the luckiest
makes the front.

Cheap as the study grows: :meth:`CandidateTable.update` takes the study's trials (the storage caches finished
ones) and reads only the trials it has not seen finished, so the search's progress line and intensification
cost milliseconds at thousands of trials (benchmarks/bookkeeping.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from kdnas.candidates._estimate import Estimate, estimate, overdispersion
from kdnas.candidates._identity import candidate_key
from kdnas.costs import DIRECTIONS, METRIC_NAMES, feasible, pareto_mask

KEY = "candidate_key"  # the trial attribute that names its candidate
REUSED = "reused"  # set on a trial answered from the candidate's replicates, without training
INTENSIFY = "intensify"  # set on a trial enqueued to re-evaluate a candidate: why it was chosen
# What a candidate shows from its first replicate (they are alike for every replicate).
DESCRIPTION = ("student", "method", "chain", "chain_length", "candidate", "params", "macs", "latency_ms",
               "latency_iqr_ms", "latency_median_ms", "latency_stable")


@dataclass
class Entry:
    """One candidate: its replicates (trial numbers, validation and test accuracies, seeds) and what it is."""

    key: str
    params: dict[str, Any]  # the Optuna parameters that sample it: what a re-evaluation enqueues
    attrs: dict[str, Any]  # DESCRIPTION, from its first replicate
    trials: list[int] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    test: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    reused: int = 0  # trials answered from its replicates past the cap
    running: int = 0  # trials training it now (a worker's, or an enqueued re-evaluation)
    estimate: Estimate | None = None

    @property
    def n(self) -> int:
        return len(self.val)

    def representative(self) -> int:
        """The trial number of the replicate closest to the mean: the one whose weights stand for the candidate
        (the luckiest would carry the optimism that replicates remove)."""
        assert self.estimate is not None
        return min(zip(self.trials, self.val), key=lambda tv: (abs(tv[1] - self.estimate.mean), tv[0]))[0]

    def test_mean(self) -> float | None:
        vals = [t for t in self.test if t is not None]
        return sum(vals) / len(vals) if vals else None


def trial_key(ua: Mapping[str, Any], recipe: Mapping[str, Any] | None, number: int | None = None) -> str | None:
    """A trial's candidate key; trials stored before kdnas kept one get it from their candidate and the study's
    recipe, so a resumed old study replicates its candidates too. A trial that does not say what it trained
    (made by hand, or by another tool) is a candidate of its own."""
    if KEY in ua:
        return ua[KEY]
    if "candidate" in ua:
        return candidate_key(ua["candidate"], recipe)
    return None if number is None else f"trial {number}"


class CandidateTable:
    """The candidates of one study, updated from its trials (a snapshot list of ``FrozenTrial``)."""

    def __init__(self, n_val: int, objectives: Sequence[str], recipe: Mapping[str, Any] | None = None):
        self.n_val = max(int(n_val), 1)
        self.objectives = list(objectives)
        self.recipe = recipe
        self.entries: dict[str, Entry] = {}
        self._finished: set[int] = set()  # trial numbers already read for good
        self._stale = True
        self._front: list[str] | None = None
        self.ratio = 1.0
        self.reevaluations = 0  # trained trials enqueued by intensification
        self.reevaluations_running = 0  # enqueued or running ones
        self._running: dict[str, list[int]] = {}  # key -> numbers of its running (or waiting) trials
        self.waiting = 0  # enqueued trials not started yet

    def update(self, trials: Iterable[Any]) -> "CandidateTable":
        """Read the trials not read before (finished ones once; running and waiting ones every time)."""
        running: dict[str, list[int]] = {}
        self.reevaluations_running = 0
        self.waiting = 0
        for t in trials:
            if t.number in self._finished:
                continue
            state = t.state.name
            ua = t.user_attrs
            if state in ("RUNNING", "WAITING"):
                key = trial_key(ua, self.recipe)
                if key is not None and not ua.get(REUSED):
                    running.setdefault(key, []).append(t.number)
                self.reevaluations_running += bool(ua.get(INTENSIFY))
                self.waiting += state == "WAITING"
                continue
            self._finished.add(t.number)
            if state != "COMPLETE" or ua.get("val_accuracy") is None or not feasible(t):
                continue
            key = trial_key(ua, self.recipe, t.number)
            entry = self.entries.get(key)
            if entry is None:
                entry = self.entries[key] = Entry(key, dict(t.params), {k: ua.get(k) for k in DESCRIPTION})
            if ua.get(REUSED):
                entry.reused += 1
                continue
            entry.trials.append(t.number)
            entry.val.append(float(ua["val_accuracy"]))
            entry.test.append(ua.get("test_accuracy"))
            entry.seeds.append(ua.get("seed"))
            self.reevaluations += bool(ua.get(INTENSIFY))
            self._stale = True
        for entry in self.entries.values():
            entry.running = len(running.get(entry.key, ()))
        self._running = running
        return self

    def replicates(self, key: str, below: int | None = None) -> int:
        """Completed and running replicates of ``key`` (with ``below``: of trial numbers below it)."""
        e = self.entries.get(key)
        numbers = (e.trials if e is not None else []) + self._running.get(key, [])
        return len(numbers) if below is None else sum(n < below for n in numbers)

    @property
    def trainings(self) -> int:
        return sum(e.n for e in self.entries.values())

    def estimates(self) -> list[Entry]:
        """Every candidate with a replicate, its estimate up to date."""
        if self._stale:
            done = [e for e in self.entries.values() if e.n]
            self.ratio = overdispersion((e.val for e in done), self.n_val)
            for e in done:
                e.estimate = estimate(e.val, self.n_val, self.ratio)
            self._stale = False
            self._front = None
        return [e for e in self.entries.values() if e.n]

    def point(self, e: Entry, accuracy: float | None = None) -> list[float]:
        """The candidate's objective values (accuracy: its mean, or ``accuracy``)."""
        assert e.estimate is not None
        return [float(e.estimate.mean if accuracy is None else accuracy) if o == "accuracy"
                else float(e.attrs[METRIC_NAMES[o]]) for o in self.objectives]

    def front(self) -> list[Entry]:
        """The Pareto front of the candidates' means, by increasing parameters."""
        entries = self.estimates()
        if self._front is None:
            mask = pareto_mask([self.point(e) for e in entries], [DIRECTIONS[o] for o in self.objectives])
            self._front = [e.key for e, m in zip(entries, mask) if m]
        return sorted((self.entries[k] for k in self._front), key=lambda e: e.attrs.get("params") or 0)

    def not_separable(self) -> dict[str, list[str]]:
        """Front members whose interval overlaps that of a member at least as cheap in every cost (which,
        being on the front, has a lower mean): the study cannot yet say the dearer one is more accurate.
        Maps each such member's key to the keys of the members it cannot be told from."""
        front = self.front()
        costs = [o for o in self.objectives if o != "accuracy"]
        out: dict[str, list[str]] = {}
        for a in front:
            for b in front:
                if a is b or not all(float(b.attrs[METRIC_NAMES[c]]) <= float(a.attrs[METRIC_NAMES[c]]) for c in costs):
                    continue
                if b.estimate.mean <= a.estimate.mean and a.estimate.lo <= b.estimate.hi:
                    out.setdefault(a.key, []).append(b.key)
        return out

    def challengers(self) -> list[Entry]:
        """Candidates off the front that would be on it at the top of their interval: the ones that can still
        change the answer."""
        entries = self.estimates()
        front_keys = {e.key for e in self.front()}
        front = np.array([self.point(e) for e in entries if e.key in front_keys])
        if not len(front):
            return []
        sign = np.array([-1.0 if DIRECTIONS[o] == "maximize" else 1.0 for o in self.objectives])
        out = []
        for e in entries:
            if e.key in front_keys:
                continue
            p = np.array(self.point(e, e.estimate.hi)) * sign
            f = front * sign
            if not ((f <= p).all(axis=1) & (f < p).any(axis=1)).any():
                out.append(e)
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One row per candidate (``candidates.csv``), by decreasing mean."""
        front = {e.key for e in self.front()}
        loose = self.not_separable()
        out = []
        for e in sorted(self.estimates(), key=lambda e: -e.estimate.mean):
            est = e.estimate
            out.append({
                "candidate": e.key, "val_accuracy_mean": est.mean, "val_accuracy_se": est.se,
                "val_accuracy_lo": est.lo, "val_accuracy_hi": est.hi, "replicates": est.n,
                "test_accuracy_mean": e.test_mean(), "trials": " ".join(map(str, e.trials)),
                "seeds": " ".join(str(s) for s in e.seeds), "reused_trials": e.reused, "pareto": e.key in front,
                "separable": e.key in front and e.key not in loose,
                **{k: e.attrs.get(k) for k in DESCRIPTION if k != "candidate"},
            })
        return out
