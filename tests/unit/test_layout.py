"""The package's shape: no import cycles, every module imports on its own, none is too long."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "glmtrace"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Modules of the package ``name`` imports: at the top, inside functions and under
    ``if TYPE_CHECKING:`` (a cycle through annotations is a cycle for the reader too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else node.module
            target = target if node.module or not node.level else base
            found.update(t for t in [target] if t in modules)
            found.update(
                f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(name)
    return found


def test_no_import_cycles() -> None:
    """No module imports, even lazily or for annotations only, one that imports it back."""
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph[start])
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        return False

    # A package imports its own __init__ on the way to any submodule: not a cycle.
    cycles = sorted(
        (a, b)
        for a in graph
        for b in graph[a]
        if not b.startswith(a + ".") and not a.startswith(b + ".") and reaches(b, a)
    )
    assert cycles == []


def test_every_module_imports_on_its_own() -> None:
    """Each module imports first in a fresh interpreter, so no import order hides a cycle."""
    failed = {}
    for name in _modules():
        if name.endswith("__main__"):  # runs the command line when imported
            continue
        run = subprocess.run(
            [sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120
        )
        if run.returncode != 0:
            failed[name] = run.stderr.strip().splitlines()[-1]
    assert failed == {}


def test_no_module_is_over_400_lines() -> None:
    # A module past 400 lines holds more than one concept: split it (README, "Where things live").
    long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}
