"""Export: --pick by budget, self-contained bundles, deployment formats that run at several batch sizes, and
--force that replaces a bundle and nothing else."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import optuna
import pytest
import torch

from kdnas import load_student
from kdnas.bundle import pick, pick_trial
from kdnas.bundle._export import parse_pick
from kdnas.cli import main
from kdnas.core import KdnasError
from tests._candidate_studies import T, make_study
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
    assert picked.user_attrs["val_accuracy"] == max(t.user_attrs["val_accuracy"] for t in done)  # one replicate each
    small = pick_trial(study, f"params<{min(t.user_attrs['params'] for t in done) + 1}")
    assert small.user_attrs["params"] == min(t.user_attrs["params"] for t in done)
    with pytest.raises(KdnasError, match="none of the .* Pareto-optimal candidates meets it"):
        pick_trial(study, "params<10")


def test_pick_chooses_on_means_exports_the_representative_and_says_when_within_noise() -> None:
    # a: three replicates, mean 92 % (its luckiest, trial 2, at 94 %); b: one lucky training at 93.5 % but dearer;
    # c: 80 %, cheap; on 400 images the intervals of a and b overlap, a's and c's do not.
    study = make_study([T("a", 0.90, 300), T("a", 0.92, 300), T("a", 0.94, 300), T("b", 0.935, 500),
                        T("c", 0.80, 100)])
    chosen = pick(study, "params<=1000")
    assert chosen.trial.number == 3 and chosen.entry.key == "b"  # the higher mean, though a single training
    lines = chosen.lines("params<=1000")
    assert lines[0].startswith("--pick 'params<=1000': trial 3, val 93.5% ± ") and "of the 3 candidates" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("within noise of trial 1: val 92.0% ± ") and "(3x)" in lines[1]
    # Within 400 params: a, exported through the replicate closest to its mean (trial 1, 92 %), not its luckiest.
    within = pick(study, "params<400")
    assert within.trial.number == 1 and within.trial.user_attrs["val_accuracy"] == 0.92
    assert within.close == [] and len(within.lines("params<400")) == 1  # c is far below: no noise to speak of
    assert pick_trial(study, "params<400").number == 1  # the API's return type is the trial, as before
    assert pick(study, "val_accuracy>=0.93").entry.key == "b"  # conditions read the means
    with pytest.raises(KdnasError, match="none of the 3 Pareto-optimal candidates meets it"):
        pick(study, "val_accuracy>0.935")


def test_bundle_is_self_contained_and_deploys(in_finished: Path, capsys) -> None:
    out = in_finished / "bundle"
    study_file = str(in_finished / "study.yaml")
    assert main(["export", study_file, "--pick", "params<1e9", "--out", str(out), "--format", "pt2", "--format", "onnx"]) == 0
    printed = capsys.readouterr().out
    number = int(printed.split("exported trial ")[1].split()[0])
    assert printed.startswith(f"--pick 'params<1e9': trial {number}, val ")  # the choice, with its interval
    trial = _study().trials[number]
    for name in ("student.json", "weights.pt", "recipe.json", "costs.json", "README.md", "guides/teacher.pt",
                 "student.pt2", "student.onnx", "preprocess.json"):
        assert (out / name).is_file(), name
    # The ONNX file holds its weights: no student.onnx.data beside it, and it runs on its own.
    assert not (out / "student.onnx.data").exists()
    alone = in_finished / "alone"
    alone.mkdir()
    shutil.copyfile(out / "student.onnx", alone / "student.onnx")
    pre = json.loads((out / "preprocess.json").read_text())
    assert pre["input_shape"] == [1, 8, 8] and pre["color"] == "L" and pre["resize"] is None
    assert pre["classes"] == [str(i) for i in range(10)] and len(pre["mean"]) == len(pre["std"]) == 1
    readme = (out / "README.md").read_text()
    assert "`student.onnx`: ONNX model with its weights inside" in readme and "the brief-trained ones" in readme
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

    session = onnxruntime.InferenceSession(str(alone / "student.onnx"))
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


def _export(study_file: Path, out: Path | str, *flags: str) -> int:
    return main(["export", str(study_file), "--trial", "0", "--out", str(out), *flags])


def _project(folder: Path) -> dict[str, bytes | None]:
    """The user's files under ``folder`` (the study, runs/, reports/) with their content (the database's only
    by name: SQLite rewrites its journal files on every read)."""
    return {str(p.relative_to(folder)): None if p.name.startswith("study.db") else p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] in ("study.yaml", "space.yaml", "runs", "reports")}


def test_force_never_replaces_the_project_or_anything_but_a_bundle(in_finished: Path, capsys) -> None:
    study_file = in_finished / "study.yaml"
    before = _project(in_finished)
    assert "runs/tiny/study.db" in before and any(k.startswith("runs/tiny/artifacts/students/") for k in before)
    # The working folder (which holds the study, runs/ and reports/) and any folder above it.
    for out in (".", str(in_finished), "..", "runs", "reports/tiny"):
        assert _export(study_file, out, "--force") == 2, out
        err = capsys.readouterr().err
        assert err.startswith("kdnas: error: --out ") and "--force never replaces this one" in err, err
    assert _project(in_finished) == before
    # A folder of the user's files, and a file.
    mine = in_finished / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert _export(study_file, mine, "--force") == 2
    assert "is not a kdnas bundle" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "keep me"
    (in_finished / "file.txt").write_text("keep me too")
    assert _export(study_file, in_finished / "file.txt", "--force") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (in_finished / "file.txt").read_text() == "keep me too"
    # A bundle: replaced with --force only; one the user added a file to, or trained fully, is kept.
    bundle = in_finished / "forced"
    assert _export(study_file, bundle) == 0
    assert _export(study_file, bundle) == 2 and "exists and is not empty" in capsys.readouterr().err
    (bundle / "stale.txt").write_text("")
    assert _export(study_file, bundle, "--force") == 2 and "holds files kdnas did not write (stale.txt)" in capsys.readouterr().err
    (bundle / "stale.txt").unlink()
    shutil.copyfile(bundle / "weights.pt", bundle / "weights_full.pt")
    assert _export(study_file, bundle, "--force") == 2 and "holds fully trained weights" in capsys.readouterr().err
    assert (bundle / "weights_full.pt").is_file()
    (bundle / "weights_full.pt").unlink()
    assert _export(study_file, bundle, "--force") == 0
    assert not [p for p in in_finished.iterdir() if p.name.startswith(".forced")]  # no temporary folder left
    assert _project(in_finished) == before and len(_study().trials) == 4


def test_an_exported_bundle_respects_the_umask(in_finished: Path) -> None:
    old = os.umask(0o022)
    try:
        assert _export(in_finished / "study.yaml", in_finished / "shared") == 0
    finally:
        os.umask(old)
    assert (in_finished / "shared").stat().st_mode & 0o777 == 0o755  # tempfile.mkdtemp alone makes it 0700
    assert (in_finished / "shared/guides").stat().st_mode & 0o777 == 0o755


def test_a_study_searched_before_preprocessing_was_recorded_exports_it_from_its_data(in_finished: Path) -> None:
    study = _study()
    recorded = study.user_attrs["preprocess"]
    study.set_user_attr("preprocess", None)  # as a study searched by an older kdnas has it
    try:
        assert _export(in_finished / "study.yaml", in_finished / "old") == 0
    finally:
        study.set_user_attr("preprocess", recorded)
    assert json.loads((in_finished / "old/preprocess.json").read_text()) == recorded
