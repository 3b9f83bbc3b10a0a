"""`kdnas validate` finds what a search would meet only later: unreadable images (all of them at once), fewer
than two classes, a teacher checkpoint that is no checkpoint or another network's, a teacher at chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kdnas.cli import main
from kdnas.core import KdnasError
from kdnas.models import build, make_spec
from tests._datafiles import write_cifar, write_imagefolder
from tests._util import write_tiny_study

IMAGES = "{dataset: imagefolder, root: pets, val_fraction: 0.25, test_fraction: 0.25}"
TEACHER = make_spec({"family": "resnet_cifar", "depth": 8, "width": 0.5})  # the tiny study's teacher.arch


def validate(study: Path, capsys) -> tuple[int, str]:
    code = main(["validate", str(study)])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def with_checkpoint(folder: Path, write) -> Path:
    """The tiny study with its teacher loaded from ``folder/teacher.pt``, which ``write(path)`` writes."""
    write(folder / "teacher.pt")
    study = write_tiny_study(folder)
    study.write_text(study.read_text().replace("  train: {epochs: 2, lr: 0.1}", "  checkpoint: teacher.pt"))
    return study


def test_validate_names_every_unreadable_image_at_once(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    write_imagefolder(tmp_path / "pets", per_class=6)
    bad = [tmp_path / "pets/cat/notes.png", tmp_path / "pets/dog/half.png", tmp_path / "pets/owl/empty.jpg"]
    bad[0].write_text("not an image")
    png = (tmp_path / "pets/dog/000.png").read_bytes()
    bad[1].write_bytes(png[: len(png) // 2])  # a copy cut short: its header reads, its data does not
    bad[2].write_bytes(b"")
    study = write_tiny_study(tmp_path, data=IMAGES)
    code, err = validate(study, capsys)
    assert code == 2
    for path in bad:
        assert sum(f"{study}: data.root: cannot read image {path}: " in line for line in err.splitlines()) == 1, err
    assert "3 problems found" in err and not (tmp_path / "runs").exists()


def test_validate_lists_images_of_another_size_unless_resized(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    write_imagefolder(tmp_path / "pets", per_class=4, sizes=((20, 16), (20, 16), (8, 8), (20, 16)))
    study = write_tiny_study(tmp_path, data=IMAGES)
    code, err = validate(study, capsys)
    assert code == 2 and "data.resize: 3 images are not 20x16 like " in err and "owl/002.png (8x8)" in err
    study.write_text(study.read_text().replace("root: pets,", "root: pets, resize: 12,"))
    assert validate(study, capsys) == (0, "")


def test_one_class_is_an_error_in_validate_and_when_a_search_loads_it(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    write_imagefolder(tmp_path / "pets", per_class=12, classes=("cat",))
    study = write_tiny_study(tmp_path, data=IMAGES)
    code, err = validate(study, capsys)
    assert code == 2 and "holds 1 class folder; a classifier needs at least two" in err
    # A search does not train a teacher (to 100 %) and a front of meaningless trials: it stops at load time.
    assert main(["search", str(study), "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert f"{study}: data.root: {tmp_path / 'pets'} holds 1 class; a classifier needs at least two" in err
    assert "Traceback" not in err


def test_one_class_in_a_torchvision_set_is_an_error_in_validate_and_at_load(tmp_path: Path, capsys) -> None:
    import pickle

    from kdnas.data import DataConfig, load_split

    write_cifar(tmp_path / "data", hundred=True)
    train = tmp_path / "data/cifar-100-python/train"
    entry = pickle.loads(train.read_bytes())
    train.write_bytes(pickle.dumps({**entry, "fine_labels": [3] * len(entry["fine_labels"])}, protocol=2))
    study = write_tiny_study(tmp_path, data="{dataset: cifar100, root: data}")
    code, err = validate(study, capsys)
    assert code == 2 and f"{study}: data.root: {tmp_path / 'data'} holds 1 class; a classifier needs at least two" in err
    with pytest.raises(KdnasError, match="holds 1 class; a classifier needs at least two"):
        load_split(DataConfig("cifar100", root=str(tmp_path / "data")))


def test_a_text_file_as_teacher_checkpoint_is_one_short_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study = with_checkpoint(tmp_path, lambda p: p.write_text("epochs: 30\nlr: 0.1\n"))
    code, err = validate(study, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and len(lines[0]) < 300, err
    assert lines[0].startswith(f"kdnas: error: {study}: teacher.checkpoint: {tmp_path / 'teacher.pt'} is not a "
                               f"PyTorch checkpoint")


def test_a_whole_pickled_model_as_checkpoint_says_to_save_its_state_dict(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study = with_checkpoint(tmp_path, lambda p: torch.save(build(TEACHER, (1, 8, 8), 10), p))
    code, err = validate(study, capsys)
    assert code == 2 and f"{study}: teacher.checkpoint: " in err and "Unsupported global" in err
    assert "torch.save(model.state_dict(), path)" in err


def test_a_checkpoint_of_another_network_is_named_in_a_few_keys(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    deeper = make_spec({"family": "resnet_cifar", "depth": 14, "width": 0.5})
    study = with_checkpoint(tmp_path, lambda p: torch.save(build(deeper, (1, 8, 8), 10).state_dict(), p))
    code, err = validate(study, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and len(lines[0]) < 500, err  # PyTorch's own message lists every key
    assert ("does not match teacher.arch resnet_cifar(depth=8,width=0.5) for input (1, 8, 8) and 10 classes: "
            "36 unexpected keys: stages.0.1.conv1.weight, ") in lines[0] and "and 33 more" in lines[0]


def _zeros(path: Path) -> None:  # every weight zero: constant logits, one class predicted for every image
    torch.save({k: torch.zeros_like(v) for k, v in build(TEACHER, (1, 8, 8), 10).state_dict().items()}, path)


def test_a_teacher_at_chance_is_a_warning_in_validate_and_in_search(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    study = with_checkpoint(tmp_path, _zeros)
    code = main(["validate", str(study)])
    out = capsys.readouterr()
    assert code == 0 and ": ok (study 'tiny'" in out.out
    warning = [line for line in out.err.splitlines() if line.startswith("warning: the teacher's validation accuracy")]
    assert len(warning) == 1 and "near chance (10.0% for 10 classes)" in warning[0], out.err
    assert main(["search", str(study), "--trials", "1"]) == 0
    assert warning[0] in capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("accuracy, classes, warned", [(0.1, 10, True), (0.18, 10, True), (0.2, 10, False),
                                                       (0.5, 2, True), (0.6, 2, False), (0.12, 100, False)])
def test_chance_means_within_a_tenth_of_the_way_to_perfect(accuracy: float, classes: int, warned: bool) -> None:
    from kdnas.study._teacher_checks import chance_warning

    assert (chance_warning(accuracy, classes) is not None) == warned


def test_an_unreadable_image_in_a_streamed_set_is_one_line_naming_it(tmp_path: Path) -> None:
    from kdnas.data import DATASETS, LoaderSource, Location

    write_imagefolder(tmp_path, per_class=4)
    bad = tmp_path / "dog/001.png"
    bad.write_text("damaged")
    raw = DATASETS.get("imagefolder").load(Location(tmp_path))
    stream = LoaderSource(raw.train, np.arange(len(raw.train_y)), torch.from_numpy(raw.train_y), torch.zeros(1, 3, 1, 1),
                          torch.ones(1, 3, 1, 1), workers=1)  # read in a DataLoader worker process
    with pytest.raises(KdnasError) as err:
        for _ in stream.batches(4):
            pass
    assert str(err.value).startswith(f"cannot read image {bad}: ") and "\n" not in str(err.value)


SPACE_WITH_EVERY_KIND_OF_PROBLEM = """\
students:
  resnet_cifar:
    depth: {type: categorical, choices: [8, 9], tpye: int}
