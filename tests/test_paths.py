"""Where a study's runs/ and reports/ live: beside the study file, whatever the working folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kdnas.cli import main
from kdnas.config import load_study
from tests._util import REPO, write_tiny_study


def test_runs_and_reports_live_beside_the_study_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    project = tmp_path / "project"
    project.mkdir()
    study = write_tiny_study(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["search", str(study), "--trials", "1"]) == 0
    assert (project / "runs" / "tiny" / "study.db").is_file()
    assert (project / "reports" / "tiny" / "trials.csv").is_file()
    assert not (elsewhere / "runs").exists() and not (elsewhere / "reports").exists()
    # Another working folder, the study named by a relative path: the report finds the study.
    (project / "reports" / "tiny" / "trials.csv").unlink()
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["report", "project/study.yaml"]) == 0
    assert (project / "reports" / "tiny" / "trials.csv").is_file()
    assert "never searched" not in capsys.readouterr().err


def test_a_study_left_in_the_working_folder_is_used_where_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog) -> None:
    # Earlier versions made runs/ in the working folder: such a study is found there, with a note, not
    # silently replaced by an empty one beside the study file.
    (tmp_path / "studies").mkdir()
    study = write_tiny_study(tmp_path / "studies")
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="kdnas"):
        cfg = load_study(study)
    assert cfg.run_dir.resolve() == (tmp_path / "runs" / "tiny").resolve()
    assert cfg.report_dir.resolve() == (tmp_path / "reports" / "tiny").resolve()
    assert "move them to" in caplog.text
    # Once the folder beside the study file exists, it wins, and nothing is said.
    (tmp_path / "studies" / "runs" / "tiny").mkdir(parents=True)
    caplog.clear()
    with caplog.at_level("WARNING", logger="kdnas"):
        cfg = load_study(study)
    assert cfg.run_dir.resolve() == (tmp_path / "studies" / "runs" / "tiny").resolve()
    assert caplog.text == ""


def test_the_quickstart_does_not_overwrite_the_shipped_example_report(tmp_path: Path, monkeypatch) -> None:
    # The README's first command runs studies/quickstart.yaml from the repository root; the example report
    # tracked in reports/quickstart/ must not be where that run writes.
    shutil.copytree(REPO / "studies", tmp_path / "studies")
    shutil.copytree(REPO / "search_spaces", tmp_path / "search_spaces")
    monkeypatch.chdir(tmp_path)
    cfg = load_study("studies/quickstart.yaml")
    assert cfg.report_dir.resolve() == (tmp_path / "studies" / "reports" / "quickstart").resolve()
    assert (REPO / "reports" / "quickstart" / "summary.md").is_file()  # the kept example
    assert not cfg.report_dir.resolve().is_relative_to((tmp_path / "reports").resolve())
