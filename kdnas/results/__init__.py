"""What a study's trials say: ``trials.csv``, ``summary.md``, ``report.html``, the plots, the comparison of
several studies, ``kdnas fidelity`` (brief against full training) and the optuna-dashboard launcher.
"""

from kdnas.results._api import report
from kdnas.results._dashboard import serve
from kdnas.results._fidelity import agreement, describe, run_fidelity
from kdnas.results._report import compare, hypervolume_series, trials_frame, write_report

__all__ = [
    "report",
    "agreement", "compare", "describe", "hypervolume_series", "run_fidelity", "serve", "trials_frame",
    "write_report",
]
