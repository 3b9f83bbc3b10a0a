"""Study and space files: everything is validated before anything runs, all problems in one message."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdnas.cli import main
from kdnas.config import load_space, load_study
from kdnas.core import ConfigError
from tests._util import REPO, shipped_study, write_tiny_study


@pytest.mark.parametrize("study", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_studies_are_valid(study: Path, tmp_path: Path) -> None:
    cfg = load_study(shipped_study(study, tmp_path))
    assert cfg.space.families


def test_a_shipped_study_without_its_data_says_where_to_put_it() -> None:
    with pytest.raises(ConfigError, match=r"cifar10.yaml: data.root: folder not found: .*data \(set data.download: true"):
        load_study(REPO / "studies/cifar10.yaml")


@pytest.mark.parametrize("space", sorted((REPO / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_are_valid(space: Path) -> None:
    assert load_space(space).families


def test_defaults_and_relative_paths(tiny_study: Path) -> None:
    cfg = load_study(tiny_study)
    assert cfg.name == "tiny"
    assert cfg.student.train.epochs == 1
    assert cfg.data.dataset == "digits"
    assert cfg.storage_url() == f"sqlite:///{tiny_study.parent / 'runs/tiny/study.db'}"  # beside the study file
    assert cfg.resolve(cfg.search.space) == tiny_study.parent / "space.yaml"
    assert cfg.teacher_spec.to_dict() == {"family": "resnet_cifar", "depth": 8, "width": 0.5}


def test_three_mistakes_reported_together_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path)
    text = study.read_text()
    text = text.replace("seed: 0\nthreads: 1", "seed: zero\nthreads: 1\ncolour: blue")  # wrong type + unknown key
    text = text.replace("space: space.yaml", "space: missing.yaml")  # missing file
    study.write_text(text)
    assert main(["validate", str(study)]) == 2
    err = capsys.readouterr().err
    assert "3 problems found" in err
    assert f"{study}: seed: expected an integer, got 'zero'" in err
    assert f"{study}: colour: unknown key" in err
    assert "missing.yaml: search space file not found" in err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "bad input must write nothing"


def test_search_with_bad_input_writes_nothing(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path)
    study.write_text(study.read_text().replace("epochs: 1", "epochs: 0"))
    assert main(["search", str(study)]) == 2
    assert "student.train.epochs: `epochs >= 1` must hold, but got epochs=0" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


def test_space_problems_name_the_space_file(tmp_path: Path) -> None:
    study = write_tiny_study(tmp_path)
    (tmp_path / "space.yaml").write_text(
        "students:\n"
        "  resnet_cifar:\n"
        "    depth: {type: int, low: 20, high: 8}\n"  # inverted range
        "    width: {type: categorical, choices: []}\n"  # empty choices
        "    colour: 3\n"  # unknown parameter
        "  vgg: {}\n"  # unknown family
        "methods:\n"
        "  hinton: {temperature: {type: float, low: -1.0, high: 2.0}, tau: 2}\n"  # bad value, unknown name
    )
    with pytest.raises(ConfigError) as info:
        load_study(study)
    msgs = [str(p) for p in info.value.problems]
    space = str(tmp_path / "space.yaml")
    assert all(m.startswith(space) for m in msgs), msgs
    text = "\n".join(msgs)
    assert "students.resnet_cifar.depth: empty range: `low <= high` must hold, but got low=20, high=8" in text
    assert "students.resnet_cifar.width.choices: expected a non-empty list" in text
    assert "students.resnet_cifar.colour: unknown parameter of resnet_cifar" in text
    assert "students.vgg: unknown model family 'vgg'; valid names: " in text
    assert "methods.hinton.temperature: `temperature > 0` must hold, but got temperature=-1.0" in text
    assert "methods.hinton.tau: unknown parameter of hinton; valid: alpha, temperature" in text


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text("name: x\nteacher: {arch: [\n")
    with pytest.raises(ConfigError, match=r"study.yaml: malformed YAML: line \d+"):
        load_study(study)


def test_invalid_teacher_arch_and_missing_checkpoint(tmp_path: Path) -> None:
    study = write_tiny_study(tmp_path)
    study.write_text(study.read_text().replace("depth: 8, width: 0.5}", "depth: 9, width: 0.5}\n  checkpoint: nope.pt"))
    with pytest.raises(ConfigError) as info:
        load_study(study)
    text = str(info.value)
    assert "teacher.arch.depth: must be 6n+2" in text
    assert "teacher.checkpoint: file not found" in text


def test_flags_override_the_file(tiny_study: Path) -> None:
    cfg = load_study(tiny_study, {"seed": 7, "search": {"trials": 9}})
    assert cfg.seed == 7 and cfg.search.trials == 9 and cfg.search.space == "space.yaml"


def test_yaml_is_never_executed(tmp_path: Path) -> None:
    study = write_tiny_study(tmp_path)
    study.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_study(study)


def test_assistant_method_is_validated(tmp_path: Path) -> None:
    study = write_tiny_study(tmp_path, extra="assistants:\n  method: {name: hinton, temperature: -1.0, colour: 2}\n  drop_rate: 1.5\n")
    with pytest.raises(ConfigError) as info:
        load_study(study)
    text = str(info.value)
    assert "assistants.method.temperature: `temperature > 0` must hold" in text
    assert "assistants.method.colour: unknown hyperparameter of hinton" in text
    assert "assistants.drop_rate: `0 <= drop_rate < 1` must hold, but got drop_rate=1.5" in text
