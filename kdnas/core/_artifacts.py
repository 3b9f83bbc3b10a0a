"""A content-addressed store for weights (teachers, trial students) inside the study's run folder.

Keys are hashes of everything that determines the content. Writes go to a temporary file that is renamed
into place, so a reader never sees a half-written file; loads use ``weights_only=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch

from kdnas.core._errors import KdnasError


_UMASK = os.umask(0)
os.umask(_UMASK)


def cache_dir() -> Path:
    """kdnas's per-user cache (``$KDNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/kdnas`` or ``~/.cache/kdnas``): what
    is expensive to recompute and the same for every study on this machine. Deleting it only costs time."""
    if os.environ.get("KDNAS_CACHE_DIR"):
        return Path(os.environ["KDNAS_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kdnas"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; these are ordinary outputs
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes (``flock`` on ``path``), released even if the holder is killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process lock, at worst work is done twice
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def state_dict_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buf)
    return buf.getvalue()


def save_state_dict(path: Path, state_dict: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(path, state_dict_bytes(state_dict))


def save_object(path: Path, obj: Any) -> None:
    """Atomically save tensors, numbers, strings, lists and dicts of them (what ``load_object`` reads back)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_object(path: Path) -> Any:
    """The one ``torch.load`` of kdnas: ``weights_only=True``, and every failure as one clear line."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols it then reads fine
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise KdnasError(f"{path}: checkpoint not found") from None
    except Exception as err:  # corrupt file, or one that needs unsafe unpickling
        # PyTorch's message spans a dozen lines of advice; its one line of cause follows "WeightsUnpickler error:".
        m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", str(err))
        cause = m[1].split(". ")[0].strip() if m else next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise KdnasError(f"{path}: cannot load checkpoint safely (weights_only=True): {cause}") from None


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely. Accepts a bare state_dict or ``{"state_dict": ...}``."""
    obj = load_object(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KdnasError(f"{path}: not a state_dict (a mapping of parameter names to tensors)")
    return obj


class ArtifactStore:
    """Files under ``root/<kind>/<key>.<ext>``; ``key`` is a content hash chosen by the caller.

    ``root`` is where code reads and writes (``torch.load`` always opens a local file): the run folder's
    ``artifacts/`` by default, a shared folder that every machine mounts, or this machine's cache of a
    ``remote`` store. ``remote`` (an ``optuna.artifacts`` store: ``open_reader``/``write`` by artifact id,
    here ``<kind>/<key>.<ext>`` under its prefix) is fetched from on read and published to on write; its
    objects appear whole or not at all, as the atomic rename makes local files appear. ``claim`` makes
    :meth:`once` exclusive between machines (kdnas/study/_claims.py); without it, between the processes of
    this machine (``flock`` in ``root/locks/``)."""

    def __init__(self, root: Path, remote: Any = None, claim: Any = None, shown: str | None = None):
        self.root = Path(root)
        self.remote, self.claim = remote, claim
        self.shown = shown or str(self.root)  # how messages name the store (a URL never holds credentials)

    @property
    def shared(self) -> bool:
        """Whether other machines reach this store (work on it is claimed through the study's storage)."""
        return self.claim is not None

    def path(self, kind: str, key: str, ext: str = "pt") -> Path:
        return self.root / kind / f"{key}.{ext}"

    def fetch(self, kind: str, key: str, ext: str = "pt") -> Path:
        """The local path of an artifact, fetched from the remote store first if only that holds it (the path of
        a file that does not exist when neither does)."""
        path = self.path(kind, key, ext)
        if self.remote is not None and not path.is_file():
            data = self.remote.read(f"{kind}/{key}.{ext}")
            if data is not None:
                atomic_write_bytes(path, data)
        return path

    def publish(self, kind: str, key: str, ext: str = "pt") -> None:
        """Copy a local artifact to the remote store (nothing to do without one)."""
        if self.remote is not None:
            self.remote.write(f"{kind}/{key}.{ext}", self.path(kind, key, ext).read_bytes())

    def partial(self, kind: str, key: str) -> "Partial":
        """Where the per-epoch training state of the network ``key`` lives (kdnas/train/_resumable.py)."""
        return Partial(self.path(kind, f"{key}.partial"), self.remote, f"{kind}/{key}.partial.pt")

    def once(self, name: str, label: str | None = None, locally: bool = True) -> contextlib.AbstractContextManager:
        """Held while one process computes what ``name`` names (``label``: in words, for progress lines), so that
        it is computed once: by one machine of the study with a shared store; else by one process of this machine
        (``locally=False``: no lock, as for outputs cheap enough to compute twice)."""
        if self.claim is not None:
            return self.claim(name, label)
        return file_lock(self.root / "locks" / f"{name}.lock") if locally else contextlib.nullcontext()

    def has(self, kind: str, key: str, ext: str = "pt") -> bool:
        return self.fetch(kind, key, ext).is_file()

    def has_pair(self, kind: str, key: str) -> bool:
        """Weights and their JSON description both present (the description is written last)."""
        return self.has(kind, key, "json") and self.has(kind, key)

    def put_state_dict(self, kind: str, key: str, state_dict: dict[str, torch.Tensor]) -> Path:
        path = self.path(kind, key)
        save_state_dict(path, state_dict)
        self.publish(kind, key)
        return path

    def put_content(self, kind: str, state_dict: dict[str, torch.Tensor]) -> str:
        """Store weights under the hash of their bytes; return that key."""
        data = state_dict_bytes(state_dict)
        key = hashlib.sha256(data).hexdigest()[:16]
        if not self.path(kind, key).is_file():
            atomic_write_bytes(self.path(kind, key), data)
            self.publish(kind, key)
        return key

    def put_object(self, kind: str, key: str, obj: Any) -> Path:
        path = self.path(kind, key)
        save_object(path, obj)
        self.publish(kind, key)
        return path

    def get_state_dict(self, kind: str, key: str) -> dict[str, torch.Tensor]:
        return load_state_dict(self.fetch(kind, key))

    def put_json(self, kind: str, key: str, obj: Any) -> Path:
        path = self.path(kind, key, "json")
        atomic_write_bytes(path, json.dumps(obj, indent=1, sort_keys=True).encode())
        self.publish(kind, key, "json")
        return path

    def get_json(self, kind: str, key: str) -> Any:
        return json.loads(self.fetch(kind, key, "json").read_text())


class Partial:
    """A network's training state between epochs: the local file ``path`` (``torch.load`` reads only that) and,
    with a ``remote`` store, its copy there as ``name``. Only the holder of the network's claim reads or writes
    it. Published after every epoch, so that a machine taking over a dead holder's claim on S3 resumes after
    the last finished epoch, as it does from a shared folder; one put per epoch of a teacher or an assistant
    (student trials keep no partial state). The name holds the network's content-addressed key: no other
    network's state can be read for it."""

    def __init__(self, path: Path, remote: Any = None, name: str | None = None):
        self.path, self.remote, self.name = Path(path), remote, name or Path(path).name

    def fetch(self) -> Path:
        """The local path, the remote copy written over it first where there is one: every holder published
        after each epoch, so the remote copy is the newest (this machine's may be from before another
        machine took the claim over and went further)."""
        if self.remote is not None:
            data = self.remote.read(self.name)
            if data is not None:
                atomic_write_bytes(self.path, data)
        return self.path

    def publish(self) -> None:
        if self.remote is not None:
            self.remote.write(self.name, self.path.read_bytes())  # a whole object: readers see one epoch's state

    def remove(self) -> None:
        """The network is stored: its partial state is no longer needed, here or in the remote store."""
        self.path.unlink(missing_ok=True)
        if self.remote is not None:
            self.remote.remove(self.name)
