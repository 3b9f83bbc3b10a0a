"""Rungs: budgets of training that candidates climb while they stay among the best (``search.rungs``).

A brief budget does not only add noise, it biases the answer: it ranks what converges fast (docs/search.md,
"Rungs"). So every candidate trains the first budget, and at each rung the best ``keep`` share of the candidates
that reached it continues, from its checkpoint, to the next budget. This is asynchronous successive halving
(ASHA, Li et al. 2020) with the ranking of multi-objective ASHA (Schmucker et al. 2021) and SMAC3's tie-break:

* the candidates at a rung are ranked by non-dominated sorting of their means there (accuracy up, costs down),
  then by crowding distance inside a front (the ends of a front first: they span it), then by key, so that a
  ranking never depends on the order trials finished in;
* the first ``floor(n * keep)`` of the ``n`` candidates that reached the rung are *kept*; a run of a kept
  candidate that has not gone on yet is promoted. ``n`` only grows, so a candidate not kept now may be kept
  later, and one kept stays promotable (ASHA's rule: nobody waits for a rung to fill);
* a free worker promotes before it starts a new candidate, from the highest rung down: the budget goes where
  the study knows most.

Each rung is a :class:`~kdnas.candidates.CandidateTable` of its own (the trials that ended there), so a
candidate's figure at a rung is the mean of its replicates there, with its interval. A study without rungs is
a ladder of one rung: its trials carry no ``rung`` attribute and are rung 0.

Trial attributes: ``rung`` (index of the budget reached), ``epochs`` (that budget), ``run`` (the number of the
trial that started the run: a replicate's identity across rungs), ``promoted_from`` (the trial whose checkpoint
this one continued).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from kdnas.candidates._estimate import Z
from kdnas.candidates._table import CHECKPOINT, KEY, RUN, RUNG, CandidateTable, Entry
from kdnas.costs import DIRECTIONS

EPOCHS, PROMOTED_FROM = "epochs", "promoted_from"
TWIN_OF = "twin_of"  # set on a new run of a labels-only candidate started for a kept distilled one (its key)
# What a promotion's enqueued attributes say (kdnas/study/_rung_trial.py), carried over when it is retried.
CARRIED = (KEY, PROMOTED_FROM, RUNG, RUN, CHECKPOINT, "seed")


def rung_of(ua: Mapping[str, Any]) -> int:
    return int(ua.get(RUNG, 0))


def nondominated_ranks(points: np.ndarray) -> np.ndarray:
    """The front index of each row of ``points`` (every column minimised): 0 for the non-dominated rows, 1 for
    those dominated only by rows of front 0, and so on."""
    n = len(points)
    le = (points[:, None, :] <= points[None, :, :]).all(axis=2)
    lt = (points[:, None, :] < points[None, :, :]).any(axis=2)
    dominates = le & lt  # dominates[i, j]: row i dominates row j
    count = dominates.sum(axis=0)
    ranks = np.full(n, -1)
    level, current = 0, np.flatnonzero(count == 0)
    while len(current):
        ranks[current] = level
        count = count - dominates[current].sum(axis=0)
        count[ranks >= 0] = -1
        current = np.flatnonzero(count == 0)
        level += 1
    return ranks


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each row within ``points`` (one front): the ends of each objective infinite,
    others the sum over objectives of the normalised gap between their neighbours."""
    n, m = points.shape
    out = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for j in range(m):
        order = np.argsort(points[:, j], kind="stable")
        col = points[order, j]
        span = col[-1] - col[0]
        out[order[0]] = out[order[-1]] = np.inf
        if span > 0:
            out[order[1:-1]] += (col[2:] - col[:-2]) / span
    return out


