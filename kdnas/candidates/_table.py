"""The candidate table: one row per candidate of a study, built from its trials' attributes.

A trial that trained a candidate is one *replicate* of it (kdnas/candidates/_identity.py names candidates);
the candidate's validation accuracy is the mean over its replicates with a standard error and a 90 % interval
(kdnas/candidates/_estimate.py). Fronts, picks and effects are computed on candidates, not trials: a
candidate trained three times is one point with a narrower interval, not three points of which the luckiest
makes the front.

Cheap as the study grows (benchmarks/bookkeeping.py: a few milliseconds a trial at 5,000 trials):
:meth:`CandidateTable.update` reads only the trials it has not seen finished; an estimate is recomputed only for
the candidates that gained a replicate (all of them only when the pooled overdispersion ratio moved, which
only a replicated candidate moves); the front and the challengers are computed on arrays of the candidates'
points kept beside the entries, not on one Python list per candidate per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from kdnas.candidates._estimate import PRIOR_DF, Z, Estimate, binomial_variance, overdispersion, sample_variance
from kdnas.candidates._identity import candidate_key
from kdnas.costs import DIRECTIONS, METRIC_NAMES, feasible, pareto_mask

KEY = "candidate_key"  # the trial attribute that names its candidate
REUSED = "reused"  # set on a trial answered from the candidate's replicates, without training
INTENSIFY = "intensify"  # set on a trial enqueued to re-evaluate a candidate: why it was chosen
RUNG = "rung"  # the index of the budget a trial trained to (kdnas/candidates/_rungs.py); absent: 0
RUN = "run"  # the number of the trial that started the run (a replicate across rungs); absent: the trial's own
CHECKPOINT = "rung_checkpoint"  # the store key of the run's state at the end of the trial's rung
# What a candidate shows from its first replicate (they are alike for every replicate).
DESCRIPTION = ("student", "method", "chain", "chain_length", "candidate", "teacher_name", "params", "macs",
               "latency_ms", "latency_iqr_ms", "latency_median_ms", "latency_stable")


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
    runs: list[int] = field(default_factory=list)  # by replicate: the run it belongs to (kdnas/candidates/_rungs.py)
    checkpoints: list[str | None] = field(default_factory=list)  # by replicate: its run's checkpoint, if it has one
    reused: int = 0  # trials answered from its replicates past the cap
    running: int = 0  # trials training it now (a worker's, or an enqueued re-evaluation)
    estimate: Estimate | None = None
    rung: int = 0  # the rung its figures are from (kdnas/candidates/_rungs.py); its table's

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

    def __init__(self, n_val: int, objectives: Sequence[str], recipe: Mapping[str, Any] | None = None,
                 rung: int = 0):
        self.n_val = max(int(n_val), 1)
        self.rung = rung  # only the trials that trained to this rung count (a study without rungs: all of them)
        self.objectives = list(objectives)
        self.recipe = recipe
        self.entries: dict[str, Entry] = {}
        self._finished: set[int] = set()  # trial numbers already read for good
        self._front: list[str] | None = None
        self.ratio = 1.0
        self.reevaluations = 0  # trained trials enqueued by intensification
        self.reevaluations_running = 0  # enqueued or running ones
        self._running: dict[str, list[int]] = {}  # key -> numbers of its running (or waiting) trials
        self.waiting = 0  # enqueued trials not started yet
        self._trainings = 0
        self._running_entries: set[str] = set()  # entries whose `running` is not 0
        self._dirty: set[str] = set()  # the candidates that gained a replicate since the last estimates()
        self._replicated: list[str] = []  # candidates with 2+ replicates, in entry order: they make the ratio
        # One row per entry, in entry order: its objective values (accuracy: the mean), the top of its interval,
        # whether it has a replicate. Grown by doubling.
        self._row: dict[str, int] = {}
        self._keys: list[str] = []
        self._by_row: list[Entry] = []
        self._points = np.zeros((16, len(self.objectives)))
        self._hi = np.zeros(16)
        self._has = np.zeros(16, dtype=bool)
        self._stats = np.zeros((16, 4))  # mean, binomial variance, sample variance, replicates (0: none yet)
        self._with_replicate: list[Entry] = []
        self._bad: set[str] = set()  # entries whose costs are not numbers: the per-entry path raises as it did
        self._acc = [j for j, o in enumerate(self.objectives) if o == "accuracy"]

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
            if int(ua.get(RUNG, 0)) != self.rung:
                if state not in ("RUNNING", "WAITING"):
                    self._finished.add(t.number)
                continue
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
                entry = self.entries[key] = Entry(key, dict(t.params), {k: ua.get(k) for k in DESCRIPTION},
                                                  rung=self.rung)
                self._add_row(entry)
            if ua.get(REUSED):
                entry.reused += 1
                continue
            entry.trials.append(t.number)
            entry.val.append(float(ua["val_accuracy"]))
            entry.test.append(ua.get("test_accuracy"))
            entry.seeds.append(ua.get("seed"))
            entry.runs.append(int(ua.get(RUN, t.number)))
            entry.checkpoints.append(ua.get(CHECKPOINT))
            self._trainings += 1
            self.reevaluations += bool(ua.get(INTENSIFY))
            self._dirty.add(key)
        for key in self._running_entries - running.keys():  # only those that ran: not a pass over every entry
            self.entries[key].running = 0
        self._running_entries = {k for k in running if k in self.entries}
        for key in self._running_entries:
            self.entries[key].running = len(running[key])
        self._running = running
        return self

    def _add_row(self, entry: Entry) -> None:
        row = self._row[entry.key] = len(self._row)
        self._keys.append(entry.key)
        self._by_row.append(entry)
        if row == len(self._has):
            self._points, self._hi, self._has, self._stats = (
                np.concatenate([a, np.zeros_like(a)]) for a in (self._points, self._hi, self._has, self._stats))
        for j, o in enumerate(self.objectives):
            if o != "accuracy":
                value = entry.attrs[METRIC_NAMES[o]]
                try:
                    self._points[row, j] = float(value)
                except (TypeError, ValueError):
                    self._bad.add(entry.key)

    def replicates(self, key: str, below: int | None = None) -> int:
        """Completed and running replicates of ``key`` (with ``below``: of trial numbers below it)."""
        e = self.entries.get(key)
        numbers = (e.trials if e is not None else []) + self._running.get(key, [])
        return len(numbers) if below is None else sum(n < below for n in numbers)

    @property
    def trainings(self) -> int:
        return self._trainings

    def estimates(self) -> list[Entry]:
        """Every candidate with a replicate, its estimate up to date."""
        if self._dirty:
            rows = np.array(sorted(self._row[k] for k in self._dirty))
            changed = rows
            was = self._has[rows], self._points[rows][:, self._acc]  # copies: how the front may move
            for k in self._dirty:  # a candidate's own figures, as estimate() makes them
                e, row = self.entries[k], self._row[k]
                mean = sum(e.val) / e.n
                self._stats[row] = (mean, binomial_variance(mean, self.n_val), sample_variance(e.val), e.n)
            grown = [k for k in self._dirty if self.entries[k].n >= 2]
            if grown:  # only a replicated candidate moves the pooled ratio
                known = set(self._replicated)
                if any(k not in known for k in grown):
                    self._replicated = sorted(known.union(grown), key=self._row.__getitem__)
                ratio = overdispersion((self.entries[k].val for k in self._replicated), self.n_val)
                if ratio != self.ratio:  # every estimate moves with it
                    self.ratio, rows = ratio, np.flatnonzero(self._stats[:len(self._row), 3] > 0)
            self._estimate_rows(rows)
            self._dirty = set()
            self._front = self._moved_front(changed, *was)
            first = changed[~was[0]].tolist()  # candidates with their first replicate: into the list, in entry order
            last = self._row[self._with_replicate[-1].key] if self._with_replicate else -1
            if first and first[0] > last:
                self._with_replicate += [self._by_row[r] for r in first]
            elif first:
                self._with_replicate = [self._by_row[r] for r in np.flatnonzero(self._has)]
        return list(self._with_replicate)

    def _moved_front(self, rows: np.ndarray, had: np.ndarray, before: np.ndarray) -> list[str] | None:
        """The front after the candidates in ``rows`` gained a replicate (``had``: whether they had one; ``before``:
        their accuracy then), from the front before and those candidates alone; None: compute it anew.

        Why that is the front of all: a candidate that was off the front, and did not change, stays dominated: by
        a member that did not change, or by one whose mean rose, which dominates whatever it dominated. And a
        candidate dominated by anything is dominated by a front member. Only a member whose mean fell can let
        others onto the front: then the whole front is computed again (a fraction of the re-evaluations)."""
        if self._front is None or self._bad:
            return None
        members = {self._row[k] for k in self._front}
        after = self._points[rows][:, self._acc]
        for row, h, b, a in zip(rows.tolist(), had, before, after):
            if row in members and h and (a < b).any():
                return None
        return self._front_of(sorted(members.union(rows.tolist())))

    def _front_of(self, rows: Sequence[int] | np.ndarray) -> list[str]:
        """The keys of the candidates in ``rows`` (ascending) on their front."""
        mask = pareto_mask(self._points[rows], [DIRECTIONS[o] for o in self.objectives])
        return [self._keys[r] for r, m in zip(np.asarray(rows).tolist(), mask) if m]

    def _estimate_rows(self, rows: np.ndarray) -> None:
        """estimate() for the candidates in ``rows`` at once: the same operations in the same order on the same
        doubles (tests/test_bookkeeping.py checks that every figure is equal), one array operation each."""
        mean, b, sv, k = self._stats[rows].T
        pooled = self.ratio * b
        seed_var = np.where(k < 2, pooled, (PRIOR_DF * pooled + (k - 1) * sv) / (PRIOR_DF + k - 1))
        se = np.sqrt(b + seed_var / k)
        if self._acc:
            self._points[rows[:, None], self._acc] = mean[:, None]
        self._hi[rows] = np.minimum(1.0, mean + Z * se)
        self._has[rows] = True
        by_row = self._by_row
        for row, m, s, n, v in zip(rows.tolist(), mean.tolist(), se.tolist(), k.astype(int).tolist(), seed_var.tolist()):
            by_row[row].estimate = Estimate(m, s, n, v)

    def point(self, e: Entry, accuracy: float | None = None) -> list[float]:
        """The candidate's objective values (accuracy: its mean, or ``accuracy``)."""
        assert e.estimate is not None
        return [float(e.estimate.mean if accuracy is None else accuracy) if o == "accuracy"
                else float(e.attrs[METRIC_NAMES[o]]) for o in self.objectives]

    def _rows(self, entries: list[Entry]) -> np.ndarray:
        """The array rows of ``entries`` (those of estimates(), in entry order)."""
        if self._bad and any(e.key in self._bad for e in entries):
            [self.point(e) for e in entries]  # raises, with the error the values give
        rows = np.flatnonzero(self._has[:len(self._row)])
        assert len(rows) == len(entries)
        return rows

    def front(self) -> list[Entry]:
        """The Pareto front of the candidates' means, by increasing parameters."""
        entries = self.estimates()
        if self._front is None:
            self._front = self._front_of(self._rows(entries))
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
        if not front_keys:
            return []
        rows = self._rows(entries)
        sign = np.array([-1.0 if DIRECTIONS[o] == "maximize" else 1.0 for o in self.objectives])
        f = self._points[[self._row[k] for k in front_keys]] * sign
        p = self._points[rows].copy()
        p[:, self._acc] = self._hi[rows, None]
        p *= sign
        # Every candidate at the top of its interval against every front member at once, one objective at a
        # time (a candidates x members table each): "dominated" as (f <= p).all() & (f < p).any() for each pair.
        all_le = np.ones((len(p), len(f)), dtype=bool)
        any_lt = np.zeros((len(p), len(f)), dtype=bool)
        for j in range(p.shape[1]):
            all_le &= f[:, j] <= p[:, j, None]
            any_lt |= f[:, j] < p[:, j, None]
        dominated = (all_le & any_lt).any(axis=1)
        out = [e for e, d in zip(entries, dominated.tolist()) if not d and e.key not in front_keys]
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
