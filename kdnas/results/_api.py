"""``kdnas.report``: a study's report from Python, as ``kdnas report`` writes it."""

from __future__ import annotations

from pathlib import Path

from kdnas.core import KdnasError
from kdnas.results._report import compare, write_report
from kdnas.study import StudyLike, as_config, open_study


def report(study: StudyLike, *more: StudyLike, out: str | Path | None = None, storage: str | None = None) -> list[Path]:
    """Write the report of ``study`` (a study file's path or a StudyConfig) to ``out`` (default: its
    ``reports/<name>/`` beside the study file) and return the files; with ``more`` studies, overlay their
    fronts in ``out``."""
    configs = [as_config(s, storage=storage) for s in (study, *more)]
    studies = [open_study(cfg, create=False) for cfg in configs]
    if len(studies) == 1:
        # `kdnas fidelity` writes its results beside the study's own report; out elsewhere still shows them.
        return write_report(studies[0], Path(out) if out else configs[0].report_dir,
                            fidelity_csv=configs[0].report_dir / "fidelity.csv")
    if not out:
        raise KdnasError("comparing several studies needs --out DIR")
    return compare(studies, Path(out))
