"""Prototypes that benchmarks/bookkeeping.py measures, proposed for kdnas (kdnas.study's storage helpers, the report).

:func:`read_trials`: a study's trials read with six plain SQL queries. Optuna's ``RDBStorage`` reads a study
through its ORM, one Python object per stored row (about 45 rows a trial for kdnas: params, values,
attributes), and that first read is most of ``kdnas report`` at thousands of trials (about 10 s for 5,000 on a
2-core VM). The same rows read as plain tuples and turned into ``FrozenTrial`` objects directly take a fraction
of it. The result must equal Optuna's, trial for trial (``FrozenTrial.__eq__`` compares every field): the
benchmark checks that before it times anything. For where kdnas reads a whole study once (the report,
fidelity, export); a running search keeps Optuna's cached storage, which reads only what changed.

:func:`set_user_attrs`: a trial's attributes in one statement. Optuna writes each ``set_user_attr`` as its own
ORM upsert and commit (about 1 ms of CPU each on that VM) and a kdnas trial records about 30, so they are most
of what a trial costs besides its training; one multi-row upsert per phase of the trial writes the same rows.

(A third proposal, a hypervolume history of means that runs moocore only when the front changes, and a fourth,
the test size read once per report, are kdnas's own code now.)
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

import optuna
from optuna.distributions import json_to_distribution
from optuna.trial import FrozenTrial, TrialState

_SPECIAL = {"INF_POS": float("inf"), "INF_NEG": float("-inf"), "NAN": float("nan")}


def _value(value: float | None, kind: str) -> float:
    return _SPECIAL.get(kind, value)  # type: ignore[arg-type]


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value  # SQLite gives text


def read_trials(study: optuna.Study, fallback=None) -> list[FrozenTrial]:
    """Every trial of ``study``, in number order, as ``study.get_trials(deepcopy=False)`` returns them (other
    storages than an RDB: through ``fallback`` or Optuna)."""
    from sqlalchemy import text

    backend = getattr(study._storage, "_backend", study._storage)
    if not isinstance(backend, optuna.storages.RDBStorage):
        return (fallback or optuna.Study.get_trials)(study, deepcopy=False)
    sid = {"s": study._study_id}
    join = "JOIN trials t ON t.trial_id = x.trial_id WHERE t.study_id = :s"
    with backend.engine.connect() as con:
        trials = con.execute(text("SELECT trial_id, number, state, datetime_start, datetime_complete FROM trials "
                                  "WHERE study_id = :s ORDER BY number"), sid).all()

        def rows(columns: str, table: str, order: str) -> dict[int, list]:
            out: dict[int, list] = defaultdict(list)
            for r in con.execute(text(f"SELECT x.trial_id, {columns} FROM {table} x {join} ORDER BY {order}"), sid):
                out[r[0]].append(r[1:])
            return out

        params = rows("x.param_name, x.param_value, x.distribution_json", "trial_params", "x.param_id")
        values = rows("x.objective, x.value, x.value_type", "trial_values", "x.trial_value_id")
        steps = rows("x.step, x.intermediate_value, x.intermediate_value_type", "trial_intermediate_values",
                     "x.trial_intermediate_value_id")
        user = rows("x.key, x.value_json", "trial_user_attributes", "x.trial_user_attribute_id")
        system = rows("x.key, x.value_json", "trial_system_attributes", "x.trial_system_attribute_id")
    dists: dict[str, Any] = {}  # a study has few distinct distributions: parsed once each
    out = []
    for tid, number, state, start, complete in trials:
        ps = params.get(tid, [])
        for _, _, j in ps:
            if j not in dists:
                dists[j] = json_to_distribution(j)
        vs = values.get(tid)
        objective_values = None
        if vs:
            objective_values = [0.0] * len(vs)
            for objective, value, kind in vs:
                objective_values[objective] = _value(value, kind)
        out.append(FrozenTrial(
            number=number, state=TrialState[state], value=None, values=objective_values,
            datetime_start=_when(start), datetime_complete=_when(complete),
            params={name: dists[j].to_external_repr(v) for name, v, j in ps},
            distributions={name: dists[j] for name, _, j in ps},  # shared: read-only, like the cached ones
            user_attrs={k: json.loads(v) for k, v in user.get(tid, [])},
            system_attrs={k: json.loads(v) for k, v in system.get(tid, [])},
            intermediate_values={step: _value(v, kind) for step, v, kind in steps.get(tid, [])},
            trial_id=tid))
    return out


def set_user_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    """``trial.set_user_attr(k, v)`` for every item, in one statement and one transaction (RDB storages)."""
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    backend = getattr(trial.storage, "_backend", None)
    name = backend.engine.name if isinstance(backend, optuna.storages.RDBStorage) else None
    if name not in ("sqlite", "postgresql") or not attrs:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        return
    if name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert
    model = models.TrialUserAttributeModel
    with _create_scoped_session(backend.scoped_session, True) as session:
        row = models.TrialModel.find_or_raise_by_id(trial._trial_id, session)
        backend.check_trial_is_updatable(trial._trial_id, row.state)
        stmt = insert(model).values([{"trial_id": trial._trial_id, "key": k, "value_json": json.dumps(v)}
                                     for k, v in attrs.items()])
        session.execute(stmt.on_conflict_do_update(index_elements=[model.trial_id, model.key],
                                                   set_={"value_json": stmt.excluded.value_json}))
    trial._cached_frozen_trial.user_attrs.update(attrs)
