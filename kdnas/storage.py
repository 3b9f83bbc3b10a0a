"""Optuna storage: SQLite in the run folder by default, any RDB URL otherwise. Passwords never printed."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import optuna

from kdnas.errors import KdnasError

if TYPE_CHECKING:
    from kdnas.config import StudyConfig

_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*:)(?P<pw>[^@]*)(?P<tail>@)")


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``."""
    return _PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", url)


def mask_text(text: str, url: str) -> str:
    """Remove the password of ``url`` from any text (error messages from drivers can repeat it)."""
    m = _PASSWORD.search(url)
    if m and m["pw"]:
        text = text.replace(m["pw"], "***")
    return mask_url(text)


def open_storage(cfg: "StudyConfig", create: bool) -> optuna.storages.BaseStorage:
    url = cfg.storage_url()
    if url.startswith("sqlite:///"):
        from pathlib import Path

        db = Path(url[len("sqlite:///"):])
        if not create and not db.is_file():
            raise KdnasError(f"no study database at {db}; run `kdnas search {cfg.path}` first")
        db.parent.mkdir(parents=True, exist_ok=True)
        # A generous lock timeout: report and export may read while a search writes.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as err:  # bad URL, unreachable server, missing driver
        lines = str(err).strip().splitlines()
        raise KdnasError(f"cannot open storage {mask_url(url)}: {mask_text(lines[0] if lines else type(err).__name__, url)}") from None
