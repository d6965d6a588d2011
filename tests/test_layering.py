"""The layers of ``lss`` point one way: no import cycle between its modules, Ray only where the work is distributed,
and the data formats and metrics below the stages that use them.

Every module under ``platform/lss`` is parsed with ``ast`` (nothing is imported), and every import statement counts,
module-level or inside a function. An edge goes to the module an import names: ``from lss.a import b`` goes to
``lss.a.b`` when that is a module, and to the package ``lss.a`` (its ``__init__``) when ``b`` is a name defined there.
Importing ``lss.a.b`` also runs ``lss/a/__init__.py``: that is an edge too, except from inside ``lss.a``, where the
package is already being imported. So a submodule importing a sibling by its full path is fine, but a submodule that
takes names from its package's ``__init__``, which re-exports that submodule, is a cycle.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

from conftest import REPO_ROOT

SOURCE_ROOT = REPO_ROOT / "platform"
ROOT_PACKAGE = "lss"

# Packages that must not import Ray, directly or through any lss module they import (at any level).
NO_RAY = ("lss.data", "lss.anatomy", "lss.metrics", "lss.model", "lss.reporting", "lss.inference", "lss.evaluation",
          "lss.export")
# Lower layers and the stages above them that they must not import (directly or through another lss module).
BELOW = {
    "lss.data": ("lss.training", "lss.evaluation", "lss.serve", "lss.tuning"),
    "lss.metrics": ("lss.training", "lss.evaluation", "lss.serve", "lss.tuning"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    """Every lss module name -> its file."""
    return {_module_name(path): path for path in sorted((SOURCE_ROOT / ROOT_PACKAGE).rglob("*.py"))}


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """The absolute module of a ``from ... import`` (relative ones resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    is_package = _modules()[module].name == "__init__.py"
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


@cache
def _imports(module: str) -> tuple[frozenset[str], frozenset[str]]:
    """(lss modules imported, top-level names of the other modules imported) by one module, at any level."""
    modules = _modules()
    tree = ast.parse(modules[module].read_text(), filename=str(modules[module]))
    internal, external = set(), set()

    def add(name: str) -> None:
        if _within(name, ROOT_PACKAGE):
            # The longest prefix that is a module: `import lss.a.b` of a module, `lss.a.b.attr` never happens.
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                internal.add(name)
        elif name:
            external.add(name.split(".")[0])

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                add(submodule if submodule in modules else source)
    internal.discard(module)
    return frozenset(internal), frozenset(external)


def _packages_of(name: str) -> list[str]:
    """The packages Python imports before ``name``: "lss.a.b.c" -> ["lss.a", "lss.a.b"] (``lss`` itself is empty)."""
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(2, len(parts))]


def _graph() -> dict[str, frozenset[str]]:
    """module -> the lss modules importing it runs: the ones it names, and the ``__init__`` of their packages that
    are not already its own (a submodule importing a sibling does not run its package's ``__init__`` again)."""
    graph = {}
    for module in _modules():
        own = set(_packages_of(module)) | ({module} if _modules()[module].name == "__init__.py" else set())
        edges = set()
        for target in _imports(module)[0]:
            edges.update(p for p in _packages_of(target) if p not in own and p in _modules())
            edges.add(target)
        edges.discard(module)
        graph[module] = frozenset(edges)
    return graph


def _cycles(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan), as a closed path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(start: str) -> None:  # iterative Tarjan: no recursion limit on deep chains
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
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
                    components.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return [_a_cycle(graph, set(component), component[0]) for component in components]


def _a_cycle(graph: dict[str, frozenset[str]], members: set[str], start: str) -> list[str]:
    """The shortest path from ``start`` back to itself inside a strongly connected component."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if node != start else [start, start]
                if child not in parents:
                    parents[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")  # unreachable for a strongly connected component


def _reached(module: str, graph: dict[str, frozenset[str]]) -> dict[str, str]:
    """Every lss module that importing ``module`` may run, each mapped to the module that imports it."""
    via: dict[str, str] = {}
    todo = [module]
    while todo:
        node = todo.pop()
        for child in sorted(graph[node]):
            if child not in via and child != module:
                via[child] = node
                todo.append(child)
    return via


def _chain(module: str, target: str, via: dict[str, str]) -> str:
    path = [target]
    while path[-1] != module:
        path.append(via[path[-1]])
    return " -> ".join(reversed(path))


def test_the_source_tree_is_found():
    assert {"lss", "lss.anatomy", "lss.data.cases", "lss.preprocessing.pipeline"} <= set(_modules())


def test_there_is_no_import_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles between lss modules:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_a_cycle():
    # Not idle: a small graph with a cycle through a package __init__ and a dead end.
    graph = {"p": frozenset({"p.a"}), "p.a": frozenset({"q"}), "q": frozenset({"p"}), "r": frozenset({"p"})}
    assert _cycles(graph) == [["p", "p.a", "q", "p"]]
    assert _cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_imports_inside_functions_count():
    # Not idle: the preprocessing stage imports Ray inside ``_run_ray`` only, and the parser sees it.
    assert "ray" in _imports("lss.preprocessing.pipeline")[1]
    assert "lss.data.cases" in _graph()["lss.preprocessing.pipeline"]


@pytest.mark.parametrize("package", NO_RAY)
def test_no_ray_below_the_distributed_stages(package):
    graph = _graph()
    offenders = []
    for module in (m for m in graph if _within(m, package)):
        via = _reached(module, graph)
        for reached in [module, *via]:
            if "ray" in _imports(reached)[1]:
                offenders.append(module if reached == module else _chain(module, reached, via))
    assert not offenders, f"{package} imports ray:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package, above", sorted(BELOW.items()))
def test_lower_layers_do_not_import_the_stages_above(package, above):
    graph = _graph()
    offenders = []
    for module in (m for m in graph if _within(m, package)):
        via = _reached(module, graph)
        offenders += [_chain(module, r, via) for r in via if any(_within(r, stage) for stage in above)]
    assert not offenders, f"{package} imports {', '.join(above)}:\n" + "\n".join(sorted(offenders))
