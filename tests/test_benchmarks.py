"""Every benchmark still runs against today's kdnas: each script in benchmarks/ with --smoke, as a user runs it.

A benchmark that nobody runs rots unseen (engine_vs_reference.py once died on a renamed method attribute while
its README still quoted the figure). The smoke runs are tiny: they check that a script runs to its end, not its
figures. Helpers (``_``-prefixed) are run through the scripts that import them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests._util import REPO

BENCHMARKS = REPO / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_"))


def _git_status() -> str | None:
    """The checkout's changes and untracked files (ignored ones aside); None outside a git checkout."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _smoke(script: str, folder: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["TMPDIR"] = str(folder)  # the scripts' temporary folders, removed with the test's
    return subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)


class SmokeRuns:
    """The selected scripts' smoke runs, started in the background as soon as the tests are collected.

    Why in the background: the rest of the suite runs one test at a time on one torch thread, leaving the
    second core of a 2-core machine mostly idle, and these runs are separate processes (interpreters starting,
    then a script's `kdnas search` children one after another). One at a time beside the suite, they cost it
    little wall time; their tests run last (tests/conftest.py orders them) and wait for what is left."""

    def __init__(self, scripts: list[str], root: Path, workers: int = 1):
        self.before = _git_status()
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.runs = {}
        for s in scripts:
            folder = root / s.removesuffix(".py")
            folder.mkdir(parents=True)
            self.runs[s] = self.pool.submit(_smoke, s, folder)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def selected_scripts(items) -> list[str]:
    return [item.callspec.params["script"] for item in items
            if getattr(item, "originalname", None) == "test_smoke_run" and hasattr(item, "callspec")]


@pytest.fixture(scope="module")
def smoke_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The runs tests/conftest.py started at collection; started here (both cores) when it did not."""
    started = getattr(request.config, "_kdnas_smoke_runs", None)
    if started is not None:
        yield started.before, started.runs
        return
    runs = SmokeRuns(selected_scripts(request.session.items), tmp_path_factory.mktemp("smoke"), os.cpu_count() or 1)
    yield runs.before, runs.runs
    runs.close()


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run(script: str, smoke_runs) -> None:
    before, runs = smoke_runs
    out = runs[script].result()
    assert out.returncode == 0, \
        f"{script} --smoke exited with {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert out.stdout.strip(), f"{script} --smoke printed nothing"
    # Other scripts may still be running: a change names no culprit, but no smoke run may make one.
    assert _git_status() == before, f"the repository changed while {script} --smoke ran:\n{_git_status()}"


def test_readme_lists_every_benchmark_and_only_those() -> None:
    """benchmarks/README.md's table names each script: a retired one leaves it, a new one needs its row."""
    readme = (BENCHMARKS / "README.md").read_text()
    named = set(re.findall(r"`([a-z0-9_]+\.py)`", readme)) - {"_studies.py"}
    assert named == set(SCRIPTS), f"in the README, not in benchmarks/: {sorted(named - set(SCRIPTS))}; " \
                                  f"in benchmarks/, not in the README: {sorted(set(SCRIPTS) - named)}"
