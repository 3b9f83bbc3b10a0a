"""``kdnas.search``: a study from Python (a notebook), as ``kdnas search`` runs it from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Union

import optuna

from kdnas.config import FLAGS, StudyConfig, flag_overrides, load_study
from kdnas.core import setup_logging
from kdnas.study._runner import run_search

StudyLike = Union[str, Path, StudyConfig]  # what the notebook API takes for a study: a file's path, or one loaded


def as_config(study: StudyLike, **flags) -> StudyConfig:
    """``study`` as a validated :class:`StudyConfig`: a study file's path is loaded with ``flags`` (``trials=5``,
    ``storage=...``: the command's flags, by name) overriding the file."""
    if isinstance(study, StudyConfig):
        given = {k: v for k, v in flags.items() if v is not None}
        if given:
            raise TypeError(f"flags {sorted(given)} go with a study file's path, not a loaded StudyConfig")
        return study
    return load_study(study, flag_overrides(**flags), FLAGS)


def search(study: StudyLike, *, trials: int | None = None, timeout: float | None = None,
           workers: int | None = None, seed: int | None = None, device: str | None = None,
           precision: str | None = None, storage: str | None = None, progress: Callable[[str], None] = print) -> optuna.Study:
    """Run (or resume) a study, like ``kdnas search``, and return the Optuna study; ``progress`` gets each line.

    ``kdnas.report(study)`` then writes its report. Ctrl-C (KeyboardInterrupt) keeps every completed trial;
    calling ``search`` again resumes."""
    cfg = as_config(study, trials=trials, timeout=timeout, workers=workers, seed=seed, device=device, precision=precision,
                    storage=storage)
    setup_logging()  # teacher and assistant progress lines, as the command shows them (unless set up already)
    return run_search(cfg, progress)