def rank(keys: Sequence[str], points: np.ndarray) -> list[int]:
    """Indices of ``keys`` best first: by front, then by decreasing crowding distance in it, then by key."""
    if not len(keys):
        return []
    # In key order first: crowding sorts each objective stably, so which of equal points count as a front's ends
    # must not depend on the order the trials finished in.
    by_key = sorted(range(len(keys)), key=keys.__getitem__)
    points = np.asarray(points, float).reshape(len(keys), -1)[by_key]
    keys = [keys[i] for i in by_key]
    fronts = nondominated_ranks(points)
    dist = np.zeros(len(keys))
    for level in set(fronts.tolist()):
        members = np.flatnonzero(fronts == level)
        dist[members] = crowding(points[members])
    return [by_key[i] for i in sorted(range(len(keys)), key=lambda i: (fronts[i], -dist[i], keys[i]))]


def twin_params(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Optuna parameters of the labels-only twin of the candidate sampled by ``params``: its student's, and
    method ``none`` (which samples no hyperparameter and no chain); None when the space samples no method."""
    if "method" not in params:
        return None
    return {**{k: v for k, v in params.items() if k.startswith("student.")}, "method": "none"}


def _student(e: Entry) -> str:
    return json.dumps((e.attrs.get("candidate") or {}).get("student"), sort_keys=True)


def kept_count(n: int, keep: float) -> int:
    return math.floor(n * keep + 1e-9)  # 9 * (1/3) is 2.9999999999999996 in floating point


@dataclass(frozen=True)
class Promotion:
    """A run to continue: trial ``source`` (at rung ``rung - 1``) goes on to rung ``rung``."""

    source: int
    rung: int
    entry: Entry  # the candidate at the source's rung


class Ladder:
    """One :class:`CandidateTable` per rung, the runs at each rung, and which of them went on.

    ``scalar`` ranks candidates by one number instead (a study in score mode: its combined score of an entry)."""

    def __init__(self, n_val: int, objectives: Sequence[str], recipe: Mapping[str, Any] | None,
                 epochs: Sequence[int] = (), keep: float = 1 / 3,
                 scalar: Callable[[Entry], float] | None = None, baselines: bool = True):
        self.epochs = list(epochs)
        self.keep, self.scalar, self.baselines = keep, scalar, baselines
        self.tables = [CandidateTable(n_val, objectives, recipe, rung=r) for r in range(max(1, len(self.epochs)))]
        self.promoted: set[int] = set()  # trials another trial continues (or is about to)
        self.twins_started: set[str] = set()  # distilled candidates whose labels-only twin a trial was started for
        self._seen: set[int] = set()  # finished trials read for good

    @property
    def rungs(self) -> int:
        return len(self.tables)

    def update(self, trials: Iterable[Any]) -> "Ladder":
        if self.rungs == 1:  # no promotions to track: the table alone (its own pass skips what it has read)
            self.tables[0].update(trials)
            return self
        trials = list(trials)
        for t in trials:
            if t.number in self._seen:
                continue
            if PROMOTED_FROM in t.user_attrs:
                self.promoted.add(int(t.user_attrs[PROMOTED_FROM]))
            if TWIN_OF in t.user_attrs:
                self.twins_started.add(str(t.user_attrs[TWIN_OF]))
            if t.state.is_finished():
                self._seen.add(t.number)
        for table in self.tables:
            table.update(trials)
        return self

    @property
    def waiting(self) -> int:
        """Enqueued trials not started yet, at any rung."""
        return sum(t.waiting for t in self.tables)

    @property
    def first(self) -> CandidateTable:
        """Rung 0: every run starts there (the replicate cap and the sampler's answers count it)."""
        return self.tables[0]

    def front_rung(self) -> int:
        """The highest rung any candidate reached (0 before any did)."""
        for r in range(self.rungs - 1, -1, -1):
            if self.tables[r].estimates():
                return r
        return 0

    @property
    def top(self) -> CandidateTable:
        """The table of the highest rung reached: the front a study reports is built there, every member measured
        at the same budget."""
        return self.tables[self.front_rung()]

    def ranking(self, r: int) -> list[Entry]:
        """The candidates at rung ``r``, best first (module docstring)."""
        table = self.tables[r]
        entries = table.estimates()
        if not entries:
            return []
        if self.scalar is not None:
            return sorted(entries, key=lambda e: (-self.scalar(e), e.key))
        sign = np.array([-1.0 if DIRECTIONS[o] == "maximize" else 1.0 for o in table.objectives])
        points = np.array([table.point(e) for e in entries]) * sign
        return [entries[i] for i in rank([e.key for e in entries], points)]

    def kept(self, r: int) -> list[Entry]:
        """The candidates at rung ``r`` that go on to the next rung."""
        ranked = self.ranking(r)
        return ranked[:kept_count(len(ranked), self.keep)]

    def next_promotion(self) -> Promotion | None:
        """The run to continue now, or None: from the highest rung down, the first kept candidate (in rank order)
        with a run at that rung that has not gone on, its earliest such run. With ``baselines``, a kept distilled
        candidate takes its labels-only twin (the same student, method ``none``, no chain) along right after it:
        the gain of its method is then measured at the budget it reached, not only at the first rung's, where
        (docs/search.md, "Rungs") a brief figure misstates it."""
        for r in range(self.rungs - 2, -1, -1):
            twins = self._labels_only(r) if self.baselines else {}
            for entry in self.kept(r):
                for e in (entry, twins.get(_student(entry))):
                    waiting = [] if e is None else [n for n in e.trials if n not in self.promoted]
                    if waiting:
                        return Promotion(min(waiting), r + 1, e)
        return None

    def missing_twins(self) -> list[Entry]:
        """Kept distilled candidates (at any rung but the last) whose student the study never trained on labels
        only, and for which no such run was started: each needs a labels-only twin before its gain can be
        measured at all (``twin_params`` makes its parameters)."""
        have = set(self._labels_only(0))  # every candidate passes the first rung
        out = []
        for r in range(self.rungs - 1):
            for e in self.kept(r):
                student = _student(e)
                cand = e.attrs.get("candidate") or {}
                if (cand.get("method") or {}).get("name") not in (None, "none") and student not in have \
                        and e.key not in self.twins_started:
                    out.append(e)
                    have.add(student)
        return out

    def _labels_only(self, r: int) -> dict[str, Entry]:
        """The labels-only candidates at rung ``r`` (no chain), by student."""
        out = {}
        for e in self.tables[r].estimates():
            cand = e.attrs.get("candidate") or {}
            if (cand.get("method") or {}).get("name") == "none" and not (cand.get("chain") or {}).get("assistants"):
                out[_student(e)] = e
        return out

    def highest(self) -> dict[str, Entry]:
        """Each candidate at the highest rung it reached (its entry in that rung's table)."""
        out: dict[str, Entry] = {}
        for table in self.tables:
            for e in table.estimates():
                out[e.key] = e
        return out

    def view(self) -> "CandidateTable | Merged":
        """What a study reports: without rungs its one table; with them, every candidate at its highest rung and
        the front of :class:`Merged` (each pair compared at the highest budget both reached)."""
        return self.tables[0] if self.rungs == 1 else Merged(self)


def dominated_at_common_rung(ladder: Ladder, keys: Sequence[str], hi: float | None = None,
                             by: Sequence[str] | None = None) -> list[bool]:
    """For each of ``keys``: whether a candidate of ``by`` (default: every candidate) dominates it at the highest
    rung both reached. ``hi``: judge ``keys`` at ``hi`` standard errors above their means (a challenger at the top
    of its interval). One array comparison per rung: milliseconds for a thousand candidates."""
    top = ladder.highest()
    by = list(top) if by is None else list(by)
    out = np.zeros(len(keys), dtype=bool)
    for r, table in enumerate(ladder.tables):
        rows = [i for i, k in enumerate(keys) if top[k].rung >= r]
        cols = [o for o in by if top[o].rung >= r]
        if not rows or not cols:
            continue
        sign = np.array([-1.0 if DIRECTIONS[o] == "maximize" else 1.0 for o in table.objectives])

        def at(k: str, z: float | None) -> list[float]:
            e = table.entries[k]
            return table.point(e, None if z is None else min(1.0, e.estimate.mean + z * e.estimate.se))

        p = np.array([at(keys[i], hi) for i in rows]) * sign
        q = np.array([at(o, None) for o in cols]) * sign
        dominates = (q[None] <= p[:, None]).all(axis=2) & (q[None] < p[:, None]).any(axis=2)
        h_rows = np.array([top[keys[i]].rung for i in rows])
        h_cols = np.array([top[o].rung for o in cols])
        common = np.minimum(h_rows[:, None], h_cols[None, :]) == r  # this rung is the pair's highest common one
        itself = np.array([keys[i] for i in rows], dtype=object)[:, None] == np.array(cols, dtype=object)[None, :]
        out[rows] |= (dominates & common & ~itself).any(axis=1)
    return out.tolist()


class Merged:
    """The candidates of a study with rungs, each at its highest rung: the table a report, ``--pick`` and
    intensification read. It answers what :class:`CandidateTable` answers (``estimates``, ``front``,
    ``not_separable``, ``challengers``, ``rows``), with one difference that is the point of rungs: two
    candidates are compared at the highest budget *both* reached, never a long run against a brief one. A
    candidate stopped at the first rung stays on the front only if nothing beats it there; a figure always
    says its rung (``Entry.rung``; ``rows()`` gives ``rung`` and ``epochs``)."""

    def __init__(self, ladder: Ladder):
        self.ladder = ladder
        first = ladder.first
        self.n_val, self.objectives, self.recipe = first.n_val, first.objectives, first.recipe
        self.ratio = first.ratio  # the first rung has the most replicated candidates
        self.entries = ladder.highest()
        self._front: list[Entry] | None = None

    @property
    def trainings(self) -> int:
        return sum(t.trainings for t in self.ladder.tables)

    @property
    def waiting(self) -> int:
        return self.ladder.waiting

    def replicates(self, key: str, below: int | None = None) -> int:
        return self.ladder.first.replicates(key, below)

    def estimates(self) -> list[Entry]:
        return list(self.entries.values())

    def point(self, e: Entry, accuracy: float | None = None) -> list[float]:
        return self.ladder.tables[e.rung].point(e, accuracy)

    def front(self) -> list[Entry]:
        """The candidates no other beats at the highest budget both reached, by increasing parameters."""
        if self._front is None:
            keys = list(self.entries)
            mask = dominated_at_common_rung(self.ladder, keys)
            self._front = sorted((self.entries[k] for k, d in zip(keys, mask) if not d),
                                 key=lambda e: e.attrs.get("params") or 0)
        return list(self._front)

    def challengers(self) -> list[Entry]:
        """Candidates off the front that no front member would beat at the top of their interval."""
        front = {e.key for e in self.front()}
        rest = [k for k in self.entries if k not in front]
        mask = dominated_at_common_rung(self.ladder, rest, Z, by=list(front))
        return [self.entries[k] for k, d in zip(rest, mask) if not d]

    def not_separable(self) -> dict[str, list[str]]:
        return CandidateTable.not_separable(self)  # type: ignore[arg-type]  # front(), attrs and estimates only

    def rows(self) -> list[dict[str, Any]]:
        """``CandidateTable.rows()`` with each candidate's rung, its budget and its mean at every rung it reached."""
        out = CandidateTable.rows(self)  # type: ignore[arg-type]
        epochs = self.ladder.epochs
        for row in out:
            e = self.entries[row["candidate"]]
            row["rung"], row["epochs"] = e.rung + 1, epochs[e.rung]
            for r, table in enumerate(self.ladder.tables):
                at = table.entries.get(e.key)
                row[f"val_at_{epochs[r]}_epochs"] = at.estimate.mean if at is not None and at.estimate else None
        return out
