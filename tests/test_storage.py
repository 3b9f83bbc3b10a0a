from __future__ import annotations

from kdnas.storage import mask_text, mask_url


def test_passwords_are_masked() -> None:
    url = "postgresql://kd:s3cr3t@db.example:5432/studies"
    assert mask_url(url) == "postgresql://kd:***@db.example:5432/studies"
    assert "s3cr3t" not in mask_text("could not connect: password s3cr3t rejected for " + url, url)
    assert mask_url("sqlite:///runs/x/study.db") == "sqlite:///runs/x/study.db"
