from __future__ import annotations

import numpy as np
import pytest

from kdnas.costs._score import (
    Limits, ScoreConfig, Targets, combined_score, constraints, hypervolume, hypervolume_history, normalise, pareto_mask,
)


def test_pareto_mask_by_hand() -> None:
    # (accuracy max, params min)
    values = [(0.90, 100), (0.95, 200), (0.85, 150), (0.95, 300), (0.99, 1000), (0.90, 100)]
    mask = pareto_mask(values, ["maximize", "minimize"]).tolist()
    # 2 dominated by 0 (worse acc, more params); 3 dominated by 1; duplicates 0 and 5 both stay.
    assert mask == [True, True, False, False, True, True]


def test_pareto_mask_empty_and_single() -> None:
    assert pareto_mask([], ["maximize"]).tolist() == []
    assert pareto_mask([(1.0, 2.0, 3.0)], ["maximize", "minimize", "minimize"]).tolist() == [True]


def test_combined_score_by_hand() -> None:
    costs = {"params": 2000.0, "macs": 1e6, "latency_ms": 0.5}
    soft = ScoreConfig(mode="score", targets=Targets(params=1000, latency_ms=1.0))  # MnasNet's -0.07 both ways
    assert combined_score(0.9, costs, soft) == pytest.approx(0.9 * 2 ** -0.07 * 0.5 ** -0.07)
    hard = ScoreConfig(mode="score", targets=Targets(params=1000, latency_ms=1.0), below=0.0, above=-1.0)
    assert combined_score(0.9, costs, hard) == pytest.approx(0.9 / 2)  # no reward under, 1/x over
    assert combined_score(0.9, costs, ScoreConfig()) == 0.9  # no targets: accuracy


def test_mnasnet_trade_off_twice_the_cost_for_five_percent_accuracy() -> None:
    cfg = ScoreConfig(mode="score", targets=Targets(latency_ms=1.0))
    small = combined_score(0.80, {"latency_ms": 1.0}, cfg)
    big = combined_score(0.80 * 1.05, {"latency_ms": 2.0}, cfg)
    assert big == pytest.approx(small, rel=0.003)


def test_constraints_are_relative_excess_and_feasible_at_or_under_the_limit() -> None:
    limits = Limits(max_latency_ms=2.0)
    assert constraints({"latency_ms": 3.0}, limits) == {"max_latency_ms": pytest.approx(0.5)}
    assert constraints({"latency_ms": 2.0}, limits) == {"max_latency_ms": 0.0}
    assert constraints({"latency_ms": 3.0}, Limits()) == {}


def test_hypervolume_by_hand_2d() -> None:
    # Minimised points in the unit square, reference (1, 1): the union of [x, 1] x [y, 1] boxes.
    points = np.array([[0.2, 0.6], [0.5, 0.3], [0.6, 0.7]])  # the third is dominated by the first
    assert hypervolume(points) == pytest.approx(0.8 * 0.4 + 0.5 * 0.7 - 0.5 * 0.4)
    assert hypervolume(np.array([[1.2, 0.1]])) == 0.0  # worse than the reference in one objective: no volume
    assert hypervolume(np.empty((0, 2))) == 0.0


def test_hypervolume_history_never_decreases_and_ends_at_the_full_value() -> None:
    rng = np.random.default_rng(0)
    points = rng.random((30, 3))
    history = hypervolume_history(points)
    assert len(history) == 30
    assert all(b >= a - 1e-12 for a, b in zip(history, history[1:]))
    assert history[-1] == pytest.approx(hypervolume(points))
    assert history[0] == pytest.approx(np.prod(1 - points[0]))


def test_normalise_error_and_costs_relative_to_the_teacher() -> None:
    rows = [{"val_accuracy": 0.9, "params": 50, "latency_ms": 0.25}]
    teacher = {"params": 100, "latency_ms": 1.0}
    np.testing.assert_allclose(normalise(rows, ["accuracy", "params", "latency"], teacher), [[0.1, 0.5, 0.25]])
