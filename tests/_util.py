"""Helpers shared by the tests: tiny real study files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]

TINY_SPACE = """\
students:
  resnet_cifar:
    depth: 8
    width: {type: categorical, choices: [0.25, 0.5]}
methods:
  hinton:
    temperature: {type: float, low: 1.0, high: 4.0}
    alpha: {type: float, low: 0.5, high: 0.9}
"""

TINY_STUDY = """\
name: tiny
seed: 0
threads: {threads}
data: {data}
teacher:
  arch: {{family: resnet_cifar, depth: 8, width: {teacher_width}}}
  train: {{epochs: {teacher_epochs}, lr: 0.1}}
student:
  train: {{epochs: 1, lr: 0.1}}
search:
  space: space.yaml
  trials: 3
objectives: [accuracy, params, latency]
costs: {{latency: {latency}}}  # tests check that latency is measured, not its precision
"""
# A one-assistant chain between a width-0.25 student and the teacher (tests of chains, full training, resume).
CHAIN_SPACE = """\
students:
  resnet_cifar: {depth: 8, width: 0.25}
methods:
  hinton: {temperature: 4.0, alpha: 0.8}
chain:
  max_assistants: 1
  assistants:
    resnet_cifar: {depth: 8, width: 0.5}
"""

DIGITS = "{dataset: digits, val_fraction: 0.2, test_fraction: 0.2, seed: 0}"
QUICK_LATENCY = "{min_seconds: 0.05, max_seconds: 0.3}"


def write_tiny_study(folder: Path, teacher_width: float = 0.5, teacher_epochs: int = 2, extra: str = "",
                     threads: int = 1, data: str = DIGITS, latency: str = QUICK_LATENCY) -> Path:
    (folder / "space.yaml").write_text(TINY_SPACE)
    study = folder / "study.yaml"
    study.write_text(TINY_STUDY.format(teacher_width=teacher_width, teacher_epochs=teacher_epochs, threads=threads,
                                       data=data, latency=latency) + extra)
    return study



def stored_trials(name: str = "tiny") -> list:
    """The trials of study ``name`` in ``runs/<name>/study.db`` under the working folder (where kdnas puts it)."""
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///runs/{name}/study.db").trials


def searched_tiny_study(folder: Path, trials: int = 4) -> Path:
    """``folder`` holding a tiny study searched for ``trials`` trials (for module-scoped fixtures); returns it."""
    from kdnas.cli import main

    with working_dir(folder):
        study = write_tiny_study(folder)
        assert main(["search", str(study), "--trials", str(trials)]) == 0
    return folder


@contextlib.contextmanager
def working_dir(folder: Path) -> Iterator[Path]:
    """Run in ``folder`` (runs/ and reports/ land there), for module-scoped fixtures that monkeypatch cannot serve."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(old)


def shipped_study(path: Path, folder: Path) -> Path:
    """A shipped study file as a user who has its data runs it. Studies that read a local folder
    (``data.root``: CIFAR) get a copy in ``folder`` whose root holds tiny files in the real on-disk format."""
    import yaml

    from tests._datafiles import write_cifar

    data = yaml.safe_load(path.read_text()).get("data", {})
    if "root" not in data:
        return path
    writers = {"cifar10": lambda root: write_cifar(root), "cifar100": lambda root: write_cifar(root, hundred=True)}
    root = folder / "data"
    writers[data["dataset"]](root)
    text = path.read_text().replace(f"root: {data['root']}", f"root: {root}", 1)
    text = text.replace("space: ../search_spaces/", f"space: {REPO}/search_spaces/", 1)
    copy = folder / path.name
    copy.write_text(text)
    return copy
