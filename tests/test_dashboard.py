"""`kdnas dashboard` serves optuna-dashboard; headless Chromium loads it and sees the study and its trials."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from kdnas.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dom(url: str, profile: Path) -> str:
    # The flags keep Chromium off the network it cannot reach here and give the page time to fetch its data.
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium package (.ci/run installs it)")
def test_dashboard_lists_the_study_and_its_trials(tiny_study: Path, tmp_path: Path) -> None:
    assert main(["search", str(tiny_study), "--trials", "2"]) == 0
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "kdnas.cli", "dashboard", str(tiny_study), "--port", str(port)],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                studies = json.load(urllib.request.urlopen(f"{base}/api/studies", timeout=2))
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"dashboard exited: {server.stdout.read()}")
                time.sleep(0.5)
        else:
            pytest.fail("dashboard did not answer within 60 s")
        (study,) = studies["study_summaries"]
        assert study["study_name"] == "tiny"
        home = _dom(f"{base}/dashboard", tmp_path / "profile1")
        assert "tiny" in home, home[:2000]
        trials = _dom(f"{base}/dashboard/studies/{study['study_id']}/trials", tmp_path / "profile2")
        assert "2 Trials" in trials and "Trial 0" in trials and "Trial 1" in trials and "Complete" in trials
        # Each trial's attributes, its teacher and distillation efficiency among them (issue #27).
        assert all(k in trials for k in ("teacher_name", "retained", "efficiency", "candidate_key")), trials[:2000]
        history = _dom(f"{base}/dashboard/studies/{study['study_id']}", tmp_path / "profile3")
        assert "val_accuracy" in history and "latency_ms" in history, "objectives must be shown by name"
    finally:
        server.terminate()
        server.wait(timeout=30)
