"""The house's rule, read off the code: every import points down the layers, and no two modules
import each other (directly or round a circle).

Layers, top to bottom (README, Architecture): the skins (REST, gRPC, the worker process, the command
line) -> dispatch -> core -> engines, with the caches and black boxes beside them -> dsl,
transforms, compile -> ir -> ops. Below them all, small support modules that any layer may use and
that use nothing above them. Every ``derivd`` import is read from the source, function-level ones
included, so an import moved into a function to dodge a circle still counts; the two mutual
recursions inside one package that the design has are listed below with their reasons.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

from tests.support import python_ast

ROOT = pathlib.Path(__file__).resolve().parents[1] / "services" / "derivd"

SUPPORT = 0  # errors, settings, clocks, logging and metrics: usable from anywhere
LAYERS = {
    "derivd": SUPPORT, "errors": SUPPORT, "config": SUPPORT, "clock": SUPPORT, "allocator": SUPPORT,
    "breaker": SUPPORT, "observability": SUPPORT, "deadlines": SUPPORT,
    "ops": 1,
    "ir": 2,
    "dsl": 3, "transforms": 3, "compile": 3,
    "engines": 4, "cache": 4, "blackbox": 4,
    "core": 5,
    "dispatch": 6,
    "gateway": 7, "grpc_api": 7, "workers": 7, "auth": 7, "cli": 7, "commands": 7,
}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(path: pathlib.Path) -> set[str]:
    """The derivd modules (or names in them) that ``path`` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(python_ast(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.startswith("derivd"):  # `from package import module` counts as the module alone
                found.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("derivd"))
    return found


GRAPH = {name: {t for t in imports(path) if t in MODULES and t != name} for name, path in MODULES.items()}


def area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "derivd"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_import_points_down_the_layers(module):
    assert area(module) in LAYERS, f"{module}: place its package in tests/test_layers.py LAYERS"
    mine = LAYERS[area(module)]
    upward = sorted(t for t in imports(MODULES[module])
                    if area(t) != area(module) and LAYERS.get(area(t), SUPPORT) > mine)
    assert not upward, f"{module} (layer {mine}) imports from above it: {upward}"


# Mutual recursions inside one package, each through a function-level import: a loop body is a
# graph, serialised by the module that serialises graphs; a loop's body is lowered by the lowerer.
MUTUAL_RECURSIONS = [["derivd.dsl.loops", "derivd.dsl.lower"], ["derivd.ir.loop", "derivd.ir.serialize"]]


def test_no_import_circle_but_the_documented_recursions():
    """Tarjan's strongly connected components over the module graph: each is one module, or one of
    the documented mutual recursions inside a package."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert sorted(circles) == MUTUAL_RECURSIONS, f"import circles: {circles}"
