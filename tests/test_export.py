"""Export: --pick by budget, self-contained bundles, deployment formats that run at several batch sizes."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch

from kdnas import load_student
from kdnas.cli import main
from kdnas.errors import KdnasError
from kdnas.export import parse_pick, pick_trial
from tests._util import searched_tiny_study


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 4-trial tiny study (module-scoped: searched once for every test here)."""
    return searched_tiny_study(tmp_path_factory.mktemp("export"))


@pytest.fixture
def in_finished(finished: Path, monkeypatch) -> Path:
    monkeypatch.chdir(finished)
    return finished


def _study() -> optuna.Study:
    return optuna.load_study(study_name="tiny", storage="sqlite:///runs/tiny/study.db")


def test_parse_pick() -> None:
    assert parse_pick("params<50000") == [("params", "<", 50000.0)]
    assert parse_pick("latency_ms <= 0.5, macs<1e6 and val_accuracy>=0.9") == [
        ("latency_ms", "<=", 0.5), ("macs", "<", 1e6), ("val_accuracy", ">=", 0.9)]
    for bad in ("params<", "__import__('os')<1", "params<<3", "size<3"):
        with pytest.raises(KdnasError, match="--pick: cannot read"):
            parse_pick(bad)


def test_pick_takes_the_most_accurate_pareto_trial_within_budget(in_finished: Path) -> None:
    study = _study()
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    budget = max(t.user_attrs["params"] for t in done)
    picked = pick_trial(study, f"params<={budget}")
    assert picked.user_attrs["val_accuracy"] == max(t.user_attrs["val_accuracy"] for t in done)
    small = pick_trial(study, f"params<{min(t.user_attrs['params'] for t in done) + 1}")
    assert small.user_attrs["params"] == min(t.user_attrs["params"] for t in done)
    with pytest.raises(KdnasError, match="none of the .* Pareto-optimal trials meets it"):
        pick_trial(study, "params<10")


def test_bundle_is_self_contained_and_deploys(in_finished: Path, capsys) -> None:
    out = in_finished / "bundle"
    study_file = str(in_finished / "study.yaml")
    assert main(["export", study_file, "--pick", "params<1e9", "--out", str(out), "--format", "pt2", "--format", "onnx"]) == 0
    number = int(capsys.readouterr().out.split("exported trial ")[1].split()[0])
    trial = _study().trials[number]
    for name in ("student.json", "weights.pt", "recipe.json", "costs.json", "README.md", "guides/teacher.pt",
                 "student.pt2", "student.onnx"):
        assert (out / name).is_file(), name
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["trial"] == number and recipe["versions"]["torch"] == torch.__version__
    assert recipe["full_train"]["epochs"] >= recipe["student_train"]["epochs"]
    assert recipe["method"] == trial.user_attrs["candidate"]["method"]
    costs = json.loads((out / "costs.json").read_text())
    assert costs["params"] == trial.user_attrs["params"] and costs["latency_setting"]["device"] == "cpu"
    assert f"trial {number}" in (out / "README.md").read_text()

    student = load_student(out)
    exported = torch.export.load(out / "student.pt2").module()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(out / "student.onnx"))
    for batch in (1, 7):
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            ref = student(x)
        torch.testing.assert_close(exported(x), ref)
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)


def test_export_refuses_unfinished_or_missing_trials(in_finished: Path, capsys) -> None:
    study_file = str(in_finished / "study.yaml")
    assert main(["export", study_file, "--trial", "99", "--out", str(in_finished / "x")]) == 2
    assert "has no trial 99" in capsys.readouterr().err
    assert main(["export", study_file, "--pick", "params<>3", "--out", str(in_finished / "x")]) == 2
    assert not (in_finished / "x").exists()
