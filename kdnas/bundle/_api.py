"""``kdnas.export``: a trial's student as a bundle, from Python, as ``kdnas export`` writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from kdnas.bundle._export import export_trial, pick_trial
from kdnas.study import StudyLike, as_config, open_study


def export(study: StudyLike, out: str | Path, *, trial: int | None = None, pick: str | None = None,
           formats: Sequence[str] = (), force: bool = False, storage: str | None = None) -> Path:
    """Write trial ``trial`` of ``study`` (or, with ``pick="params<50000"``, the most accurate Pareto trial
    within that budget) as a bundle in ``out``; ``formats``: ``"onnx"``, ``"pt2"``. Returns the bundle."""
    if (trial is None) == (pick is None):
        raise TypeError("give exactly one of trial= and pick=")
    cfg = as_config(study, storage=storage)
    opened = open_study(cfg, create=False)
    number = trial if trial is not None else pick_trial(opened, pick).number
    return export_trial(cfg, opened, number, Path(out), force=force, formats=tuple(formats))
