"""The study's bookkeeping is cheap (benchmarks/bookkeeping.py) and still says exactly what it said: the fast
Pareto mask, the hypervolume history and the incremental candidate table against their definitions."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest

from kdnas.candidates import CandidateTable, estimate
from kdnas.candidates._estimate import overdispersion
from kdnas.costs import hypervolume, hypervolume_history, pareto_mask


def _dominated_by_any(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """The definition, every pair: a row is dominated if another is as good everywhere and better somewhere."""
    v = values * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return np.array([any((o <= r).all() and (o < r).any() for o in v) for r in v], dtype=bool)


@pytest.mark.parametrize("seed", range(6))
def test_the_pareto_mask_is_the_set_of_rows_nothing_dominates(seed: int) -> None:
    rng = np.random.default_rng(seed)
    d = 2 + seed % 3
    # Few distinct values: ties, and duplicated rows (which do not dominate each other), are common.
    values = rng.integers(0, 4, size=(60, d)).astype(float)
    if seed % 2:
        values[rng.integers(0, 60, 5), rng.integers(0, d, 5)] = np.nan  # NaN compares false: never dominated
    directions = [("maximize", "minimize")[(j + seed) % 2] for j in range(d)]
    assert (pareto_mask(values, directions) == ~_dominated_by_any(values, directions)).all()


def test_the_hypervolume_history_is_the_hypervolume_of_every_prefix() -> None:
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1.2, size=(80, 3))  # some beyond the reference point: they add nothing
    points[40] = points[10]  # a duplicate of an earlier point
    history = hypervolume_history(points)
    assert history == pytest.approx([hypervolume(points[:n + 1]) for n in range(len(points))], abs=1e-12)
    assert all(a <= b for a, b in itertools.pairwise(history))


def _trials(rng: np.random.Generator, n: int) -> list[optuna.trial.FrozenTrial]:
    """Trials of a study with 3 objectives: candidates proposed again and again (replicates, reused answers),
    some running or waiting, pruned, infeasible, or without a key (a candidate of their own)."""
    out = []
    for number in range(n):
        c = int(rng.integers(0, 25))
        params, latency = 1000 * (1 + c % 7), 0.1 + 0.03 * (c % 5)
        ua = {"candidate_key": f"c{c}", "params": params, "latency_ms": latency, "student": f"s{c % 7}"}
        u = rng.uniform()
        state = optuna.trial.TrialState.COMPLETE
        if u < 0.05:
            state = optuna.trial.TrialState.PRUNED
        elif u < 0.10:
            state = optuna.trial.TrialState.RUNNING
        elif u < 0.13:
            state, ua["intensify"] = optuna.trial.TrialState.WAITING, "front"
        elif u < 0.18:
            ua.update(reused=True, val_accuracy=0.9)
        elif u < 0.20:
            del ua["candidate_key"]
        if state == optuna.trial.TrialState.COMPLETE and not ua.get("reused"):
            ua.update(val_accuracy=float(np.clip(0.6 + 0.04 * (c % 7) + rng.normal(0, 0.05), 0, 1)), seed=number)
            if rng.uniform() < 0.15:
                ua["intensify"] = "challenger"
        t = optuna.trial.create_trial(state=state, values=[0.5, 1.0, 1.0] if state.is_finished() and
                                      state != optuna.trial.TrialState.PRUNED else None, user_attrs=ua,
                                      constraints={"max_params": 1.0 if u > 0.97 else -1.0})
        t.number = number
        out.append(t)
    return out


def _running(t: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    """``t`` as it was while it ran: its candidate named, no result yet."""
    if t.state.is_finished():
        ua = {k: v for k, v in t.user_attrs.items() if k not in ("val_accuracy", "reused")}
        number, t = t.number, optuna.trial.create_trial(state=optuna.trial.TrialState.RUNNING, user_attrs=ua)
        t.number = number
    return t


def _front_by_definition(table: CandidateTable) -> list[str]:
    entries = table.estimates()
    values = np.array([table.point(e) for e in entries])
    mask = ~_dominated_by_any(values, ["maximize", "minimize", "minimize"]) if len(entries) else []
    on = [e for e, m in zip(entries, mask) if m]
    return [e.key for e in sorted(on, key=lambda e: e.attrs.get("params") or 0)]


@pytest.mark.parametrize("seed", range(4))
def test_the_incremental_table_says_what_recomputing_everything_says(seed: int) -> None:
    rng = np.random.default_rng(seed)
    trials = _trials(rng, 260)
    table = CandidateTable(500, ["accuracy", "params", "latency"])
    n = 0
    while n < len(trials):
        n = min(len(trials), n + int(rng.choice([1, 1, 2, 7, 30])))
        # The last three still running in this snapshot (finished in the next): running counts come and go.
        snapshot = trials[:max(0, n - 3)] + [_running(t) for t in trials[max(0, n - 3):n]]
        table.update(snapshot)
        entries = table.estimates()
        done = [e for e in table.entries.values() if e.n]
        assert [e.key for e in entries] == [e.key for e in done]
        ratio = overdispersion([e.val for e in done], 500)
        assert table.ratio == ratio
        assert [e.estimate for e in entries] == [estimate(e.val, 500, ratio) for e in entries]  # exactly
        assert table.trainings == sum(e.n for e in done)
        front = [e.key for e in table.front()]
        assert front == _front_by_definition(table)
        f = np.array([table.point(e) for e in table.front()]).reshape(-1, 3) * [-1, 1, 1]
        expected = [e.key for e in entries if front and e.key not in front and not any(
            (g <= p).all() and (g < p).any() for g in f for p in [np.array(table.point(e, e.estimate.hi)) * [-1, 1, 1]])]
        assert [e.key for e in table.challengers()] == expected
        running = {k: sum(t.user_attrs.get("candidate_key") == k and not t.state.is_finished() for t in snapshot)
                   for k in table.entries}
        assert {k: e.running for k, e in table.entries.items()} == running
    assert any(e.n >= 3 for e in table.entries.values()) and any(e.reused for e in table.entries.values())


def test_the_report_s_history_of_means_is_the_hypervolume_of_every_prefix_s_means() -> None:
    """The report's hypervolume history on candidates' means skips moocore when a dominated candidate stays
    dominated: it must still equal the definition (the front of the per-candidate means of trials 0..n)."""
    from kdnas.costs import hypervolume, pareto_mask
    from kdnas.results._report import means_history

    rng = np.random.default_rng(7)
    keys = [f"c{k}" for k in rng.integers(0, 12, size=60)]
    points = rng.uniform(0.05, 0.95, size=(60, 2))
    for k in set(keys):  # a candidate's costs are fixed: only its accuracy coordinate varies between replicates
        rows = [i for i, key in enumerate(keys) if key == k]
        points[rows, 1] = points[rows[0], 1]
    got = means_history(keys, points)
    for n in range(len(keys)):
        groups: dict[str, list] = {}
        for key, p in zip(keys[: n + 1], points[: n + 1]):
            groups.setdefault(key, []).append(p)
        means = np.array([np.mean(v, axis=0) for v in groups.values()])
        front = means[pareto_mask(means, ["minimize", "minimize"])]
        assert got[n] == pytest.approx(hypervolume(front)), n