methods:
  hinton:
    temperature: {type: float, low: 4.0, high: 1.0}
chain:
  min_assistants: 3
  max_assistants: 1
  modes: [takd, fitnet]
  assistants:
    resnet_cifar: {depth: 9}
limits: {max_params: 0, max_macs: lots}
"""


def test_every_problem_of_a_space_file_is_listed_at_once(tmp_path: Path, capsys) -> None:
    study = write_tiny_study(tmp_path)
    (tmp_path / "space.yaml").write_text(SPACE_WITH_EVERY_KIND_OF_PROBLEM)
    code, err = validate(study, capsys)
    space = tmp_path / "space.yaml"
    expected = ["students.resnet_cifar.depth.tpye: unknown key", "students.resnet_cifar.depth: must be 6n+2",
                "methods.hinton.temperature: empty range", "chain.modes[1]: expected one of 'takd', 'dgkd'",
                "chain: `0 <= min_assistants <= max_assistants` must hold, but got min_assistants=3, max_assistants=1",
                "chain.assistants.resnet_cifar.depth: must be 6n+2", "limits.max_macs: expected an integer",
                "limits.max_params: `max_params >= 1` must hold"]
    assert code == 2 and f"{len(expected)} problems found" in err, err
    for message in expected:
        assert f"  - {space}: {message}" in err, message


def test_a_rule_is_not_judged_on_a_default_the_user_did_not_write(tmp_path: Path, capsys) -> None:
    study = write_tiny_study(tmp_path)
    with open(tmp_path / "space.yaml", "a") as f:
        f.write("chain: {min_assistants: 3, max_assistants: two}\n")  # max_assistants' default is 1
    code, err = validate(study, capsys)
    assert code == 2 and "1 problem found" in err and "chain.max_assistants: expected an integer, got 'two'" in err
