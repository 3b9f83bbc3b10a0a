"""Bad input, table-driven: each mistake gives exit code 2, one line naming it, no traceback, nothing written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import pytest
import torch

from kdnas.cli import main
from kdnas.models import build, make_spec
from tests._util import write_tiny_study

TEACHER = {"family": "resnet_cifar", "depth": 8, "width": 0.5}


def edit(old: str, new: str, file: str = "study.yaml") -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / file
        text = path.read_text()
        assert old in text, f"the test's edit does not apply: {old!r}"
        path.write_text(text.replace(old, new))

    return apply


def checkpoint(make: Callable[[Path], None]) -> Callable[[Path], None]:
    """Replace the teacher's training by a checkpoint file that ``make`` writes."""
    def apply(folder: Path) -> None:
        make(folder / "teacher.pt")
        edit("  train: {epochs: 2, lr: 0.1}", "  checkpoint: teacher.pt")(folder)

    return apply


def _other_dataset(path: Path) -> None:  # the right architecture, trained for 3x32x32 images and 100 classes
    torch.save(build(make_spec(TEACHER), (3, 32, 32), 100).state_dict(), path)


def _code_in_pickle(path: Path) -> None:  # a pickle that would construct arbitrary objects
    torch.save({"state_dict": build(make_spec(TEACHER), (1, 8, 8), 10).state_dict(), "x": Path("x")}, path)


def _nothing(folder: Path) -> None:
    pass


