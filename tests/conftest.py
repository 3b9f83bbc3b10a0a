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


# The benchmarks' smoke runs (tests/test_benchmarks.py) run in the background on the core the rest of the suite
# leaves idle, and their tests run last to collect the results. The tests that time passes and compare the
# figures run first, before those runs start: beside another process their floors move (a 2:1 work ratio once
# measured 1.696 there).
TIMING_MODULES = ("test_costs.py", "test_background_latency.py", "test_profile.py")
_SMOKE: dict = {}


def _order(item) -> int:
    if getattr(item, "originalname", None) == "test_smoke_run":
        return 2
    return 0 if item.path.name in TIMING_MODULES else 1


def pytest_collection_modifyitems(session, config, items) -> None:
    items.sort(key=_order)  # stable: within each group, the usual order


def pytest_collection_finish(session) -> None:
    from tests.test_benchmarks import selected_scripts

    scripts = selected_scripts(session.items)
    others = [item for item in session.items if item.path.name != "test_benchmarks.py"]
    if scripts and others and not session.config.option.collectonly:  # alone, the fixture runs them on every core
        _SMOKE["scripts"] = scripts


def pytest_runtest_setup(item) -> None:
    if "scripts" in _SMOKE and "runs" not in _SMOKE and _order(item) > 0:
        from tests.test_benchmarks import SmokeRuns

        _SMOKE["dir"] = tempfile.TemporaryDirectory(prefix="kdnas-smoke-")
        _SMOKE["runs"] = item.config._kdnas_smoke_runs = SmokeRuns(_SMOKE["scripts"], Path(_SMOKE["dir"].name))


def pytest_sessionfinish(session) -> None:
    if "runs" in _SMOKE:
        _SMOKE["runs"].close()
        _SMOKE["dir"].cleanup()
