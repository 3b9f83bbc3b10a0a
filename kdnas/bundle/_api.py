"""``kdnas.export``: a trial's student as a bundle, from Python, as ``kdnas export`` writes it."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from kdnas.bundle._export import export_trial, pick as pick_candidate  # `pick` is export's parameter
from kdnas.study import StudyLike, as_config, open_study


def export(study: StudyLike, out: str | Path, *, trial: int | None = None, pick: str | None = None,
           formats: Sequence[str] = (), force: bool = False, storage: str | None = None,
           say: Callable[[str], None] | None = print) -> Path:
    """Write trial ``trial`` of ``study`` (or, with ``pick="params<50000"``, the representative trial of the front
    candidate with the highest mean validation accuracy within that budget) as a bundle in ``out``; ``formats``:
    ``"onnx"``, ``"pt2"``. With ``pick``, ``say`` (None: silent) gets the choice and every runner-up within the
    budget whose interval overlaps it ("within noise of trial N"). Returns the bundle."""
    if (trial is None) == (pick is None):
        raise TypeError("give exactly one of trial= and pick=")
    cfg = as_config(study, storage=storage)
    opened = open_study(cfg, create=False)
    if trial is None:
        chosen = pick_candidate(opened, pick)
        trial = chosen.trial.number
        for line in chosen.lines(pick) if say is not None else ():
            say(line)
    return export_trial(cfg, opened, trial, Path(out), force=force, formats=tuple(formats))

