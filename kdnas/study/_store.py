"""The study's artifact store, as its ``artifacts`` setting says (kdnas/config/_artifacts.py).

- left out: ``runs/<name>/artifacts``, this machine's, locked with ``flock`` between its processes (as always);
- a folder path: that folder, which every machine mounts, used as the run folder's would be (content-addressed
  files, each written to a temporary file and renamed into place); work on it claimed through the study's
  storage (kdnas/study/_claims.py), since ``flock`` does not reach across machines on every shared folder;
- ``s3://bucket/prefix``: Optuna's ``Boto3ArtifactStore`` (its ``open_reader``/``write`` are all a
  content-addressed store of whole files needs; S3 objects appear whole, as renamed files do), with
  ``runs/<name>/artifacts`` as this machine's cache: files are fetched on first read and published on write,
  so every ``torch.load`` stays ``weights_only`` on a local file. Claims as for a shared folder; a teacher's or
  assistant's partial checkpoint is published after every epoch, so a machine taking a dead holder's claim over
  resumes from it as from a shared folder (kdnas/core/_artifacts.py ``Partial``).

S3 credentials come from boto3's usual places (environment, ``~/.aws``, an instance role), and a server other
than AWS from ``AWS_ENDPOINT_URL``; none is ever in the study file, and the values of the environment's secrets
are struck from every message that could repeat them.
"""

from __future__ import annotations

import os
from pathlib import Path

from kdnas.config import StudyConfig
from kdnas.config._artifacts import s3_location
from kdnas.core import ArtifactStore, KdnasError

# Environment variables whose values must never be printed (an error of the S3 client could quote one).
SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID", "AWS_SECURITY_TOKEN")


def open_store(cfg: StudyConfig) -> ArtifactStore:
    """The artifact store of ``cfg``; a shared store's claims go through the study's storage, opened on the
    first claim (commands that only read, like ``kdnas export``, never open it for that)."""
    url = cfg.artifacts.url
    local = cfg.run_dir / "artifacts"
    if url is None:
        return ArtifactStore(local)
    claim = _claims(cfg)
    if cfg.artifacts.is_s3:
        remote = S3Remote(url)
        remote.check()  # a missing bucket or no credentials: said now, not after the teacher has trained
        return ArtifactStore(local, remote=remote, claim=claim, shown=url)
    root = cfg.resolve(url)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise KdnasError(f"{cfg.path}: artifacts.url: cannot create the shared folder {root}: {err.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise KdnasError(f"{cfg.path}: artifacts.url: {root} is not a writable folder")
    return ArtifactStore(root, claim=claim)


def _claims(cfg: StudyConfig):
    from kdnas.study._claims import StorageClaims
    from kdnas.study._storage import rdb_storage

    return StorageClaims(lambda: rdb_storage(cfg.storage_url()).engine, cfg.artifacts.lease,
                         cfg.parallel.storage_outage)


def strike_secrets(text: str) -> str:
    """``text`` without the value of any credential in the environment."""
    for var in SECRET_VARIABLES:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


class S3Remote:
    """Whole objects under ``s3://bucket/prefix/`` through Optuna's ``Boto3ArtifactStore``: ``read`` (None when
    absent), ``write`` and ``remove`` (of a partial checkpoint once its network is stored). Every other failure
    is one line naming the URL and the object, without secrets."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.bucket, self.prefix = s3_location(url)
        self._store = None

    def _open(self):
        if self._store is None:
            try:
                import boto3
                from optuna.artifacts import Boto3ArtifactStore
            except ImportError:
                raise KdnasError(f"artifacts.url {self.url}: S3 needs boto3 (pip install boto3)") from None
            # A client of its own: boto3 reads credentials and AWS_ENDPOINT_URL from the environment and ~/.aws.
            self._store = Boto3ArtifactStore(self.bucket, client=boto3.client("s3"))
        return self._store

    def check(self) -> None:
        try:
            self._open().client.head_bucket(Bucket=self.bucket)
        except KdnasError:
            raise
        except Exception as err:
            raise self._error("cannot reach bucket", self.bucket, err) from None

    def _id(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, name: str) -> bytes | None:
        from optuna.artifacts.exceptions import ArtifactNotFound

        try:
            reader = self._open().open_reader(self._id(name))
            try:
                return reader.read()
            finally:
                reader.close()
        except ArtifactNotFound:
            return None
        except KdnasError:
            raise
        except Exception as err:
            raise self._error("cannot read", name, err) from None

    def write(self, name: str, data: bytes) -> None:
        import io

        try:
            self._open().write(self._id(name), io.BytesIO(data))
        except KdnasError:
            raise
        except Exception as err:
            raise self._error("cannot write", name, err) from None

    def remove(self, name: str) -> None:
        try:
            self._open().remove(self._id(name))  # S3 answers a delete of an absent object with success
        except KdnasError:
            raise
        except Exception as err:
            raise self._error("cannot remove", name, err) from None

    def _error(self, what: str, name: str, err: Exception) -> KdnasError:
        code = str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            cause = "no such bucket (create it first)"
        elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            cause = f"access denied ({code}): check the credentials in the environment or ~/.aws"
        else:
            lines = str(err).strip().splitlines()
            cause = strike_secrets(lines[0] if lines else type(err).__name__)
        return KdnasError(f"artifact store {self.url}: {what} {name}: {cause}")


def store_path(cfg: StudyConfig) -> Path | str:
    """Where the study's artifacts live, for messages: the shared folder, the S3 URL, or the run folder's."""
    url = cfg.artifacts.url
    return cfg.run_dir / "artifacts" if url is None else url if cfg.artifacts.is_s3 else cfg.resolve(url)
