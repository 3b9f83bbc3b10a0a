"""The notebook API: kdnas.search, kdnas.report, kdnas.export, as the commands do them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kdnas


def test_search_report_export_from_python(tiny_study: Path, tmp_path: Path, capsys) -> None:
    lines: list[str] = []
    study = kdnas.search(str(tiny_study), trials=2, progress=lines.append)
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 2
    assert any("trial   1" in line for line in lines) and not capsys.readouterr().out, "progress goes to progress="
    assert not (tmp_path / "reports").exists(), "search writes no report; report does"
    files = kdnas.report(tiny_study)
    assert tmp_path / "reports" / "tiny" / "trials.csv" in files and all(Path(f).is_file() for f in files)
    # Resuming from a loaded config, as a notebook may keep one.
    cfg = kdnas.load_study(tiny_study, {"search": {"trials": 1}})
    assert len(kdnas.search(cfg, progress=lines.append).trials) == 3
    bundle = kdnas.export(tiny_study, tmp_path / "student", pick="params<1e9", formats=["pt2"])
    assert (bundle / "student.pt2").is_file()
    model = kdnas.load_student(bundle)
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


def test_api_errors_say_what_is_wrong(tiny_study: Path) -> None:
    with pytest.raises(kdnas.KdnasError, match="--trials: `trials >= 1` must hold"):
        kdnas.search(tiny_study, trials=0)
    with pytest.raises(TypeError, match="go with a study file's path"):
        kdnas.search(kdnas.load_study(tiny_study), trials=3)
    with pytest.raises(TypeError, match="exactly one of trial= and pick="):
        kdnas.export(tiny_study, "out")
    with pytest.raises(kdnas.KdnasError, match="no study database at .*runs/tiny/study.db; run .kdnas search"):
        kdnas.report(tiny_study)
