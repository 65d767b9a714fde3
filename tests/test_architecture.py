"""The package's layout is its architecture (docs/architecture.md): no import circles, the root holds only its face.

The imports are read from the source with ``ast`` (module-level and function-local ones alike, since a circle through a
function-local import still ties two rooms together), so the test needs no import of the package itself.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cvx2_backbone"
FACE = {"__init__.py", "version.py", "registry.py"}


def module_name(path: Path) -> tuple[str, bool]:
    """Dotted module name of a source file, and whether it is a package's ``__init__``."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def own_imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in the file (``from a.b import c`` counts ``a.b.c`` where
    that is a module, else ``a.b``); relative imports are resolved."""
    name, is_package = module_name(path)
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            candidates = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in modules:
                candidate = candidate.rpartition(".")[0]
            # a module's own package is imported before it anyway: that is no arrow
            if candidate and candidate != name and not name.startswith(candidate + "."):
                targets.add(candidate)
    return targets


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path)[0] for path in files}
    return {module_name(path)[0]: own_imports(path, modules) for path in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_reports_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_relative_and_function_local_imports_are_read(tmp_path, monkeypatch):
    package = tmp_path / "cvx2_backbone"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from . import b\n")
    (package / "sub" / "b.py").write_text("def f():\n    from ..sub.a import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    assert find_cycle(import_graph()) == ["cvx2_backbone.sub.a", "cvx2_backbone.sub.b", "cvx2_backbone.sub.a"]


def test_the_package_has_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_root_holds_only_the_face_modules():
    root_modules = {path.name for path in PACKAGE.glob("*.py")}
    assert root_modules == FACE, f"modules at the package root besides {sorted(FACE)}: {sorted(root_modules - FACE)}"


def test_function_local_imports_of_the_package_only_in_the_command_line():
    """Outside ``cli/`` (whose commands import their rooms on use, so ``cvx2 --help`` needs no torch), every room
    imports the package's modules at the top, where the routes can be read."""
    local = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                local += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}" for node in ast.walk(function)
                          if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(
                              "cvx2_backbone"))]
    assert not local, f"function-local imports of the package's own modules: {local}"


def test_no_circle_between_rooms():
    """The rooms (the root's modules and folders) import one another one way only: docs/architecture.md's order."""
    def room(module: str) -> str:
        return module.split(".")[1] if "." in module else "__init__"

    rooms: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        rooms.setdefault(room(module), set()).update(room(t) for t in targets if room(t) != room(module))
    cycle = find_cycle(rooms)
    assert cycle is None, "rooms importing each other: " + " -> ".join(cycle)
