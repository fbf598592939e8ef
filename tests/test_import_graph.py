"""The import graph between trex's packages: no benchmark below, no circles, the layers of the design.

Read statically with :mod:`ast` (nothing is imported). Every import counts: at module level,
inside a function (lazy), under ``TYPE_CHECKING``, and modules named by a string that is a
whole module reference (``"trex.commands.log_cmds:sql"`` in the lazy command table,
``"trex.search.views"`` handed to ``importlib.import_module``).

A *unit* is one of trex's subpackages (``trex.search``), one top-level module
(``trex.conductor``), the package's face (``trex``, its ``__init__``) or ``ftbench``.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The layers of DESIGN.md's package table, top to bottom: a unit imports units of its own row
# or of rows below it, never above. Top-level modules stand in the row whose target package
# holds what they hold today.
LAYERS: list[tuple[str, ...]] = [
    ("ftbench",),                                   # the benchmark, on top of trex
    ("trex",),                                      # the public API (trex/__init__.py): a face over all below
    ("trex.commands", "trex.cli"),                  # every CLI command; `trex` itself
    ("trex.actors", "trex.conductor"),              # the two drivers: Ray shells and the in-process one
    ("trex.orchestrate",),                          # the pure rules of a search loop, shared by both
    ("trex.propose", "trex.insights"),  # trex/propose/: the search space, proposers, the Researcher; the distiller
    ("trex.train", "trex.evaluate", "trex.llm",     # the Executor's worker, the Evaluator, LLM backends,
     "trex.plan", "trex.recipe"),                   # and what the Executor trains: the plan and its data recipe
    ("trex.tasks",),                                # what a task is, the registry, data preparation, metrics
    ("trex.search",),                               # the tree projection, policies, replay, fork
    ("trex.events", "trex.artifacts"),              # the ground: the event log and the content-addressed store
]

# Edges that break the rules today, each with why it is still there. The tests fail on any edge
# not listed here, and on a listed edge that is gone (strike it then).
# Empty today: keep it so, or name the edge and why here.
ALLOWED: dict[tuple[str, str], str] = {}

_MODULE_REF = re.compile(r"(trex|ftbench)(\.[A-Za-z_]\w*)+(:[A-Za-z_]\w*)?")
_MODULE_PREFIX = re.compile(r"(trex|ftbench)(\.[A-Za-z_]\w*)*\.")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "ftbench":
        return "ftbench"
    if parts[0] != "trex":
        return None
    return "trex" if len(parts) == 1 else f"trex.{parts[1]}"


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".") if is_package else module.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        if mod in ("trex", ""):  # `from trex import cli`: the names may be modules
            return [f"{mod}.{a.name}".lstrip(".") for a in node.names]
        return [mod]
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_REF.fullmatch(node.value):
        name = node.value.partition(":")[0]
        return [name] if _is_module(name) else []  # not a marker such as "trex.export.v1"
    if (isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant)
            and isinstance(node.values[0].value, str) and _MODULE_PREFIX.fullmatch(node.values[0].value)):
        name = node.values[0].value.rstrip(".")  # f"trex.search.{mod}"
        return [name] if _is_module(name) else []
    return []


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) -> where: ``path:line -> module``."""
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    files = sorted((ROOT / "trex").rglob("*.py")) + sorted((ROOT / "ftbench").rglob("*.py"))
    assert len(files) > 50, files
    for path in files:
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            for target in _targets(node, module, path.name == "__init__.py"):
                a, b = unit(module), unit(target)
                if a and b and a != b:
                    edges[(a, b)].append(f"{path.relative_to(ROOT)}:{node.lineno} -> {target}")
    return dict(edges)


EDGES = import_edges()
RANK = {u: i for i, row in enumerate(LAYERS) for u in row}


def _where(edge) -> str:
    sites = EDGES[edge]
    return f"{edge[0]} -> {edge[1]} ({sites[0]}{f' and {len(sites) - 1} more' if len(sites) > 1 else ''})"


def test_nothing_under_trex_imports_ftbench():
    bad = [_where(e) for e in EDGES if e[1] == "ftbench" and e[0] != "ftbench"]
    assert not bad, "trex must work with no benchmark installed:\n" + "\n".join(bad)


def test_every_unit_has_a_layer():
    units = {u for e in EDGES for u in e}
    units |= {unit(_module_name(p)) for p in (ROOT / "trex").iterdir()
              if (p.suffix == ".py" or (p / "__init__.py").exists()) and not p.name.startswith("__")}
    missing = sorted(units - set(RANK))
    assert not missing, f"place these in LAYERS (the rows of DESIGN.md's package table): {missing}"


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (depth-first, colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_no_cycles_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in EDGES:
        if (a, b) not in ALLOWED:
            graph[a].add(b)
    cycle = _cycle(graph)
    assert cycle is None, ("import cycle " + " -> ".join(cycle) + ":\n"
                           + "\n".join(_where(e) for e in zip(cycle, cycle[1:])))


def test_lower_layers_never_import_higher_ones():
    up = [_where(e) for e in sorted(EDGES) if e not in ALLOWED and e[0] in RANK and e[1] in RANK
          and RANK[e[1]] < RANK[e[0]]]
    assert not up, "imports that run up DESIGN.md's layers:\n" + "\n".join(up)


def test_allowlist_is_current():
    gone = [f"{a} -> {b}" for a, b in ALLOWED if (a, b) not in EDGES]
    assert not gone, f"these allowed edges are gone; strike them from ALLOWED: {gone}"


def test_the_reader_sees_lazy_and_string_imports():
    """The graph is only as good as its reader: a function-level import and a module named by a
    string both count."""
    assert any("trex/commands/search_cmds.py" in s for s in EDGES[("trex.commands", "trex.search")])
    assert any("trex/cli.py" in s for s in EDGES[("trex.cli", "trex.commands")])  # the lazy command table
    src = "def f():\n    from ..search import replay\n    import ftbench.tasks\n"
    found = [t for n in ast.walk(ast.parse(src)) for t in _targets(n, "trex.events.x", False)]
    assert found == ["trex.search", "ftbench.tasks"]
