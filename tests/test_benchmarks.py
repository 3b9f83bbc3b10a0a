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


@pytest.fixture(scope="module")
def smoke_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The selected scripts' smoke runs, started together, as many at a time as there are cores (each is one
    process at a time, mostly: starting interpreters, then its `kdnas search` children one after another)."""
    selected = [item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_smoke_run" and hasattr(item, "callspec")]
    before = _git_status()
    with ThreadPoolExecutor(max_workers=max(1, min(len(selected), os.cpu_count() or 1))) as pool:
        yield before, {s: pool.submit(_smoke, s, tmp_path_factory.mktemp(s.removesuffix(".py"))) for s in selected}


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
