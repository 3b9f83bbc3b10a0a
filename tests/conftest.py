"""Shared fixtures: tiny real studies on the bundled digits data, run in a temporary folder."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from tests._util import write_tiny_study

# Tests run on 2 cores next to other work: one thread each keeps timings predictable.
torch.set_num_threads(1)
os.environ.setdefault("MPLBACKEND", "Agg")
# The latency probe remembers its floor in a cache folder: tests keep theirs away from the user's.
os.environ.setdefault("KDNAS_CACHE_DIR", tempfile.mkdtemp(prefix="kdnas-tests-"))


@pytest.fixture
def tiny_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A 3-trial digits study in an empty working folder (runs/ and reports/ land there)."""
    monkeypatch.chdir(tmp_path)
    return write_tiny_study(tmp_path)


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL server for the whole session, on 127.0.0.1; skipped only where its binaries are absent."""
    from tests._postgres import Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed")
    cluster = Cluster.start(bindir)
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster, request) -> str:
    """The URL (with its password) of a new, empty database for this test."""
    import re

    return postgres_cluster.create_database("t_" + re.sub(r"\W", "_", request.node.name)[:50].lower())


# The benchmarks' smoke runs (tests/test_benchmarks.py) start in the background once the tests are collected,
# on the core the rest of the suite leaves idle; their tests run last and collect the results.
_SMOKE_DIR: list = []


def pytest_collection_modifyitems(session, config, items) -> None:
    items.sort(key=lambda item: getattr(item, "originalname", None) == "test_smoke_run")  # stable: only moves those


def pytest_collection_finish(session) -> None:
    if session.config.option.collectonly:
        return
    from tests.test_benchmarks import SmokeRuns, selected_scripts

    scripts = selected_scripts(session.items)
    others = [item for item in session.items if item.path.name != "test_benchmarks.py"]
    if scripts and others:  # beside other tests only; alone, the fixture runs them on every core
        _SMOKE_DIR.append(tempfile.TemporaryDirectory(prefix="kdnas-smoke-"))
        session.config._kdnas_smoke_runs = SmokeRuns(scripts, Path(_SMOKE_DIR[0].name))


def pytest_sessionfinish(session) -> None:
    runs = getattr(session.config, "_kdnas_smoke_runs", None)
    if runs is not None:
        runs.close()
    for folder in _SMOKE_DIR:
        folder.cleanup()
