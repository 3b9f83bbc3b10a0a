"""What a study's trials say: ``trials.csv`` (one row per trial), ``candidates.csv`` (one row per candidate: mean,
interval, replicates), ``summary.md``, ``report.html``, the plots, the comparison of several studies,
``kdnas fidelity`` (brief against full training, and seed against seed) and the optuna-dashboard launcher. Every
trial and candidate says its teacher choice and its distillation efficiency against it; a study with several
teacher choices also gets the effect of the teacher (kdnas/results/_teacher_effects.py).
"""

from kdnas.results._api import report
from kdnas.results._candidates import Snapshot, pm, test_estimate
from kdnas.results._dashboard import serve
from kdnas.results._fidelity import agreement, brief_vs_second, describe, run_fidelity, seed_agreement
from kdnas.results._report import compare, hypervolume_series, trials_frame, write_report

__all__ = [
    "report",
    "agreement", "brief_vs_second", "compare", "describe", "hypervolume_series", "pm", "run_fidelity", "seed_agreement", "serve",
    "Snapshot", "test_estimate", "trials_frame", "write_report",
]
