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


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run(script: str, tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["TMPDIR"] = str(tmp_path)  # the scripts' temporary folders, removed with the test's
    before = _git_status()
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{script} --smoke exited with {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    assert out.stdout.strip(), f"{script} --smoke printed nothing"
    assert _git_status() == before, f"{script} --smoke changed files in the repository"


def test_readme_lists_every_benchmark_and_only_those() -> None:
    """benchmarks/README.md's table names each script once, with its --smoke command: a retired script leaves it."""
    readme = (BENCHMARKS / "README.md").read_text()
    named = set(re.findall(r"`([a-z0-9_]+\.py)`", readme)) - {"_studies.py"}
    assert named == set(SCRIPTS), f"in the README, not in benchmarks/: {sorted(named - set(SCRIPTS))}; " \
                                  f"in benchmarks/, not in the README: {sorted(set(SCRIPTS) - named)}"
