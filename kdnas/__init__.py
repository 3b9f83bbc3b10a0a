"""kdnas: search small, fast students and their teacher-assistant chains by knowledge distillation."""

from kdnas.config import StudyConfig, load_study
from kdnas.errors import ConfigError, KdnasError
from kdnas.export import load_student
from kdnas.models import ArchSpec, build, make_spec

__version__ = "0.1.0"

__all__ = ["ArchSpec", "ConfigError", "KdnasError", "StudyConfig", "__version__", "build", "load_student", "load_study", "make_spec"]
