"""The package's shape (issue 28): no import cycle, eager or lazy; a small loose core at the top; small
modules and functions.

The import graph is grimp's (import-linter's engine, which `lint-imports` checks the layers with): every
`import` in a module counts, also one inside a function; imports under TYPE_CHECKING do not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bertkit

grimp = pytest.importorskip("grimp", reason="grimp comes with import-linter (the test extra)")

PACKAGE = Path(bertkit.__file__).resolve().parent
MAX_LOOSE = 6  # modules at the top of the package besides __init__: the core
MAX_LINES = 400
MAX_FUNCTION_LINES = 80  # from `def` (decorators aside) to the last line of the body


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("bertkit", exclude_type_checking_imports=True, cache_dir=None)


def cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    g = grimp.ImportGraph()
    for name in ("p", "p.a", "p.b", "p.c"):
        g.add_module(name)
    g.add_import(importer="p.a", imported="p.b")
    g.add_import(importer="p.b", imported="p.a")
    g.add_import(importer="p.c", imported="p.a")
    assert cycles(g) == [["p.a", "p.b"]]


def test_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles (each a set of modules that reach each other):\n" + "\n".join(
        " <-> ".join(c) for c in found)


def test_the_top_of_the_package_holds_only_the_core():
    loose = sorted(p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= MAX_LOOSE, f"{len(loose)} loose modules at the top of bertkit: {', '.join(loose)}"


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_function_over_80_lines():
    long = {}
    for p in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                    and (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES):
                long[f"{p.relative_to(PACKAGE)}:{node.name}"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
