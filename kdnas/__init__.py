"""kdnas: search small, fast students and their teacher-assistant chains by knowledge distillation.

The packages, lowest first (each imports only those before it; tests/test_layout.py holds it):

    core      errors, registry, schema, artifact store, logging
    models    architecture families and specs            data     datasets, splits, batch sources
    costs     params, MACs, latency; Pareto and score    train    the training loop, early stopping
    distill   distillation methods, assistant chains     config   study and search-space files
    candidates  candidate identity, replicates, intervals, intensification
    study     running a search                            bundle   export, full training, predict
    results   reports, plots, fidelity, dashboard         cli      the `kdnas` command

For notebooks: ``kdnas.search(study_file)``, ``kdnas.report(study_file)``, ``kdnas.export(study_file, ...)``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# The notebook API, imported on first use (PEP 562): `import kdnas.costs` in the latency child (a process per
# study) then loads torch and the packages it needs, not pandas, Optuna and the report code (0.5 s of its start,
# during which the study's first trial waits for its latency).
_API = {"export": "kdnas.bundle", "load_student": "kdnas.bundle", "StudyConfig": "kdnas.config",
        "load_study": "kdnas.config", "ConfigError": "kdnas.core", "KdnasError": "kdnas.core",
        "__version__": "kdnas.core", "ArchSpec": "kdnas.models", "build": "kdnas.models", "make_spec": "kdnas.models",
        "report": "kdnas.results", "search": "kdnas.study"}

if TYPE_CHECKING:  # what the names are, for editors and type checkers
    from kdnas.bundle import export, load_student
    from kdnas.config import StudyConfig, load_study
    from kdnas.core import ConfigError, KdnasError, __version__
    from kdnas.models import ArchSpec, build, make_spec
    from kdnas.results import report
    from kdnas.study import search

__all__ = ["ArchSpec", "ConfigError", "KdnasError", "StudyConfig", "__version__", "build", "export", "load_student",
           "load_study", "make_spec", "report", "search"]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'kdnas' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
