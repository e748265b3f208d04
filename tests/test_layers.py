"""The layers hold by test: a static walk of every import (module level, function level and
``TYPE_CHECKING`` alike) in ``geodistil/``, ``tasks/``, ``flows/`` and ``bench/``.

The rules (docs/architecture.md, "Layers"):

- no import cycle among these modules, however the cycle is hidden (a function-level import
  breaks a cycle at run time, not in the design);
- the library, ``geodistil/`` outside ``geodistil/cli/``, reaches neither ``prefect`` nor
  ``tasks``/``flows`` nor the application layer ``geodistil/cli/``, directly or through
  another module;
- ``tasks/`` never reaches ``flows/``;
- ``bench/`` uses the library, never the tests' helpers.

The walk knows no module by name: a module added tomorrow is held to the same rules.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WALKED = ("geodistil", "tasks", "flows", "bench")


@dataclass
class Graph:
    """Modules by dotted name; ``edges[a][b]`` is where ``a`` imports ``b`` (``path:line``)."""

    files: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, dict[str, str]] = field(default_factory=dict)

    def imports(self, module: str) -> dict[str, str]:
        return self.edges.get(module, {})


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The dotted name a (possibly relative) ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _targets(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterable[tuple[str, int]]:
    """Every name this module imports, as the known module it lands in, or as a top-level
    package name for anything outside the walked tree."""

    def land(name: str) -> str:
        parts = name.split(".")
        for n in range(len(parts), 0, -1):
            if ".".join(parts[:n]) in known:
                return ".".join(parts[:n])
        return parts[0]

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield land(alias.name), node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else land(base)), node.lineno


def build_graph(root: Path = ROOT, walked: Iterable[str] = WALKED) -> Graph:
    graph = Graph()
    for top in walked:
        for path in sorted((root / top).rglob("*.py")):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue  # not the project's: e.g. bench/.cache, the benchmarks' own virtual environments
            graph.files[module_name(path, root)] = path
    known = set(graph.files)
    for module, path in graph.files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = graph.edges.setdefault(module, {})
        for target, line in _targets(tree, module, path.name == "__init__.py", known):
            where = f"{path.relative_to(root)}:{line}"
            if target != module:
                edges.setdefault(target, where)
            # importing a.b.c from outside package a.b runs a/b/__init__.py first: that is an import too
            parts = target.split(".")
            for n in range(len(parts) - 1, 0, -1):
                package = ".".join(parts[:n])
                if package in known and not _in(module, package):
                    edges.setdefault(package, f"{where}, via {target}")
    return graph


def _chain(graph: Graph, path: list[str]) -> str:
    steps = [f"{a} -> {b} ({graph.imports(a)[b]})" for a, b in zip(path, path[1:])]
    return "\n    ".join(steps)


def find_cycles(graph: Graph) -> list[list[str]]:
    """One cycle per strongly connected component of known modules (Tarjan's algorithm)."""
    known = set(graph.files)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.imports(v):
            if w not in known:
                continue
            if w not in index:
                strongconnect(w)
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
                components.append(component)

    for v in sorted(known):
        if v not in index:
            strongconnect(v)

    cycles = []
    for component in components:
        start = min(component)
        inside = set(component)
        cycles.append(_shortest(graph, start, lambda m: m == start, inside, first_step=True))
    return cycles


def _shortest(graph: Graph, start: str, is_goal, allowed: set[str] | None = None,
              first_step: bool = False) -> list[str]:
    """The shortest import chain from ``start`` to a module ``is_goal`` accepts (BFS), or []."""
    parent: dict[str, str | None] = {} if first_step else {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in graph.imports(v):
            if w in parent or (allowed is not None and w not in allowed):
                continue
            parent[w] = v
            if is_goal(w):
                path = [w]
                while path[-1] != start or len(path) == 1:
                    path.append(parent[path[-1]])  # type: ignore[arg-type]
                return path[::-1]
            if w in graph.files:  # outside packages are ends, not ways through
                queue.append(w)
    return []


def _in(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def is_library(module: str) -> bool:
    return _in(module, "geodistil") and not _in(module, "geodistil.cli")


# (who, what it must never reach, why)
RULES = [
    (is_library, lambda m: _in(m, "prefect", "flows", "tasks", "geodistil.cli"),
     "the library (geodistil/ outside geodistil/cli/) reaches Prefect or the layers above it"),
    (lambda m: _in(m, "tasks"), lambda m: _in(m, "flows"), "tasks/ reaches flows/"),
    (lambda m: _in(m, "bench"), lambda m: _in(m, "tests"), "bench/ reaches the tests' helpers"),
]


def layer_violations(graph: Graph) -> list[str]:
    found = []
    for who, forbidden, why in RULES:
        for module in sorted(m for m in graph.files if who(m)):
            path = _shortest(graph, module, forbidden)
            # a chain through another module of the same layer is that module's own report
            if path and not any(who(m) for m in path[1:-1]):
                found.append(f"{why}:\n    {_chain(graph, path)}")
    return found


# --- the rules, on the real tree ---------------------------------------------------------------

GRAPH = build_graph()


def test_the_walk_sees_every_layer():
    # a walk that found nothing would pass every rule below
    assert {m.split(".")[0] for m in GRAPH.files} == set(WALKED)
    assert "prefect" in {t for m in GRAPH.files if _in(m, "flows") for t in GRAPH.imports(m)}


def test_there_is_no_import_cycle():
    cycles = find_cycles(GRAPH)
    assert not cycles, "import cycles:\n  " + "\n  ".join(_chain(GRAPH, c) for c in cycles)


def test_each_layer_imports_only_the_layers_below_it():
    found = layer_violations(GRAPH)
    assert not found, "\n".join(found)


# --- the walker itself, on small trees -----------------------------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> Graph:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return build_graph(tmp_path, {name.split("/")[0] for name in files})


def test_a_cycle_hidden_in_a_function_is_found_and_its_chain_named(tmp_path):
    graph = _tree(tmp_path, {
        "geodistil/__init__.py": "",
        "geodistil/config.py": "def fingerprint():\n    from geodistil.tools import VERSION\n",
        "geodistil/tools/__init__.py": "from geodistil.config import ToolsConfig\nVERSION = 1\n",
    })
    [cycle] = find_cycles(graph)
    assert cycle == ["geodistil.config", "geodistil.tools", "geodistil.config"]
    assert _chain(graph, cycle) == ("geodistil.config -> geodistil.tools (geodistil/config.py:2)\n"
                                    "    geodistil.tools -> geodistil.config (geodistil/tools/__init__.py:1)")


def test_relative_imports_and_submodules_land_on_the_module_meant(tmp_path):
    graph = _tree(tmp_path, {
        "geodistil/__init__.py": "",
        "geodistil/a.py": "from . import b\nfrom .c import thing\n",
        "geodistil/b.py": "",
        "geodistil/c.py": "from geodistil import a\n",
    })
    assert set(graph.imports("geodistil.a")) == {"geodistil.b", "geodistil.c"}
    assert find_cycles(graph) == [["geodistil.a", "geodistil.c", "geodistil.a"]]


def test_importing_a_module_of_a_package_runs_the_package_first(tmp_path):
    graph = _tree(tmp_path, {
        "geodistil/__init__.py": "",
        "geodistil/config.py": "def fingerprint():\n    from geodistil.tools.version import VERSION\n",
        "geodistil/tools/__init__.py": "from geodistil.config import ToolsConfig\n",
        "geodistil/tools/version.py": "VERSION = 1\n",
    })
    [cycle] = find_cycles(graph)
    assert "geodistil.config -> geodistil.tools (geodistil/config.py:2, via geodistil.tools.version)" in _chain(graph, cycle)


def test_a_package_importing_its_own_modules_is_no_cycle(tmp_path):
    graph = _tree(tmp_path, {
        "geodistil/__init__.py": "",
        "geodistil/tools/__init__.py": "from geodistil.tools.zoom import Zoom\n",
        "geodistil/tools/zoom.py": "from geodistil.tools.base import Tool\n",
        "geodistil/tools/base.py": "",
    })
    assert find_cycles(graph) == []


@pytest.mark.parametrize("files, expected", [
    ({"geodistil/store.py": "def f():\n    import prefect\n"}, "geodistil.store -> prefect"),
    ({"geodistil/store.py": "from geodistil.helper import x\n",
      "geodistil/helper.py": "from tasks.results import y\n", "tasks/results.py": ""},
     "geodistil.helper -> tasks.results (geodistil/helper.py:1)"),
    ({"tasks/generation.py": "from geodistil.cli.generate import run\n",
      "geodistil/cli/generate.py": "from flows.generation import run\n", "flows/generation.py": ""},
     "tasks.generation -> geodistil.cli.generate (tasks/generation.py:1)\n"
     "    geodistil.cli.generate -> flows.generation (geodistil/cli/generate.py:1)"),
    ({"geodistil/viewer/app.py": "from geodistil.cli import app\n", "geodistil/cli/__init__.py": "import flows\n",
      "flows/__init__.py": ""}, "geodistil.viewer.app -> geodistil.cli"),
    ({"tasks/generation.py": "from flows.generation import Options\n", "flows/generation.py": ""},
     "tasks.generation -> flows.generation"),
    ({"bench/bench_x.py": "from tests.helpers import free_port\n"}, "bench.bench_x -> tests"),
])
def test_a_layer_reaching_above_itself_is_reported_with_its_chain(tmp_path, files, expected):
    graph = _tree(tmp_path, {"geodistil/__init__.py": "", **files})
    found = layer_violations(graph)
    assert len(found) == 1 and expected in found[0]


def test_the_application_layer_may_reach_flows_and_prefect(tmp_path):
    graph = _tree(tmp_path, {
        "geodistil/__init__.py": "",
        "geodistil/cli/generate.py": "import prefect\nfrom flows.generation import run\n",
        "flows/generation.py": "from tasks.generation import t\nimport prefect\n",
        "tasks/generation.py": "from geodistil.store import TraceStore\n",
        "geodistil/store.py": "",
    })
    assert layer_violations(graph) == []
