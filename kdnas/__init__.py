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

from kdnas.bundle import export, load_student
from kdnas.config import StudyConfig, load_study
from kdnas.core import ConfigError, KdnasError, __version__
from kdnas.models import ArchSpec, build, make_spec
from kdnas.results import report
from kdnas.study import search

__all__ = ["ArchSpec", "ConfigError", "KdnasError", "StudyConfig", "__version__", "build", "export", "load_student",
           "load_study", "make_spec", "report", "search"]
