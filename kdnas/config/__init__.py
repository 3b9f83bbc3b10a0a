"""The study file and the search-space file: typed sections validated all at once (``load_study``,
``load_space``), candidates sampled and screened from a space, and ``kdnas space`` inspection.
"""

from kdnas.config._explore import open_space, sample_candidates, size_range
from kdnas.config._space import Candidate, Limits, SearchSpace, check_space, load_space, screen
from kdnas.config._study import FLAGS, StudyConfig, flag_overrides, load_study
from kdnas.config._teachers import SINGLE, DeclaredTeacher, TeacherConfig, members

__all__ = [
    "FLAGS", "flag_overrides",
    "Candidate", "check_space", "Limits", "load_space", "load_study", "open_space", "sample_candidates", "screen",
    "SearchSpace", "size_range", "StudyConfig", "SINGLE", "DeclaredTeacher", "TeacherConfig", "members",
]
