"""In-memory studies with trials as `kdnas search` records them (candidate key, replicate, reused), for the tests
of reports, --pick and effects: no training, so they cost milliseconds."""

from __future__ import annotations

from dataclasses import dataclass

import optuna
from optuna.distributions import FloatDistribution

OBJECTIVES = ["accuracy", "params", "latency"]


@dataclass
class T:
    """One trial: its candidate (``key``), what it measured, what it is."""

    key: str
    val: float
    params: int
    test: float | None = None
    method: str = "hinton"
    student: str | None = None  # default: one architecture per candidate key
    chain_length: int = 0
    reused: bool = False
    state: str = "COMPLETE"


def attrs(t: T, replicate: int) -> dict:
    student = t.student or f"net_{t.key}"
    return {
        "candidate_key": t.key, "replicate": replicate, "seed": 1000 + replicate, "val_accuracy": t.val,
        "test_accuracy": t.val if t.test is None else t.test, "params": t.params, "macs": 10 * t.params,
        "latency_ms": t.params / 1000, "student": student, "method": f"{t.method}()",
        "chain": "direct" if not t.chain_length else f"takd[{t.chain_length}]", "chain_length": t.chain_length,
        "candidate": {"student": {"family": student}, "method": {"name": t.method}},
        **({"reused": True} if t.reused else {}),
    }


def make_study(trials: list[T], n_val: int = 400, n_test: int = 400, name: str = "s",
               storage: str | None = None) -> optuna.Study:
    """A study of ``trials`` in trial order (in memory, or in ``storage``), with the attributes a report reads."""
    study = optuna.create_study(study_name=name, storage=storage, directions=["maximize", "minimize", "minimize"])
    study.set_user_attr("objectives", OBJECTIVES)
    study.set_user_attr("teacher", {"params": 10_000, "macs": 100_000, "latency_ms": 10.0, "val_accuracy": 0.99,
                                    "test_accuracy": 0.99, "spec": {"family": "big"}})
    study.set_user_attr("data", {"dataset": "fake", "train": 1000, "val": n_val, "test": n_test})
    seen: dict[str, int] = {}
    dist = {"x": FloatDistribution(0, 1)}
    for i, t in enumerate(trials):
        seen[t.key] = seen.get(t.key, 0) + (not t.reused)
        state = optuna.trial.TrialState[t.state]
        values = [t.val, t.params, t.params / 1000] if state == optuna.trial.TrialState.COMPLETE else None
        study.add_trial(optuna.trial.create_trial(params={"x": i / (len(trials) + 1)}, distributions=dist,
                                                  values=values, state=state, user_attrs=attrs(t, seen[t.key])))
    return study
