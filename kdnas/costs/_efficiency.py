"""Distillation efficiency: a student's task and compression performance together, relative to its teacher.

The survey kdnas builds from asks, as its third direction, for "a metric that evaluates task performance and
compression performance together". A student is judged against the network it was distilled from:

    retained             = acc_student / acc_teacher                    (validation accuracy)
    compression_<cost>   = cost_teacher / cost_student                  (params, macs, latency)
    efficiency           = retained * prod over the study's cost objectives c of
                                       (cost_c,student / cost_c,teacher) ** w,   w = score.below (-0.07)

``efficiency`` is MnasNet's combined score (kdnas/costs/_score.py) with the teacher's costs as the targets and
the accuracy measured in units of the teacher's: 1.0 is "as good as the teacher at MnasNet's exchange rate"
(each halving of a cost is worth 5 % of relative accuracy); a student 10x smaller in params and latency that
keeps 95 % of the teacher's accuracy scores 0.95 * 10 ** 0.14 = 1.31. The third part of the figure, what
distillation itself added (the gain over the same architecture trained on labels only at the same budget),
needs that twin's replicates: the report computes it per candidate (kdnas/results), not a trial.

A student trained on labels only has no teacher; its figures are taken against the study's reference teacher
(the first declared), so that the labels-only and distilled students of one architecture read on one scale.

What it is for, and not for: docs/costs.md, "Distillation efficiency".
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from kdnas.costs._score import METRIC_NAMES, ScoreConfig, Targets, combined_score

# Figure -> the cost it compares (``compression_latency`` reads ``latency_ms``).
COMPRESSION = {"compression_params": "params", "compression_macs": "macs", "compression_latency": "latency_ms"}
EFFICIENCY_KEYS = ("retained", *COMPRESSION, "efficiency")
# The trial attribute holding the five figures, as one mapping: each attribute is a statement in Optuna's storage
# (~3 ms each on SQLite: benchmarks/bookkeeping.py), and these five are read together.
ATTR = "distillation"


def recorded(user_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's five figures as the search recorded them (``ATTR``; one attribute each, as a synthetic study may
    hold them, also read); None where absent."""
    held = user_attrs.get(ATTR) or {}
    return {k: held.get(k, user_attrs.get(k)) for k in EFFICIENCY_KEYS}


def distillation_efficiency(val_accuracy: float, costs: Mapping[str, float], teacher: Mapping[str, float],
                            objectives: Sequence[str], score: ScoreConfig) -> dict[str, float | None]:
    """``retained``, ``compression_<cost>`` and ``efficiency`` (module docstring) of a student with accuracy
    ``val_accuracy`` and ``costs`` (``params``, ``macs``, ``latency_ms``) against ``teacher`` (the same keys and
    ``val_accuracy``); a figure whose inputs are missing or zero is None."""
    out: dict[str, float | None] = dict.fromkeys(EFFICIENCY_KEYS)
    t_acc = teacher.get("val_accuracy")
    if t_acc:
        out["retained"] = float(val_accuracy) / float(t_acc)
    for key, attr in COMPRESSION.items():
        s, t = costs.get(attr), teacher.get(attr)
        if s and t:
            out[key] = float(t) / float(s)
    cost_attrs = [METRIC_NAMES[o] for o in objectives if o != "accuracy"]
    if t_acc and all(costs.get(a) and teacher.get(a) for a in cost_attrs):
        targets = Targets(**{a: float(teacher[a]) for a in cost_attrs})
        rated = ScoreConfig(targets=targets, below=score.below, above=score.above)
        out["efficiency"] = combined_score(float(val_accuracy), {a: float(costs[a]) for a in cost_attrs},
                                           rated) / float(t_acc)
    return out
