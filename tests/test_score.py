from __future__ import annotations

from kdnas.score import pareto_mask


def test_pareto_mask_by_hand() -> None:
    # (accuracy max, params min)
    values = [(0.90, 100), (0.95, 200), (0.85, 150), (0.95, 300), (0.99, 1000), (0.90, 100)]
    mask = pareto_mask(values, ["maximize", "minimize"]).tolist()
    # 2 dominated by 0 (worse acc, more params); 3 dominated by 1; duplicates 0 and 5 both stay.
    assert mask == [True, True, False, False, True, True]


def test_pareto_mask_empty_and_single() -> None:
    assert pareto_mask([], ["maximize"]).tolist() == []
    assert pareto_mask([(1.0, 2.0, 3.0)], ["maximize", "minimize", "minimize"]).tolist() == [True]