# (id, edit of the tiny study folder, extra command-line arguments, the line the error must contain)
CASES: list[tuple[str, Callable[[Path], None], list[str], str]] = [
    ("malformed YAML", edit("seed: 0\n", "seed: [0\n"), [], r"study\.yaml: malformed YAML: line \d+, column \d+"),
    ("not a mapping", lambda f: (f / "study.yaml").write_text("- a\n- b\n"), [], r"study\.yaml: expected a mapping of study settings"),
    ("unknown key", edit("seed: 0\n", "seed: 0\ncolour: blue\n"), [], r"study\.yaml: colour: unknown key; valid keys: "),
    ("misspelt nested key", edit("lr: 0.1}\nsearch", "lr: 0.1, epoch: 3}\nsearch"), [], r"student\.train\.epoch: unknown key"),
    ("wrong type", edit("seed: 0\n", "seed: zero\n"), [], r"study\.yaml: seed: expected an integer, got 'zero'"),
    ("missing required key", edit("teacher:\n  arch: {family: resnet_cifar, depth: 8, width: 0.5}\n  train: {epochs: 2, lr: 0.1}\n", ""),
     [], r"study\.yaml: teacher: required key is missing"),
    ("empty range", edit("low: 1.0, high: 4.0", "low: 4.0, high: 1.0", "space.yaml"), [],
     r"space\.yaml: methods\.hinton\.temperature: empty range: `low <= high` must hold, but got low=4\.0, high=1\.0"),
    ("empty choices", edit("choices: [0.25, 0.5]", "choices: []", "space.yaml"), [],
     r"space\.yaml: students\.resnet_cifar\.width\.choices: expected a non-empty list"),
    ("unknown model family", edit("  resnet_cifar:\n", "  vgg:\n", "space.yaml"), [], r"space\.yaml: students\.vgg: unknown model family 'vgg'"),
    ("contradictory fractions", edit("val_fraction: 0.2, test_fraction: 0.2", "val_fraction: 0.5, test_fraction: 0.45"), [],
     r"study\.yaml: data: val_fraction \+ test_fraction must leave at least 10% for training"),
    ("unknown dataset", edit("dataset: digits", "dataset: digitz"), [], r"study\.yaml: data\.dataset: unknown dataset 'digitz'"),
    ("missing space file", edit("space: space.yaml", "space: nope.yaml"), [], r"nope\.yaml: search space file not found"),
    ("missing study file", _nothing, ["--", "elsewhere.yaml"], r"elsewhere\.yaml: study file not found"),
    ("missing checkpoint", edit("  train: {epochs: 2, lr: 0.1}", "  checkpoint: gone.pt"), [], r"teacher\.checkpoint: file not found: .*gone\.pt"),
    ("corrupt checkpoint", checkpoint(lambda p: p.write_bytes(b"\x80\x04 half a file")), [],
     r"teacher\.pt: cannot load checkpoint safely \(weights_only=True\): Unsupported operand"),
    ("checkpoint with objects", checkpoint(_code_in_pickle), [],
     r"teacher\.pt: cannot load checkpoint safely \(weights_only=True\): Unsupported global: GLOBAL pathlib\.PosixPath"),
    ("checkpoint for another dataset", checkpoint(_other_dataset), [],
     r"teacher\.checkpoint: .*teacher\.pt does not match teacher\.arch resnet_cifar\(depth=8,width=0\.5\) for input \(1, 8, 8\) "
     r"and 10 classes: 3 shapes differ: stem\.0\.weight \(file \(8, 3, 3, 3\), architecture \(8, 1, 3, 3\)\)"),
    ("unknown objective", edit("objectives: [accuracy, params, latency]", "objectives: [params, speed]"), [],
     r"objectives\[1\]: unknown objective 'speed'"),
    ("unreachable storage", _nothing, ["--storage", "postgresql://kd:s3cret@127.0.0.1:1/x"],
     r"^kdnas: error: cannot open storage postgresql://kd:\*\*\*@127\.0\.0\.1:1/x: .*Connection refused"),
    ("storage that is not a URL", _nothing, ["--storage", "kd:s3cret@db-host/studies"],
     r"storage: expected a database URL such as .*, got '\*\*\*@db-host/studies'"),
    ("unknown database", _nothing, ["--storage", "nosuchdb://host/x"], r"cannot open storage nosuchdb://host/x: "),
    ("storage under a file", _nothing, ["--storage", "sqlite:///space.yaml/study.db"], r"space\.yaml is not a writable folder"),
    ("zero workers", _nothing, ["--workers", "0"], r"^  - --workers: `workers >= 1` must hold, but got workers=0"),
    ("workers not a number", _nothing, ["--workers", "two"], r"^kdnas search: error: argument --workers: invalid int value: 'two' \(see kdnas search --help\)$"),
    ("heartbeat without grace", edit("seed: 0\n", "seed: 0\nparallel: {heartbeat_interval: 30, grace_period: 30}\n"), [],
     r"parallel\.grace_period: `grace_period >= 2 \* heartbeat_interval` must hold"),
    ("no outage allowed", edit("seed: 0\n", "seed: 0\nparallel: {storage_outage: 0}\n"), [],
     r"parallel\.storage_outage: `storage_outage > 0` \(seconds\) must hold, but got 0"),
    ("zero trials", _nothing, ["--trials", "0"], r"^  - --trials: `trials >= 1` must hold, but got trials=0"),
    ("negative timeout", _nothing, ["--timeout", "-5"], r"^  - --timeout: `timeout > 0` must hold"),
    ("bad device", _nothing, ["--device", "gpu"], r"^  - --device: expected cpu, cuda, cuda:N or mps, got 'gpu'"),
    ("bad precision", edit("seed: 0\n", "seed: 0\nprecision: fp8\n"), [],
     r"study\.yaml: precision: expected one of auto, fp32, bf16, fp16, got 'fp8'"),
    ("missing data root", edit("data: {dataset: digits, val_fraction: 0.2, test_fraction: 0.2, seed: 0}",
                               "data: {dataset: cifar10, root: no_such_folder}"), [],
     r"study\.yaml: data\.root: folder not found: .*no_such_folder \(set data\.download: true"),
    ("data root for embedded data", edit("seed: 0}", "seed: 0, root: .}"), [],
     r"data\.root: dataset 'digits' is embedded in kdnas and reads no folder; remove data\.root"),
    ("name of dots", edit("name: tiny", "name: .."), [],
     r"study\.yaml: name: must start with a letter or digit, then letters, digits, .*but got '\.\.'$"),
    ("misspelt domain type", edit("temperature: {type: float", "temperature: {tpye: float", "space.yaml"), [],
     r"space\.yaml: methods\.hinton\.temperature\.tpye: unknown key in a domain; valid keys: "),
    ("missing image folder", edit("data: {dataset: digits, val_fraction: 0.2, test_fraction: 0.2, seed: 0}",
                                  "data: {dataset: imagefolder, root: no_images}"), [],
     r"study\.yaml: data\.root: folder not found: \S*no_images$"),  # no hint to download the user's own images
    ("unknown MAC counter", edit("costs: {latency:", "costs: {counter: ptflops, latency:"), [],
     r"costs\.counter: expected one of 'flop_counter', 'fvcore', 'thop', got 'ptflops'"),
    ("background latency neither a boolean nor auto", edit("costs: {latency: {", "costs: {latency: {background: sometimes, "), [],
     r"costs\.latency\.background: expected .*'auto'.*got 'sometimes'"),
    ("score rewarding cost", edit("seed: 0\n", "seed: 0\nscore: {mode: score, targets: {params: 1000}, above: 0.5}\n"), [],
     r"score\.above: "),
]
if not torch.cuda.is_available():
    CASES.append(("absent device", _nothing, ["--device", "cuda"], r"device 'cuda' was asked for, but CUDA is not available"))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exit_2_one_line_nothing_written(case, tmp_path: Path, monkeypatch, capsys) -> None:
    _, apply, args, expected = case
    monkeypatch.chdir(tmp_path)
    study = write_tiny_study(tmp_path)
    apply(tmp_path)
    argv = ["search", *args] if "--" in args else ["search", str(study), *args]
    argv = [a for a in argv if a != "--"]
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    out = capsys.readouterr()
    assert code == 2, out
    assert "Traceback" not in out.err + out.out
    assert "s3cret" not in out.err + out.out, "a password leaked"
    matching = [line for line in out.err.splitlines() if re.search(expected, line)]
    assert len(matching) == 1, f"expected one line matching {expected!r} in:\n{out.err}"
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert all(line.startswith(("kdnas", "  - ")) for line in lines), f"one line per problem, nothing else:\n{out.err}"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists(), "bad input must write nothing"


def test_there_are_at_least_15_distinct_bad_inputs() -> None:
    assert len({c[0] for c in CASES}) >= 15 and len({c[3] for c in CASES}) == len(CASES)
