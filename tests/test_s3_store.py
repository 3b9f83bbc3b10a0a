"""A study's artifacts in S3 (``artifacts: {url: s3://bucket/prefix}``), against a real S3-compatible server: moto's
standalone server (``pip install "moto[server]"``, in the dev extra), started here as its own process on a free
port. Fake credentials in the environment; none may appear in any output, file, attribute or error."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from kdnas.cli import main  # noqa: E402
from kdnas.study import rdb_storage  # noqa: E402
from tests._util import CHAIN_SPACE, REPO, write_tiny_study  # noqa: E402

KEY_ID = "AKIAKDNASFAKEKEY0001"
SECRET = "kdnasFakeSecret/never+shown/0123456789abcdef"
BUCKET = "kdnas-test"
# One assistant in every chain; a sampled alpha: every trial is a candidate of its own (fidelity ranks two).
SPACE = CHAIN_SPACE.replace("alpha: 0.8", "alpha: {type: float, low: 0.5, high: 0.9}")


@pytest.fixture
def s3_server(monkeypatch):
    """moto's S3 server on 127.0.0.1, and an environment whose AWS settings point at it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError as err:
            if getattr(err, "code", None):  # an HTTP answer of any kind: it is up
                break
            assert proc.poll() is None and time.monotonic() < deadline, "moto's server did not start"
            time.sleep(0.2)
    for var, value in {"AWS_ACCESS_KEY_ID": KEY_ID, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": url,
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.slow  # ~30 s: a search, then export, report, train and fidelity from a second "machine"
def test_s3_store_serves_every_machine_and_never_shows_a_credential(s3_server: str, tmp_path: Path,
                                                                    monkeypatch, capfd) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket=BUCKET)
    db = f"sqlite:///{tmp_path / 'db' / 'study.db'}"  # the study's storage, which both "machines" reach
    studies = []
    for m in ("a", "b"):
        (tmp_path / m).mkdir()
        studies.append(write_tiny_study(tmp_path / m, teacher_width=1.0,
                                        extra=f"artifacts: s3://{BUCKET}/studies/tiny\nstorage: {db}\n"))
        (tmp_path / m / "space.yaml").write_text(SPACE)
    monkeypatch.chdir(tmp_path / "a")
    assert main(["search", str(studies[0]), "--trials", "2"]) == 0
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET)["Contents"]}
    kinds = {k.split("/")[2] for k in keys if k.startswith("studies/tiny/")}
    assert kinds >= {"teachers", "assistants", "teacher_logits", "students"} and len(keys) == len(
        [k for k in keys if k.startswith("studies/tiny/")])

    monkeypatch.chdir(tmp_path / "b")  # the machine that trained nothing: its cache is empty
    assert main(["export", str(studies[1]), "--trial", "0", "--out", str(tmp_path / "bundle")]) == 0
    assert main(["report", str(studies[1])]) == 0
    assert main(["train", str(tmp_path / "bundle"), "--epochs", "1", "--threads", "1"]) == 0
    assert main(["fidelity", str(studies[1]), "--top", "2", "--epochs", "1", "--threads", "1"]) == 0
    assert (tmp_path / "b/runs/tiny/artifacts/students").is_dir(), "fetched into this machine's cache"

    missing = studies[1].read_text().replace(f"s3://{BUCKET}/", "s3://no-such-bucket/")
    studies[1].write_text(missing)
    assert main(["search", str(studies[1]), "--trials", "1"]) == 2
    out = capfd.readouterr()
    said = "artifact store s3://no-such-bucket/studies/tiny: cannot reach bucket no-such-bucket: no such bucket"
    assert said in out.err, out.err

    for where, text in [("stdout", out.out), ("stderr", out.err)] + [
            (str(p), p.read_bytes().decode("latin-1")) for p in tmp_path.rglob("*") if p.is_file()]:
        assert SECRET not in text and KEY_ID not in text, f"a credential leaked into {where}"
    import optuna

    study = optuna.load_study(study_name="tiny", storage=rdb_storage(db))
    attrs = json.dumps([study.user_attrs, study._storage.get_study_system_attrs(study._study_id),
                        [[t.user_attrs, t.system_attrs, t.params] for t in study.trials]], default=str)
    assert SECRET not in attrs and KEY_ID not in attrs
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET  # the secret was there all along, for boto3 to use


@pytest.mark.slow  # ~30 s: a teacher trainer killed after its first epoch, then a second "machine" takes over
def test_a_machine_taking_over_a_killed_holder_resumes_from_the_partial_checkpoint_in_s3(s3_server: str,
                                                                                         tmp_path: Path,
                                                                                         monkeypatch, capfd) -> None:
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)

    def partials() -> list[str]:
        return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if ".partial" in o["Key"]]

    db = f"sqlite:///{tmp_path / 'db' / 'study.db'}"
    studies = []
    for m in ("a", "b"):
        (tmp_path / m).mkdir()
        studies.append(write_tiny_study(tmp_path / m, teacher_width=1.0, teacher_epochs=20, extra=(
            f"artifacts: {{url: 's3://{BUCKET}/p', lease: 2}}\nstorage: {db}\nassistants: {{train: {{epochs: 1}}}}\n")))
        (tmp_path / m / "space.yaml").write_text(CHAIN_SPACE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-m", "kdnas.cli", "search", str(studies[0]), "--trials", "1"],
                              cwd=tmp_path / "a", env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    said = []
    try:
        for line in holder.stdout:  # progress lines come after the epoch's checkpoint is published
            said.append(line)
            if "epoch 1/20" in line:
                break
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=60)
    finally:
        holder.kill()
    assert said and "epoch 1/20" in said[-1], "".join(said)
    published = partials()
    assert len(published) == 1 and published[0].startswith("p/teachers/"), published  # one network's state only
    assert holder.returncode == -signal.SIGKILL

    monkeypatch.chdir(tmp_path / "b")  # the other machine: nothing in its cache, the claim held by a dead process
    capfd.readouterr()
    assert main(["search", str(studies[1]), "--trials", "1"]) == 0
    err = capfd.readouterr().err
    resumed = re.search(r"teacher resnet_cifar\(depth=8,width=1.0\): resuming after epoch (\d+)/20", err)
    assert "taking over from" in err and resumed and int(resumed[1]) >= 1, err
    assert "training teacher" not in err, "not from the start"
    assert partials() == [], "removed once the networks are stored, like the local partial files"
    assert not list((tmp_path / "b").rglob("*.partial.pt"))
    key = published[0].removeprefix("p/teachers/").removesuffix(".partial.pt")
    assert s3.head_object(Bucket=BUCKET, Key=f"p/teachers/{key}.pt")["ContentLength"] > 0
