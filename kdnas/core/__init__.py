"""What every part of kdnas stands on: its errors, the registry mechanism, the study-file schema, atomic
writes and the content-addressed artifact store, the process's malloc tuning and its log lines. Imports
nothing else from kdnas.
"""

from kdnas.core._artifacts import (ArtifactStore, atomic_write_bytes, cache_dir, file_lock, load_object,
                                   load_state_dict, Partial, save_object, save_state_dict)
from kdnas.core._errors import ConfigError, KdnasError, Problem, TrialFailure, error_chain
from kdnas.core._logging import setup_logging
from kdnas.core._registry import Registry
from kdnas.core._schema import Collector, is_missing, load_yaml, parse_section
from kdnas.core._version import __version__

__all__ = [
    "error_chain",
    "ArtifactStore", "atomic_write_bytes", "cache_dir", "Collector", "ConfigError", "file_lock", "is_missing",
    "KdnasError", "load_object", "load_state_dict", "load_yaml", "parse_section", "Partial", "Problem",
    "Registry", "save_object", "save_state_dict", "setup_logging", "TrialFailure", "__version__",
]
