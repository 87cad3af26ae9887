"""House rules that keep the code base in shape: the data flows one way between the pipeline's
subpackages, the C runner's name tables are generated from the Python ones, and every
subpackage is in the distribution."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from eecompile.core.names import c_header

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "eecompile"
CALIBRATION = ROOT / "calibration"  # installed as eecompile.calibrate

# Which eecompile subpackages each one may import (the pipeline's direction:
# model -> export -> bundle -> runtime -> harness -> profile -> calibrate -> android).
ALLOWED = {
    "errors": set(), "util": {"errors"},
    "core": {"errors", "util"},
    "data": {"core", "errors", "util"},
    "model": {"core", "data", "errors", "util"},
    "bundle": {"core", "errors", "util"},
    "export": {"core", "data", "model", "bundle", "errors", "util"},
    "runtime": {"core", "bundle", "errors", "util"},
    "harness": {"core", "bundle", "errors", "util"},
    "android": {"core", "bundle", "runtime", "harness", "errors", "util"},
    "profile": {"core", "data", "bundle", "harness", "android", "errors", "util"},
    "calibrate": {"core", "data", "bundle", "runtime", "harness", "profile", "errors", "util"},
}
TOP = {"cli", "clilog", "report", "__init__", "__main__"}  # may import anything


def _imports(path: Path) -> set[str]:
    """eecompile subpackages a module imports, outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "eecompile" and len(parts) > 1:
                found.add(parts[1])
    return found


def _layer(path: Path) -> str:
    if path.is_relative_to(CALIBRATION):
        return "calibrate"
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


MODULES = sorted([str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")] +
                 [str(p.relative_to(ROOT)) for p in CALIBRATION.rglob("*.py")])


@pytest.mark.parametrize("module", MODULES)
def test_imports_follow_the_pipeline(module):
    path = ROOT / module
    layer = _layer(path)
    if layer in TOP:
        return
    assert layer in ALLOWED, f"{module}: new subpackage {layer!r}: give it a row in ALLOWED"
    bad = _imports(path) - ALLOWED[layer] - {layer}
    assert not bad, f"{module} ({layer}) imports {sorted(bad)}: the data must flow one way"


def test_c_name_tables_are_generated_from_python():
    assert (ROOT / "runtimes/c/src/ee_names.h").read_text() == c_header(), \
        "runtimes/c/src/ee_names.h is stale: run python3 -m eecompile.core.names"


def test_every_subpackage_is_in_the_distribution():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in PKG.rglob("__init__.py")}
    assert on_disk <= listed, f"pyproject.toml [tool.setuptools] packages lacks {sorted(on_disk - listed)}"
    assert cfg["package-dir"]["eecompile.calibrate"] == "calibration" and "eecompile.calibrate" in listed
