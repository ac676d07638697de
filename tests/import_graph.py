"""The import graph of src/cnnkit, read with ``ast`` (nothing is imported or run).

    python tests/import_graph.py            # every cnnkit-internal import, module-level first
    python tests/import_graph.py --upward   # only those that point from a lower layer to a higher one

Each import is an :class:`Import` edge from one cnnkit module to another, with its line and whether it runs when
the module is imported (``module_level``) or only when a function runs. ``from package import name`` points at
``package.name`` when that is a module, else at ``package``. Imports under ``if TYPE_CHECKING:`` never run and
are left out. tests/test_import_graph.py holds the layer table and the rules.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "cnnkit"


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # the importing module, e.g. "cnnkit.models.registry"
    target: str  # the imported cnnkit module, e.g. "cnnkit.weights"
    line: int
    module_level: bool  # False: inside a function, so it runs only when the function is called


def module_names(root: Path = SOURCE) -> dict[str, Path]:
    """Every module of the package by dotted name; a package is named by its ``__init__.py``."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if _is_package(path) else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, path: Path, known: set[str]):
        self.module, self.path, self.known = module, path, known
        self.depth = 0  # functions around the current node
        self.found: list[Import] = []

    def _add(self, target: str, line: int) -> None:
        while target and target not in self.known:  # "cnnkit.data.load_dataset" -> "cnnkit.data"
            target = target.rpartition(".")[0]
        if target.split(".")[0] == PACKAGE and target != self.module:
            self.found.append(Import(self.module, target, line, self.depth == 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _absolute(self.module, self.path, node)
        for alias in node.names:
            self._add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.known else base, node.lineno)

    def _function(self, node) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)


def imports(root: Path = SOURCE) -> list[Import]:
    """Every import from one cnnkit module of another, module-level ones first, then by module and line."""
    names = module_names(root)
    found: list[Import] = []
    for module, path in names.items():
        collector = _Collector(module, path, set(names))
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        found += collector.found
    return sorted(set(found), key=lambda i: (not i.module_level, i.source, i.line, i.target))


def cycles(edges: list[Import]) -> list[list[str]]:
    """The import circles among ``edges``: each strongly connected group of two or more modules (or one that
    imports itself), found with Tarjan's algorithm."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the ~200 modules
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph[node]:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_import_graph import upward_imports

    shown = upward_imports(imports()) if "--upward" in sys.argv else imports()
    for edge in shown:
        where = "module" if edge.module_level else "function"
        print(f"{edge.source}:{edge.line} -> {edge.target} ({where})")
