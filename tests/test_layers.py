"""Imports run one way: cli -> serve (the DICOM node) -> api (and the package's
``__init__``, which offers ``prokd.segment``) -> training -> evaluation -> distill ->
inference -> losses -> models -> data -> base modules (errors, io_atomic, yaml_files,
typed_mapping, devices, version, extras). A module may import from its own stage or any
stage below it, never from a stage above; and no import cycle exists anywhere, within a
stage too (imports inside functions count)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "prokd"
STAGES = [
    "cli",
    "serve",
    "api",
    "training",
    "evaluation",
    "distill",
    "inference",
    "losses",
    "models",
    "data",
]
BASE = {"errors", "io_atomic", "yaml_files", "typed_mapping", "devices", "version", "extras"}


def _stage(module: str) -> int:
    """Rank of a ``prokd.x.y`` module: 0 is the top (cli); base modules rank lowest."""
    if module == "prokd":  # the package's face: it offers the api
        return STAGES.index("api")
    first = module.split(".")[1]
    return len(STAGES) if first in BASE else STAGES.index(first)


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package).with_suffix("").parts
    return ".".join(["prokd", *parts]).removesuffix(".__init__")


def _is_module(name: str, package: Path) -> bool:
    inner = package.joinpath(*name.split(".")[1:])
    return inner.with_suffix(".py").is_file() or (inner / "__init__.py").is_file()


def _prokd_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    """Every ``prokd`` module a file imports, at the top or inside a function
    (``from prokd.data import io`` imports ``prokd.data.io``)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("prokd"):
            found.append(node.module)
            submodules = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [m for m in submodules if _is_module(m, package)]
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("prokd")]
    return found


def upward_imports(path: Path, package: Path = PACKAGE) -> list[str]:
    """The imports of a file from a stage above its own."""
    module = _module_name(path, package)
    return sorted({m for m in _prokd_imports(path, package) if _stage(m) < _stage(module)})


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    return {
        name: {m for m in _prokd_imports(path, package) if m in modules and m != name}
        for name, path in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_known_stage():
    for path in MODULES:
        _stage(_module_name(path, PACKAGE))  # raises ValueError outside the stages


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_point_down(path):
    upward = upward_imports(path)
    assert not upward, f"{_module_name(path, PACKAGE)} imports from a stage above it: {upward}"


def test_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    """The same checks, on a made-up package with one upward import and one cycle."""
    package = tmp_path / "prokd"
    (package / "inference").mkdir(parents=True)
    (package / "inference" / "predict.py").write_text("from prokd.training.config import X\n")
    (package / "data").mkdir()
    (package / "data" / "a.py").write_text("from prokd.data.b import f\n")
    (package / "data" / "b.py").write_text("def f():\n    from prokd.data import a\n")
    assert upward_imports(package / "inference" / "predict.py", package) == [
        "prokd.training.config"
    ]
    assert upward_imports(package / "data" / "a.py", package) == []
    assert cycles(import_graph(package)) == [["prokd.data.a", "prokd.data.b"]]
