"""`kdnas space show|sample`: every shipped space and study samples feasible, capacity-ordered candidates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdnas.cli import main
from kdnas.config import load_space, load_study
from kdnas.costs import count
from tests._util import REPO, shipped_study

SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))
STUDIES = sorted((REPO / "studies").glob("*.yaml"))


def _sample(path: Path, capsys, n: int = 12, extra: tuple[str, ...] = ()) -> list[dict]:
    assert main(["space", "sample", str(path), "-n", str(n), "--seed", "3", "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _check(rows: list[dict], space, teacher_params: int | None) -> None:
    for r in rows:
        lim = space.limits
        assert lim.max_params is None or r["params"] <= lim.max_params
        assert lim.max_macs is None or r["macs"] <= lim.max_macs
        sizes = [a["params"] for a in r["chain"]["assistants"]]
        if sizes:
            chain = ([teacher_params] if teacher_params else []) + sizes + [r["params"]]
            assert all(a > b for a, b in zip(chain, chain[1:])), f"not strictly decreasing: {chain}"


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_spaces_sample_feasible_ordered_candidates(path: Path, capsys) -> None:
    rows = _sample(path, capsys, extra=("--input", "1,28,28"))
    assert len(rows) == 12
    _check(rows, load_space(path), None)


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_shipped_studies_sample_feasible_ordered_candidates(path: Path, tmp_path: Path, capsys) -> None:
    path = shipped_study(path, tmp_path)
    cfg = load_study(path)
    rows = _sample(path, capsys)
    shape = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}.get(cfg.data.dataset, (1, 28, 28))
    teacher = count(cfg.teacher_spec, shape, 100 if cfg.data.dataset == "cifar100" else 10).params
    _check(rows, cfg.space, teacher)


def test_space_show_lists_domains_limits_and_size_range(capsys) -> None:
    assert main(["space", "show", str(REPO / "search_spaces/mixed_families.yaml"), "--input", "1,28,28"]) == 0
    out = capsys.readouterr().out
    assert "student.plain_cnn.channels" in out and "one of [16, 16], [16, 16, 32, 32]" in out
    assert "limits: max_params=100,000, max_macs=20,000,000" in out
    assert "resnet_cifar: 4,934 .. 151,966 params" in out  # depth 8 width 0.25 .. depth 20 width 0.75 on 1x28x28


def test_list_valued_choices_come_back_as_lists(capsys) -> None:
    rows = _sample(REPO / "search_spaces/mixed_families.yaml", capsys, n=30, extra=("--input", "1,28,28"))
    plain = [r for r in rows if r["student"]["family"] == "plain_cnn"]
    assert plain and all(isinstance(r["student"]["channels"], list) for r in plain)


def test_impossible_limits_are_a_clear_error(tmp_path: Path, capsys) -> None:
    space = tmp_path / "s.yaml"
    space.write_text("students: {resnet_cifar: {depth: 20}}\nmethods: {none: {}}\nlimits: {max_params: 10}\n")
    assert main(["space", "sample", str(space), "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert "only 0 of 2 candidates passed the limits" in err and "Traceback" not in err


def test_bad_space_file_is_exit_2(tmp_path: Path, capsys) -> None:
    space = tmp_path / "s.yaml"
    space.write_text("students: {resnet_cifar: {depth: 20}}\nmethods: {none: {}}\nchain: {max_assistants: -1}\nlimits: {max_params: many}\n")
    assert main(["space", "show", str(space)]) == 2
    err = capsys.readouterr().err
    assert "limits.max_params: expected an integer or null, got 'many'" in err
    assert "`0 <= min_assistants <= max_assistants` must hold" in err
