"""A study's artifacts in a store every machine reaches (``artifacts: {url: ...}``): the setting's checks, the claim
that makes one machine train each shared network (a holder killed with SIGKILL is taken over), and "machines"
simulated as processes with separate run folders sharing one shared folder and one study."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from kdnas.cli import main
from kdnas.config import load_study
from kdnas.study import open_store, rdb_storage
from tests._util import CHAIN_SPACE, REPO, write_tiny_study

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
       "MPLBACKEND": "Agg"}
SECRET = "FakeSecretKey/kdnas+never+shown0123456789"


def machine(folder: Path, shared: Path, storage: str, extra: str = "", **kw) -> Path:
    """A "machine": its own folder with the study files (so its own runs/ and reports/), the shared store."""
    folder.mkdir(parents=True, exist_ok=True)
    study = write_tiny_study(folder, teacher_width=1.0, extra=f"artifacts: {{url: {shared}, lease: 3}}\n"
                             f"storage: {storage}\n" + extra, **kw)
    (folder / "space.yaml").write_text(CHAIN_SPACE)  # one assistant (width 0.5) between teacher and student
    return study


def test_the_artifacts_setting_is_checked_and_never_echoes_a_secret(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path)
    default = load_study(study)
    assert default.artifacts.url is None and open_store(default).root == tmp_path / "runs/tiny/artifacts"
    assert not open_store(default).shared, "without the key: the run folder's store, flock between processes"
    study.write_text(study.read_text() + "artifacts: ../shared\n")  # shorthand; relative to the study file
    shared = open_store(load_study(study))
    assert shared.root == tmp_path / "../shared" and shared.shared and (tmp_path.parent / "shared").is_dir()
    text = study.read_text().replace("artifacts: ../shared\n", "")
    for value, expected in [
        (f"{{url: 's3://AKIAFAKE:{SECRET}@bucket/p'}}", "artifacts.url: holds credentials or parameters (not shown)"),
        (f"{{url: 's3://bucket/p?secret={SECRET}'}}", "artifacts.url: holds credentials or parameters (not shown)"),
        ("{url: 'gs://bucket/p'}", "artifacts.url: expected a folder path or s3://bucket/prefix, got a gs:// URL"),
        ("{url: 's3://Bad_Bucket/p'}", "artifacts.url: expected s3://bucket/prefix with a bucket name"),
        ("{url: /x, lease: 0}", "artifacts.lease: `lease >= 2` (seconds) must hold"),
        ("{uri: /x}", "artifacts.uri: unknown key"),
    ]:
        study.write_text(text + f"artifacts: {value}\n")
        assert main(["search", str(study)]) == 2, value
        err = capsys.readouterr().err
        assert expected in err and str(study) in err, err
        assert SECRET not in err and "AKIAFAKE" not in err
    assert not (tmp_path / "runs").exists(), "refused before anything is written"


def test_a_machine_exports_what_another_trained_through_a_shared_folder(tmp_path: Path, monkeypatch) -> None:
    shared, db = tmp_path / "shared", f"sqlite:///{tmp_path / 'db' / 'study.db'}"  # SQLite: the database both reach
    a, b = (machine(tmp_path / m, shared, db, "assistants: {train: {epochs: 1}}\n", teacher_epochs=1) for m in "ab")
    monkeypatch.chdir(a.parent)
    assert main(["search", str(a), "--trials", "1"]) == 0
    assert {p.name for p in shared.iterdir()} >= {"teachers", "assistants", "teacher_logits", "students"}
    assert not (a.parent / "runs/tiny/artifacts").exists() and not (shared / "locks").exists()
    monkeypatch.chdir(b.parent)
    assert main(["export", str(b), "--trial", "0", "--out", str(tmp_path / "bundle")]) == 0
    assert len(list((tmp_path / "bundle/guides").glob("*.pt"))) == 2, "the teacher and the assistant"
    assert main(["export", str(b), "--trial", "0", "--out", str(shared), "--force"]) == 2, "never the store"


CLAIMANT = """
import sys, time
from kdnas.study._claims import StorageClaims
from kdnas.study import rdb_storage
claims = StorageClaims(lambda: rdb_storage(sys.argv[1]).engine, lease=float(sys.argv[2]))
with claims("teacher-x", "teacher x"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_claim_is_held_while_its_holder_beats_and_taken_over_when_it_is_killed(tmp_path: Path, capfd) -> None:
    from kdnas.core import setup_logging
    from kdnas.study import rdb_storage
    from kdnas.study._claims import StorageClaims

    setup_logging()
    url, lease = f"sqlite:///{tmp_path / 'study.db'}", 1.5
    holder = subprocess.Popen([sys.executable, "-c", CLAIMANT, url, str(lease)], env=ENV, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        claims = StorageClaims(lambda: rdb_storage(url).engine, lease=lease)
        got: list[float] = []

        def wait_for_it() -> None:
            with claims("teacher-x", "teacher x"):
                got.append(time.monotonic())

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        time.sleep(1.6 * lease)  # longer than the lease: only the holder's heartbeat keeps the claim its own
        assert not got, "a live holder keeps its claim past the lease"
        killed = time.monotonic()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        waiter.join(timeout=4 * lease)
        # Silent for a lease since the last beat the waiter saw (up to lease/4 before the kill), plus a poll.
        assert got and 0.5 * lease <= got[0] - killed <= 2.5 * lease, "taken over a lease after the last beat"
    finally:
        holder.kill()
    said = capfd.readouterr().err
    assert f"teacher x: waiting for {os.uname().nodename} (pid {holder.pid}), which is computing it" in said, said
    assert "teacher x: taking over from" in said and "silent for 2 s (it died?)" in said
    start = time.monotonic()
    for _ in range(2):  # a released claim is free at once
        with claims("teacher-x"):
            pass
    assert time.monotonic() - start < 1


def _out(proc: subprocess.Popen) -> str:
    return proc.communicate(timeout=600)[0]


@pytest.mark.slow  # ~40 s on 2 cores: two searches, a kill, a takeover and exports
def test_two_machines_share_one_store_and_one_postgres_study(postgres_url: str, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    studies = [machine(tmp_path / m, shared, postgres_url) for m in ("m1", "m2")]

    def search(i: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "kdnas.cli", "search", str(studies[i]), "--trials", "2"],
                                cwd=studies[i].parent, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    procs = [search(0), search(1)]
    outs = [_out(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    both = "".join(outs)
    assert both.count("training teacher") == 1, "the teacher is trained once for the study, by one machine"
    assert both.count("training assistant") == 1 == len(list((shared / "assistants").glob("*.json")))
    assert "waiting for" in both, "the other machine waited for it"
    study = optuna.load_study(study_name="tiny", storage=rdb_storage(postgres_url))
    trials = study.trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3] and all(t.state == TrialState.COMPLETE for t in trials)
    by_pid = {p.pid: i for i, p in enumerate(procs)}
    ran = [by_pid[t.system_attrs["kdnas:worker"]["pid"]] for t in trials]
    assert sorted(ran) == [0, 0, 1, 1], "exactly --trials trials per machine"
    assert not list(tmp_path.rglob("locks")), "no lock files: claims live in the study's storage"
    for t, i in zip(trials, ran):  # each trial exported by the machine that did not train it
        other = studies[1 - i]
        assert not (other.parent / "runs/tiny/artifacts/students").exists()
        assert main(["export", str(other), "--trial", str(t.number), "--out", str(tmp_path / f"b{t.number}")]) == 0
        assert (tmp_path / f"b{t.number}/weights.pt").is_file()
    assert main(["report", str(studies[1])]) == 0

    # A machine killed (SIGKILL) while it trains a shared network: the other takes its claim over and finishes.
    studies[:] = [machine(tmp_path / m, tmp_path / "shared2", postgres_url) for m in ("m3", "m4")]
    for s in studies:
        s.write_text(s.read_text().replace("name: tiny", "name: tiny2").replace("epochs: 2, lr", "epochs: 30, lr"))
    procs = [search(0), search(1)]
    lines: list[list[str]] = [[], []]
    readers = [threading.Thread(target=lambda i=i: lines[i].extend(procs[i].stdout)) for i in (0, 1)]
    for r in readers:
        r.start()

    def said(i: int, text: str) -> bool:
        return any(text in line for line in list(lines[i]))

    deadline = time.monotonic() + 120
    while not any(said(i, "epoch 1/30") and said(1 - i, "waiting for") for i in (0, 1)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), lines
        time.sleep(0.05)
    holder = 0 if said(0, "epoch 1/30") else 1
    procs[holder].send_signal(signal.SIGKILL)  # after its first epoch: a partial checkpoint in the shared folder
    procs[1 - holder].wait(timeout=600)
    for r in readers:
        r.join()
    out = "".join(lines[1 - holder])
    assert procs[1 - holder].returncode == 0, out
    assert "taking over from" in out and "resuming after epoch" in out, out
    study = optuna.load_study(study_name="tiny2", storage=rdb_storage(postgres_url))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and not [t for t in study.trials if t.state == TrialState.RUNNING]
