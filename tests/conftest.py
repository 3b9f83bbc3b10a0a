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
