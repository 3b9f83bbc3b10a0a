"""User-facing errors.

Everything a user can cause (a bad study file, a missing checkpoint, an unreachable storage) is raised as a
:class:`KdnasError`; the CLI prints its message on one line per problem and exits with code 2, without a
traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator


class KdnasError(Exception):
    """An error the user can fix. The CLI prints ``str(err)`` and exits with code 2."""


@dataclass(frozen=True)
class Problem:
    """One problem in one file: ``file: key: message``."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class ConfigError(KdnasError):
    """All problems found in one or more configuration files, reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        n = len(self.problems)
        head = f"{n} problem{'s' if n != 1 else ''} found:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


class TrialFailure(Exception):
    """A trial that cannot finish (NaN loss, impossible shapes, out of memory).

    The study records ``reason`` with the trial, marks it FAILED and goes on.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def error_chain(err: BaseException | None) -> Iterator[BaseException]:
    """``err``, then what caused it or was being handled when it was raised, and so on, each once: where a library
    wraps the error that matters (Optuna around SQLAlchemy around the driver) or raises on top of it."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__
