"""The package's import graph has no circles (imports inside functions count: they run on first use)."""

from __future__ import annotations

import ast
import functools
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Circles other helpers remove in the same redesign; listed so that no new one can appear meanwhile. Each entry
# is the exact set of modules of one circle; this list is to be emptied, never extended.
KNOWN_CIRCLES: list[frozenset[str]] = []  # none: a new circle fails the test


def package_modules() -> dict[str, Path]:
    """Module name -> file, for every package pyproject maps to a folder (``tokenprune.rewrites`` -> rewrites/)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = config["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in roots.items():  # separate folders: rewrites/ is not inside tokenprune/
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            modules[".".join((package, *parts)).removesuffix(".__init__")] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports: relative imports resolved, ``from pkg import submodule`` included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = (f"{base}.{node.module}" if node.module else base) if node.level else node.module
            submodules = [f"{module}.{alias.name}" for alias in node.names]
            # ``from pkg import name``: the submodule when ``name`` is one, else the module that defines it.
            targets = [t for t in submodules if t in modules]
            targets += [module] if len(targets) < len(submodules) else []
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components with more than one module (the import circles)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@functools.cache
def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def test_the_scan_sees_the_packages_and_their_imports():
    graph = import_graph()
    assert {"tokenprune.api", "tokenprune.rewrites.hints", "tokenprune.plugins.registry"} <= set(graph)
    assert "tokenprune.plugins.registry" in graph["tokenprune.plugins.resolve"]  # from .registry import ...
    assert "tokenprune.rewrites.rope" in graph["tokenprune.plugins.resolve"]  # import tokenprune.rewrites.rope
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


def test_registries_are_leaves():
    graph = import_graph()
    for leaf in ("tokenprune.plugins.registry", "tokenprune.plugins.contracts"):
        assert graph[leaf] <= {"tokenprune.errors", "tokenprune.plugins.contracts"}, (leaf, graph[leaf])


def test_no_import_circles():
    circles = strongly_connected(import_graph())
    unexpected = [sorted(c) for c in circles if frozenset(c) not in KNOWN_CIRCLES]
    assert not unexpected, f"import circles: {unexpected}"
