"""Nothing a user hands kdnas is ever executed: a check over the package's own source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests._util import REPO

SOURCES = sorted((REPO / "kdnas").rglob("*.py"))


def _calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, ast.Call)]


def _name(call: ast.Call) -> str:
    f = call.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
        return f"{f.value.id}.{f.attr}"
    return ""


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unsafe_loading_or_evaluation(path: Path) -> None:
    for call in _calls(path):
        name, where = _name(call), f"{path.relative_to(REPO)}:{call.lineno}"
        assert name not in ("eval", "exec", "compile", "pickle.load", "pickle.loads"), f"{where}: {name}()"
        assert name not in ("yaml.load", "yaml.full_load", "yaml.unsafe_load", "yaml.load_all"), f"{where}: use yaml.safe_load"
        if name == "torch.load":
            kw = {k.arg: k.value for k in call.keywords}
            assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, \
                f"{where}: torch.load without weights_only=True"


def test_the_check_sees_the_one_torch_load() -> None:
    # So that the test above cannot pass by finding nothing.
    loads = [p for p in SOURCES for c in _calls(p) if _name(c) == "torch.load"]
    assert [p.name for p in loads] == ["_artifacts.py"]
