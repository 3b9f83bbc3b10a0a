"""A throwaway PostgreSQL cluster for tests: initdb into a temporary folder, served on 127.0.0.1.

The server refuses to run as root, so when the tests run as root (as CI does) the cluster belongs to an
unprivileged account (``postgres`` if the system has one, else ``kdnas_pg``, created with ``useradd``) and
``initdb`` / ``pg_ctl`` run through ``runuser``. Connections use password authentication, so that tests can
check that passwords never leak into output, reports or the study.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

SUPERUSER = "postgres"
PASSWORD = "pg-Secr3t-9f2c"  # distinctive, so that a leak is found by a plain substring search


def find_bindir() -> Optional[Path]:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, newest version first; None if absent."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0, reverse=True)
    candidates += sorted(glob.glob("/usr/pgsql-*/bin"), reverse=True)
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).parent))
    for c in candidates:
        if all((Path(c) / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_account() -> Optional[str]:
    """None when we are not root (the server runs as us); else an unprivileged account, created if missing."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "kdnas_pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", "kdnas_pg"], check=True)
    return "kdnas_pg"


@dataclass
class Cluster:
    bindir: Path
    base: Path
    port: int
    account: Optional[str]

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.account, "--"] if self.account else []
        return subprocess.run([*prefix, *cmd], cwd=self.base, check=True, capture_output=True, text=True, timeout=120)

    @classmethod
    def start(cls, bindir: Path) -> "Cluster":
        account = _server_account()
        base = Path(tempfile.mkdtemp(prefix="kdnas-pg-"))
        os.chmod(base, 0o755)
        (base / "pw").write_text(PASSWORD + "\n")
        if account:
            info = pwd.getpwnam(account)
            os.chown(base, info.pw_uid, info.pw_gid)
            os.chown(base / "pw", info.pw_uid, info.pw_gid)
        cluster = cls(bindir, base, _free_port(), account)
        cluster._run(str(bindir / "initdb"), "-D", str(base / "data"), "-U", SUPERUSER, "--pwfile", str(base / "pw"),
                     "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8")
        cluster.server("start")
        return cluster

    def server(self, action: str, mode: str = "fast") -> None:
        """``pg_ctl start|stop|restart`` on this cluster (its data kept): what a database restart looks like to
        the workers. ``fast`` ends the open connections (their transactions roll back); ``immediate`` kills them."""
        # fsync off: a test cluster needs no durability, and its commits then cost nothing.
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.base} -c fsync=off -c max_connections=100"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.base / "data"), "-l", str(self.base / "log"), "-o", opts,
                  "-m", mode, "-w", "-t", "60", action)

    def stop(self) -> None:
        try:
            self.server("stop", mode="immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, password=PASSWORD, dbname="postgres")
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            con.close()
        return self.url(name)
