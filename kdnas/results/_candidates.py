"""One snapshot of a study's candidates for every file of a report: ``candidates.csv``, the front tables, the
figures and the effects all read the same :class:`Snapshot`, so the candidate table and its front are built once
per report (kdnas/candidates/_table.py; the module docstring of kdnas/results/_report.py says why one read).

Every accuracy a report shows is a candidate's mean over its replicates with the 90 % half-width of its interval
and the replicate count (``97.2% ± 1.1 (3x)``). Test accuracy gets an interval too: the binomial error of the
test images plus the candidate's seed variance as measured on validation (the seed moves both splits alike; the
test split is never used to choose, so it lends nothing to that estimate).

Each candidate also says which teacher it learned from (``teacher_name``) and its distillation efficiency against
it, with its gain over labels-only (kdnas/results/_efficiency.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd

from kdnas.candidates import CandidateTable, Entry, Estimate, Ladder, Merged, binomial_variance
from kdnas.results._efficiency import CANDIDATE_KEYS, candidate_metrics, rung_baselines, score_of
from kdnas.results._teachers import choices_of, teachers_of
from kdnas.study import ladder_of, read_trials

Trials = list[optuna.trial.FrozenTrial]


def test_estimate(e: Entry, n_test: int) -> Estimate | None:
    """The candidate's mean test accuracy with its interval (module docstring); None without a test figure."""
    vals = [float(t) for t in e.test if t is not None]
    if not vals or e.estimate is None:
        return None
    mean = sum(vals) / len(vals)
    seed_var = e.estimate.seed_var
    return Estimate(mean, math.sqrt(binomial_variance(mean, n_test) + seed_var / len(vals)), len(vals), seed_var)


def pm(est: Estimate | None) -> str:
    """``97.2% ± 1.1``: the mean and the 90 % half-width in points (the replicate count goes beside it)."""
    return "–" if est is None else f"{est.mean:.1%} ± {100 * est.half_width:.1f}"


@dataclass
class Snapshot:
    """The study's trials read once, and the candidate table built from them once: its ladder of rungs
    (kdnas/candidates/_rungs.py; one rung without ``search.rungs``) and what a report shows of it (``table``: the
    one table, or with rungs each candidate at its highest rung, a ``Merged``)."""

    study: optuna.Study
    trials: Trials
    table: CandidateTable | Merged
    ladder: Ladder | None = None
    _frame: pd.DataFrame | None = field(default=None, repr=False)
    _teachers: dict[str, dict[str, Any]] | None = field(default=None, repr=False)
    _choices: list[str] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, study: optuna.Study, trials: Trials | None = None) -> "Snapshot":
        trials = read_trials(study) if trials is None else trials
        ladder = ladder_of(study, trials)
        return cls(study, trials, ladder.view(), ladder)

    @property
    def rungs(self) -> bool:
        """Whether the study has rungs: then every figure says its budget (``@18 ep``)."""
        return isinstance(self.table, Merged)

    def budget(self, e: Entry) -> str:
        """`` @18 ep``: the budget ``e``'s figures are from, in a study with rungs; empty without them."""
        return f" @{self.table.ladder.epochs[e.rung]} ep" if isinstance(self.table, Merged) else ""

    @property
    def n_test(self) -> int:
        return int((self.study.user_attrs.get("data") or {}).get("test") or 1)  # unknown: as wide as it can be

    @property
    def teachers(self) -> dict[str, dict[str, Any]]:
        """``{label: info}`` of the study's teacher choices, the reference first (kdnas/results/_teachers.py)."""
        if self._teachers is None:
            self._teachers = teachers_of(self.study.user_attrs)
        return self._teachers

    @property
    def choices(self) -> list[str]:
        """The teacher choices trials sample, the reference first where it is one (kdnas/results/_teachers.py):
        the order the report compares them in, each against the first."""
        if self._choices is None:  # once: each read of the study's attributes is a storage query and a deep copy
            self._choices = choices_of(self.study.user_attrs, self.teachers)
        return self._choices

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Each candidate's teacher and distillation efficiency (kdnas/results/_efficiency.py), by key."""
        attrs = self.study.user_attrs  # once: each read is a storage query and a deep copy
        objectives, score, teachers = attrs.get("objectives", []), score_of(attrs), self.teachers
        by_number = {t.number: t for t in self.trials}
        base = rung_baselines(self.table)
        return {e.key: candidate_metrics(e, teachers, objectives, score, by_number, base.get(e.rung))
                for e in self.table.estimates()}

    @property
    def front_keys(self) -> set[str]:
        return {e.key for e in self.table.front()}

    def candidates(self) -> pd.DataFrame:
        """``candidates.csv``: ``CandidateTable.rows()`` (by decreasing mean; with rungs ``Merged.rows()``, by
        decreasing budget, then mean) with the representative trial (the
        one ``--pick`` and ``--trial`` export, closest to the mean), the test interval, and which front members
        each is not separable from (their representative trials)."""
        if self._frame is None:
            table = self.table
            loose = table.not_separable()
            rep = {e.key: e.representative() for e in table.estimates()}
            n_test = self.n_test  # once: each read of the study's attributes is a storage query and a deep copy
            metrics = self.metrics()
            rows: list[dict[str, Any]] = []
            made = table.rows()
            for r in made:
                e = table.entries[r["candidate"]]
                test = test_estimate(e, n_test)
                rows.append({"candidate": r["candidate"], "representative": rep[e.key],
                             **{k: v for k, v in r.items() if k != "candidate"},
                             "val_accuracy_half_width": e.estimate.half_width,
                             "test_accuracy_half_width": None if test is None else test.half_width,
                             "not_separable_from": " ".join(str(rep[k]) for k in loose.get(e.key, [])),
                             **metrics[e.key]})
            # With rungs, Merged.rows() adds each candidate's rung, budget and mean at every rung (after the rest),
            # and the rows go by budget first: a mean after 2 epochs does not rank against one after 18.
            extra = [] if not self.rungs else ["rung", "epochs",
                                               *(f"val_at_{n}_epochs" for n in self.table.ladder.epochs)]
            frame = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS + extra)
            if self.rungs and len(frame):
                frame = frame.sort_values(["epochs", "val_accuracy_mean"], ascending=False, kind="stable")
            self._frame = frame.reset_index(drop=True)
        return self._frame

    def front(self) -> list[Entry]:
        return self.table.front()


CANDIDATE_COLUMNS = [
    "candidate", "representative", "val_accuracy_mean", "val_accuracy_se", "val_accuracy_lo", "val_accuracy_hi",
    "val_accuracy_half_width", "replicates", "test_accuracy_mean", "test_accuracy_half_width", "trials", "seeds",
    "reused_trials", "pareto", "separable", "not_separable_from", "student", "method", "chain", "chain_length",
    "params", "macs", "latency_ms", "latency_iqr_ms", "latency_median_ms", "latency_stable", *CANDIDATE_KEYS,
]


def separability(row: pd.Series) -> str:
    """``yes``, or ``not separable from #7, #9`` (their representative trials)."""
    if not row["pareto"]:
        return ""
    loose = row["not_separable_from"]
    others = loose.split() if isinstance(loose, str) else []  # read back from a CSV, an empty cell is NaN
    return "yes" if not others else "not separable from " + ", ".join(f"#{n}" for n in others)
