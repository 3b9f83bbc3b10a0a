from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna

from kdnas.study import mask_url, rdb_storage
from kdnas.study._storage import mask_text
from tests._util import REPO


def test_passwords_are_masked() -> None:
    url = "postgresql://kd:s3cr3t@db.example:5432/studies"
    assert mask_url(url) == "postgresql://kd:***@db.example:5432/studies"
    assert "s3cr3t" not in mask_text("could not connect: password s3cr3t rejected for " + url, url)
    assert mask_url("sqlite:///runs/x/study.db") == "sqlite:///runs/x/study.db"


_CLAIM = """
import json, sys, time
import optuna
from kdnas.study import rdb_storage
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name="claims", storage=rdb_storage(sys.argv[1]))
while time.time() < float(sys.argv[2]):
    time.sleep(0.001)
print(json.dumps([study.ask().number for _ in range(20)]))
"""


def test_two_processes_never_claim_the_same_waiting_trial(tmp_path: Path) -> None:
    # Retried and enqueued trials wait in storage until a worker claims one (Optuna's ask). On SQLite, Python's
    # driver ran the claim's read outside its transaction, and two workers starting together both ran the same
    # trial (without kdnas/study/_storage.py's BEGIN IMMEDIATE this test failed 3 times in 3; a CI run of
    # test_workers lost a worker to it: "Cannot tell a COMPLETE trial").
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="claims", storage=rdb_storage(url))
    for i in range(40):
        study.enqueue_trial({"x": i}, skip_if_exists=False)
    start = time.time() + 3  # both processes claim from the same moment on, once they have started
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIM, url, str(start)], stdout=subprocess.PIPE, text=True,
                              cwd=REPO) for _ in range(2)]
    claimed = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(claimed[0] + claimed[1]) == list(range(40)), "each waiting trial is claimed exactly once"
