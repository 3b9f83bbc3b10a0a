"""The survey's metric in the report: distillation efficiency per trial and per candidate.

What the metric is, and what it is for and not for: kdnas/costs/_efficiency.py and docs/costs.md ("Distillation
efficiency"). A trial carries it as the search recorded it (its ``distillation`` attribute: ``retained``,
``compression_params``, ``compression_macs``, ``compression_latency``, ``efficiency``, against the trial's own
teacher; a labels-only trial against the reference teacher). A trial recorded before the metric existed gets it computed here from its
accuracy, costs and teacher, so that an old study's report shows it too.

A candidate's figures are its *mean* accuracy's: ``retained`` and ``efficiency`` scale with the accuracy, the
compressions do not depend on it. ``efficiency / retained`` is the cost factor of MnasNet's score, which is
alike for every replicate (same costs, same teacher), so a candidate's efficiency is its mean retained times a
replicate's recorded factor: the exponents the search used are then the ones reported, without this module
knowing them. Where no replicate records it, the factor comes from the study's recorded score exponents (score
mode) or MnasNet's defaults.

The third part, what distillation added: ``kd_gain``, the paired difference of the candidate's mean and the
pooled labels-only candidates of its student *at the same rung* (the budget matters: docs/results.md), with its
90 % interval (``kd_gain_lo``, ``kd_gain_hi``); blank for a labels-only candidate and where its student has no
labels-only candidate at that rung.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from kdnas.candidates import CandidateTable, Difference, Entry, Estimate, Merged, difference
from kdnas.costs import EFFICIENCY_KEYS, ScoreConfig, distillation_efficiency, recorded_efficiency
from kdnas.results._effects import baselines, is_baseline
from kdnas.results._teachers import label_of, reference

COSTS = ("params", "macs", "latency_ms")
CANDIDATE_KEYS = ("teacher_name", *EFFICIENCY_KEYS, "kd_gain", "kd_gain_lo", "kd_gain_hi")


def score_of(attrs: Mapping[str, Any]) -> ScoreConfig:
    """The score exponents a study recorded (score mode; kdnas/study/_resume.py), else MnasNet's."""
    rec = (attrs.get("comparable") or {}).get("score") or {}
    base = ScoreConfig()
    return ScoreConfig(below=float(rec.get("score.below", base.below)), above=float(rec.get("score.above", base.above)))


def teacher_info(label: str | None, teachers: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The figures a student is rated against: its teacher choice's, the reference's for labels-only."""
    return teachers.get(label if label is not None else reference(teachers) or "")


def trial_metrics(ua: Mapping[str, Any], teachers: Mapping[str, Mapping[str, Any]], objectives: Sequence[str],
                  score: ScoreConfig) -> dict[str, Any]:
    """A trial's ``teacher_name`` and the five figures: as recorded, or computed for a completed trial from before
    the metric (module docstring); blank without an accuracy or a teacher's figures."""
    label = label_of(ua)
    out: dict[str, Any] = {"teacher_name": label, **recorded_efficiency(ua)}
    info = teacher_info(label, teachers)
    if all(out[k] is None for k in EFFICIENCY_KEYS) and ua.get("val_accuracy") is not None and info:
        out.update(distillation_efficiency(float(ua["val_accuracy"]), {c: ua.get(c) for c in COSTS}, info,
                                           objectives, score))
    return out


def _factor(e: Entry, trials: Mapping[int, Any]) -> float | None:
    """``efficiency / retained`` of a replicate that recorded both (module docstring)."""
    for n in e.trials:
        ua = trials[n].user_attrs if n in trials else {}
        figures = recorded_efficiency(ua)
        eff, ret = figures["efficiency"], figures["retained"]
        if eff is not None and ret:
            return float(eff) / float(ret)
    return None


def candidate_metrics(e: Entry, teachers: Mapping[str, Mapping[str, Any]], objectives: Sequence[str],
                      score: ScoreConfig, trials: Mapping[int, Any],
                      base: Mapping[str, Estimate] | None) -> dict[str, Any]:
    """``candidates.csv``'s teacher and metric columns of ``e`` (its mean; module docstring). ``base``: the
    labels-only estimates by student at ``e``'s rung (``kdnas.results._effects.baselines``)."""
    label = label_of(e.attrs)
    mean = e.estimate.mean
    out: dict[str, Any] = dict.fromkeys(CANDIDATE_KEYS)
    out["teacher_name"] = label
    info = teacher_info(label, teachers)
    if info:
        out.update(distillation_efficiency(mean, {c: e.attrs.get(c) for c in COSTS}, info, objectives, score))
        factor = _factor(e, trials)
        if factor is not None and out["retained"] is not None:
            out["efficiency"] = out["retained"] * factor
    gain = kd_gain(e, base)
    if gain is not None:
        out.update(kd_gain=gain.mean, kd_gain_lo=gain.lo, kd_gain_hi=gain.hi)
    return out


def kd_gain(e: Entry, base: Mapping[str, Estimate] | None) -> Difference | None:
    """``e``'s gain over the labels-only candidates of its student at its rung; None for labels-only, or none."""
    if base is None or is_baseline(e) or str(e.attrs.get("student")) not in base:
        return None
    return difference(e.estimate, base[str(e.attrs.get("student"))])


def rung_baselines(table: CandidateTable | Merged) -> dict[int, dict[str, Estimate]]:
    """The labels-only estimates by student at every rung (one, without rungs): ``[rung][student]``."""
    tables = table.ladder.tables if isinstance(table, Merged) else [table]
    return {t.rung: baselines(t, t.estimates()) for t in tables}
