"""kdnas's log lines: the ``kdnas`` logger to stderr, and Optuna's own per-trial lines silenced.

Below every command and worker process (not in the CLI): a worker process sets up its logging like the
command that started it, without importing the command line.
"""

from __future__ import annotations

import logging
import sys


class _Stderr(logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is at each message, not as it was when the handler was
    made: a caller that replaces it (a notebook, a test's capture, a redirect) gets kdnas's lines there, and
    a replaced stream that has since been closed is never written to."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def setup_logging() -> None:
    import warnings

    log = logging.getLogger("kdnas")
    if not log.handlers:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    import optuna

    # kdnas prints its own progress line per trial; Optuna's own INFO lines would repeat it.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
