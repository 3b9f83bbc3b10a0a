"""Pareto fronts."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def pareto_mask(values: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (``directions``: 'maximize' / 'minimize').

    A row is dominated when another row is at least as good in every objective and better in one.
    Duplicated rows do not dominate each other. O(n^2) in rows, which is nothing next to training.
    """
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return np.zeros(0, dtype=bool)
    sign = np.array([-1.0 if d.lower().startswith("max") else 1.0 for d in directions])
    v = v * sign  # now everything is minimised
    le = (v[:, None, :] <= v[None, :, :]).all(axis=2)  # le[i, j]: i at least as good as j everywhere
    lt = (v[:, None, :] < v[None, :, :]).any(axis=2)
    dominated = (le & lt).any(axis=0)
    return ~dominated
