"""Running a study: the Optuna objective (a trial in phases: screen, guides, train, evaluate, record), the
search runner and its worker processes, their liveness, storage, per-process samplers, the resume checks,
the teacher, and ``kdnas validate``'s checks of what would fail later.
"""

from kdnas.study._api import StudyLike, as_config, search
from kdnas.study._preflight import preflight
from kdnas.study._runner import candidates_of, front_trials, ladder_of, open_study, read_trials, run_search
from kdnas.study._runtime import Runtime, prepare
from kdnas.study._trial import make_objective, run_trial, trial_seed
from kdnas.study._sampling import make_sampler
from kdnas.study._storage import mask_url, rdb_storage, scrub
from kdnas.study._store import open_store
from kdnas.study._teacher import get_teacher
from kdnas.study._teachers import teacher_suffix

__all__ = [
    "Runtime", "StudyLike", "as_config", "run_search", "run_trial",
    "candidates_of", "front_trials", "ladder_of", "get_teacher", "make_objective", "make_sampler", "mask_url", "open_store", "open_study",
    "preflight", "prepare", "read_trials", "rdb_storage", "scrub", "search", "teacher_suffix", "trial_seed",
]
