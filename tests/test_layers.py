"""Imports run one way: cli -> api -> training -> evaluation -> distill -> inference -> losses ->
models -> data -> base modules (errors, io_atomic, yaml_files, devices). A module may import
from its own stage or any stage below it, never from a stage above."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "prokd"
STAGES = [
    "cli",
    "api",
    "training",
    "evaluation",
    "distill",
    "inference",
    "losses",
    "models",
    "data",
]
BASE = {"errors", "io_atomic", "yaml_files", "devices", "__init__"}


def _stage(module: str) -> int:
    """Rank of a ``prokd.x.y`` module: 0 is the top (cli); base modules rank lowest."""
    first = module.split(".")[1] if "." in module else "__init__"
    return len(STAGES) if first in BASE else STAGES.index(first)


def _prokd_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prokd"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("prokd")]
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_known_stage():
    for path in MODULES:
        module = "prokd." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        _stage(module)  # raises ValueError for a module outside the stages


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_point_down(path):
    module = "prokd." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    upward = [m for m in _prokd_imports(path) if m != "prokd" and _stage(m) < _stage(module)]
    assert not upward, f"{module} imports from a stage above it: {upward}"


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from prokd.training.config import Config\n")
    assert _stage(_prokd_imports(bad)[0]) < _stage("prokd.inference.predict")
