"""``artifacts``: where a study's weights live (teacher, assistants, logit tables, students, rung checkpoints).

Left out: ``runs/<name>/artifacts`` beside the study file, as always, one per machine. A shared folder
(``/shared/path``, relative paths from the study file) or an S3 bucket (``s3://bucket/prefix``) lets every
machine of a study read what any of them trained, and each network is trained once for the whole study
(kdnas/study/_store.py). Credentials never belong here: S3 ones come from the environment or the standard AWS
configuration, and a URL holding any is refused without being echoed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens (what AWS and S3-compatible servers accept).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class ArtifactsConfig:
    url: Optional[str] = None  # null: runs/<name>/artifacts (this machine only); a folder path; s3://bucket/prefix
    # A machine training a shared network renews its claim every lease/4 seconds; a claim not renewed for `lease`
    # seconds belonged to a machine that died, and another takes the work over.
    lease: float = 60.0

    def check(self, report) -> None:
        if not self.lease >= 2:
            report("lease", f"`lease >= 2` (seconds) must hold, but got lease={self.lease}")
        if self.url is None:
            return
        problem = url_problem(self.url)
        if problem:
            report("url", problem)

    @property
    def is_s3(self) -> bool:
        return self.url is not None and self.url.startswith("s3://")


def url_problem(url: str) -> str | None:
    """Why ``url`` is no artifact store location, in words that never repeat what it may hide (a secret)."""
    m = _SCHEME.match(url)
    if not url.strip():
        return "expected a folder path or s3://bucket/prefix, got an empty string"
    if m is None:
        return None  # a folder path
    if m[1] != "s3":
        return (f"expected a folder path or s3://bucket/prefix, got a {m[1]}:// URL (a shared folder is written as a "
                "plain path; S3-compatible servers are named by AWS_ENDPOINT_URL in the environment)")
    parts = urlsplit(url)
    # `@` anywhere: a secret may hold `/`, which would end the URL's host part before its `@`.
    if "@" in url or ":" in parts.netloc or parts.query or parts.fragment:
        return ("holds credentials or parameters (not shown): an S3 URL is s3://bucket/prefix only; credentials come "
                "from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or the standard AWS configuration "
                "(~/.aws), never from the study file")
    if not _BUCKET.match(parts.netloc):
        return ("expected s3://bucket/prefix with a bucket name of 3-63 lowercase letters, digits, '.', '-'; got "
                f"bucket {parts.netloc!r}")
    return None


def s3_location(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> ``("bucket", "a/b")``."""
    parts = urlsplit(url)
    return parts.netloc, parts.path.strip("/")
