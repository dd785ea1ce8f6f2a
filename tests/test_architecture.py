"""Architecture guards: the layers stay layered, the core stays light, files stay readable.

The package is built in layers (``docs/DESIGN.md``); each module may import only from its own layer
or the ones below it:

====  =========================================  ==============================================
rank  packages                                   what lives there
====  =========================================  ==============================================
0     ``hierqdrant.core``                        pure math: hierarchy, Gaussians, builders, model
1     ``hierqdrant.store``, ``hierqdrant.vision`` Qdrant engines and search; images and networks
2     ``hierqdrant.evaluation``                  metrics, ranking, tuning, plots
3     ``hierqdrant.pipelines``                   ingest, demo
3     ``hierqdrant.reports``                     HTML reports, contact sheets, SVG figures
top   ``hierqdrant`` (``__init__``/``__main__``)  facades: lazy re-exports; the CLI entry point
top   ``hierqdrant_cli``                         the Typer front end
====  =========================================  ==============================================

Packages of the same rank are siblings and do not import each other (store and vision are
independent). Only ``hierqdrant/__main__.py`` reaches the CLI.

The import graph is read statically with :mod:`ast` (every ``import`` statement, also those inside
functions and under ``if TYPE_CHECKING:``), so a violation is found even on a code path no test runs.
Every failure names the offending ``file:line``.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Import name → source folder.
SOURCE_TREES = {"hierqdrant": ROOT / "hierqdrant", "hierqdrant_cli": ROOT / "hierqdrant_cli"}
MAX_LINES = 600

LAYER_RANKS = {
    "hierqdrant.core": 0,
    "hierqdrant.store": 1,
    "hierqdrant.vision": 1,
    "hierqdrant.evaluation": 2,
    "hierqdrant.pipelines": 3,
    "hierqdrant.reports": 3,
}
FACADES = {"hierqdrant", "hierqdrant.__main__"}
CLI_ENTRY_POINT = "hierqdrant.__main__"
CLI_PACKAGE = "hierqdrant_cli"

#: Third-party packages the core must not need: engines, deep learning, the command line.
HEAVY_DEPENDENCIES = ("qdrant_client", "qdrant_edge", "torch", "torchvision", "typer", "rich")
PUBLIC_NAMES = {
    "HierarchicalSearcher": "hierqdrant.store.search",
    "AsyncHierarchicalSearcher": "hierqdrant.store.async_search",
    "HierarchyModel": "hierqdrant.core.model",
    "connect": "hierqdrant.store.engines",
    "Hierarchy": "hierqdrant.core.hierarchy",
    "FeatureSet": "hierqdrant.core.features",
    "SearchHit": "hierqdrant.store.search",
    "HierqdrantError": "hierqdrant.core.errors",
}


# ------------------------------------------------------------------------------------------------
# reading the source tree


@dataclass(frozen=True)
class Import:
    """One module imported by one statement: ``importer`` → ``target`` at ``path:line``."""

    importer: str
    target: str
    path: Path
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        statement = _source_line(self.path, self.line)
        note = "  (type-checking only)" if self.type_only else ""
        return f"{self.path.relative_to(ROOT)}:{self.line}: {statement}{note}"


def _source_line(path: Path, line: int) -> str:
    return path.read_text(encoding="utf-8").splitlines()[line - 1].strip()


@cache
def source_modules() -> dict[str, Path]:
    """Every module of the package and the CLI: dotted name → file."""
    modules: dict[str, Path] = {}
    for top, folder in SOURCE_TREES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join([top, *parts])] = path
    return modules


def _is_type_checking_guard(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(tree: ast.AST) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement anywhere in ``tree`` (also inside functions), with its TYPE_CHECKING flag."""

    def walk(node: ast.AST, type_only: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, type_only
        if isinstance(node, ast.If) and _is_type_checking_guard(node):
            for statement in node.body:
                yield from walk(statement, True)
            for statement in node.orelse:
                yield from walk(statement, type_only)
            return
        for child in ast.iter_child_nodes(node):
            yield from walk(child, type_only)

    yield from walk(tree, False)


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from … import`` names, resolving ``from . import x`` and ``from ..a import b``."""
    if node.level == 0:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def parse_imports(module: str, path: Path, source: str, known: set[str] | dict[str, Path]) -> list[Import]:
    """The imports in ``source`` (the text of ``module`` at ``path``) that stay inside the project.

    ``from pkg import name`` counts as an import of ``pkg.name`` when that is one of the ``known``
    modules, else of ``pkg``. Imports of other distributions (numpy, torch, …) are left out.
    """
    found: list[Import] = []
    for node, type_only in _statements(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _absolute(module, path, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in dict.fromkeys(targets):
            if target.split(".")[0] in SOURCE_TREES:
                found.append(Import(module, target, path, node.lineno, type_only))
    return found


@cache
def imports_of(module: str) -> tuple[Import, ...]:
    path = source_modules()[module]
    return tuple(parse_imports(module, path, path.read_text(encoding="utf-8"), source_modules()))


def all_imports() -> list[Import]:
    return [imp for module in source_modules() for imp in imports_of(module)]


def _listing(lines: list[str]) -> str:
    return "\n  " + "\n  ".join(lines)


def test_import_parser_sees_every_kind_of_import() -> None:
    """Relative, function-local and TYPE_CHECKING imports are all seen and resolved."""
    source = textwrap.dedent(
        """
        import numpy as np
        import hierqdrant.core.model as model
        from . import backbones
        from .checkpoints import read_checkpoint
        from ..core.errors import InputError
        if TYPE_CHECKING:
            from hierqdrant.store.search import SearchHit
        def later():
            from hierqdrant_cli import main
        """
    )
    known = {
        "hierqdrant.core.model",
        "hierqdrant.core.errors",
        "hierqdrant.vision.backbones",
        "hierqdrant.vision.checkpoints",
        "hierqdrant.store.search",
    }
    path = ROOT / "hierqdrant" / "vision" / "__init__.py"
    found = [(i.target, i.line, i.type_only) for i in parse_imports("hierqdrant.vision", path, source, known)]
    assert found == [
        ("hierqdrant.core.model", 3, False),
        ("hierqdrant.vision.backbones", 4, False),
        ("hierqdrant.vision.checkpoints", 5, False),
        ("hierqdrant.core.errors", 6, False),
        ("hierqdrant.store.search", 8, True),
        ("hierqdrant_cli", 10, False),
    ]
    in_module = parse_imports("hierqdrant.vision.extract", path.with_name("extract.py"), "from . import x", known)
    assert [i.target for i in in_module] == ["hierqdrant.vision"]  # `x` is no module: the package itself


# ------------------------------------------------------------------------------------------------
# a. the core imports without engines, torch or the CLI

_BLOCKED_IMPORT_SCRIPT = """
import importlib, sys

BLOCKED = {blocked!r}

class RefuseHeavyDependencies:
    \"\"\"A meta path finder that makes the blocked top-level packages unimportable.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{{name}} is blocked by test_architecture", name=name)
        return None

already = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
assert not already, f"loaded before the blocker was installed: {{already}}"
sys.meta_path.insert(0, RefuseHeavyDependencies())

import hierqdrant
for module in {modules!r}:
    importlib.import_module(module)
for name in {core_names!r}:
    getattr(hierqdrant, name)
print("ok")
"""


def test_core_imports_without_heavy_dependencies() -> None:
    core = sorted(m for m in source_modules() if m == "hierqdrant.core" or m.startswith("hierqdrant.core."))
    assert "hierqdrant.core.model" in core, f"no core modules found under {ROOT / 'hierqdrant' / 'core'}"
    core_names = sorted(n for n, m in PUBLIC_NAMES.items() if m.startswith("hierqdrant.core."))
    script = _BLOCKED_IMPORT_SCRIPT.format(blocked=HEAVY_DEPENDENCIES, modules=core, core_names=core_names)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", (
        f"importing hierqdrant and {', '.join(core)} needs one of {', '.join(HEAVY_DEPENDENCIES)}; "
        f"the traceback names the file and line:\n{result.stderr}"
    )


# ------------------------------------------------------------------------------------------------
# b. no import circle


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, and modules importing themselves (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
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
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    modules = source_modules()
    edges = [imp for imp in all_imports() if imp.target in modules]
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in edges:
        graph[imp.importer].add(imp.target)
    problems = []
    for component in _cycles(graph):
        members = set(component)
        inside = [f"    {imp}" for imp in edges if imp.importer in members and imp.target in members]
        problems.append("\n".join([f"circle between {', '.join(component)}:", *inside]))
    assert not problems, "import circles (each with the imports between its modules):\n" + "\n".join(problems)


def test_cycle_finder_finds_circles() -> None:
    """The finder itself: a 3-circle, a self-import, and a diamond that is not a circle."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"f", "g"}, "f": {"h"}, "g": {"h"}, "h": set()}
    assert _cycles(graph) == [["a", "b", "c"], ["d"]]


# ------------------------------------------------------------------------------------------------
# c. layering


def layer_of(module: str) -> str | None:
    """The layer package a module belongs to (``hierqdrant.core``, …), the facade, the CLI, or None."""
    if module in FACADES:
        return module
    if module == CLI_PACKAGE or module.startswith(CLI_PACKAGE + "."):
        return CLI_PACKAGE
    for package in LAYER_RANKS:
        if module == package or module.startswith(package + "."):
            return package
    return None


def layering_violation(imp: Import) -> str | None:
    """Why ``imp`` breaks the layering, or None when it is allowed."""
    source, target = layer_of(imp.importer), layer_of(imp.target)
    if source is None:
        return None  # reported by test_every_module_has_a_layer
    if target == CLI_PACKAGE:
        if imp.importer == CLI_ENTRY_POINT or source == CLI_PACKAGE:
            return None
        return f"only {CLI_ENTRY_POINT} may import the CLI"
    if source in FACADES or source == CLI_PACKAGE:
        return None  # the top may import any layer
    if target in FACADES:
        return f"{source} imports the facade {target}; import the defining module instead"
    if target is None or target == source:
        return None
    if LAYER_RANKS[target] > LAYER_RANKS[source]:
        return f"{source} (layer {LAYER_RANKS[source]}) imports up into {target} (layer {LAYER_RANKS[target]})"
    if LAYER_RANKS[target] == LAYER_RANKS[source]:
        return f"{source} and {target} are sibling layers and must not import each other"
    return None


def test_every_module_has_a_layer() -> None:
    homeless = [str(path.relative_to(ROOT)) for m, path in source_modules().items() if layer_of(m) is None]
    assert not homeless, (
        "modules outside every layer (move them into a layer package or add it to LAYER_RANKS):"
        + _listing(homeless)
    )


def test_no_module_imports_a_higher_layer() -> None:
    problems = []
    for imp in all_imports():
        why = layering_violation(imp)
        if why is not None:
            problems.append(f"{imp}\n      {why}")
    assert not problems, "imports against the layering:" + _listing(problems)


@pytest.mark.parametrize(
    ("importer", "target", "allowed"),
    [
        ("hierqdrant.evaluation.metrics", "hierqdrant.core.model", True),
        ("hierqdrant.pipelines.ingest", "hierqdrant.vision.extract", True),
        ("hierqdrant.core.model", "hierqdrant.store.search", False),
        ("hierqdrant.store.search", "hierqdrant.vision.backbones", False),
        ("hierqdrant.vision.backbones", "hierqdrant.store.collection", False),
        ("hierqdrant.evaluation.tune", "hierqdrant.pipelines.ingest", False),
        ("hierqdrant.core.model", "hierqdrant", False),
        ("hierqdrant.store.search", "hierqdrant_cli.common", False),
        ("hierqdrant.__main__", "hierqdrant_cli", True),
        ("hierqdrant", "hierqdrant.store.search", True),
        ("hierqdrant_cli.query", "hierqdrant.pipelines.ingest", True),
    ],
)
def test_layering_rules(importer: str, target: str, allowed: bool) -> None:
    """The rules themselves, on made-up imports."""
    imp = Import(importer, target, ROOT / "hierqdrant" / "__init__.py", 1, False)
    assert (layering_violation(imp) is None) == allowed


# ------------------------------------------------------------------------------------------------
# d. file size


def test_no_source_file_over_the_line_limit() -> None:
    too_long = []
    for path in source_modules().values():
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_LINES:
            too_long.append(f"{path.relative_to(ROOT)}:{MAX_LINES + 1}: {n} lines (limit {MAX_LINES})")
    assert not too_long, f"source files over {MAX_LINES} lines; split them by concern:" + _listing(too_long)


# ------------------------------------------------------------------------------------------------
# e., f. the public surface


def test_public_names_import_from_the_package() -> None:
    import importlib

    import hierqdrant
    from hierqdrant import (  # noqa: F401  (the import itself is the test)
        FeatureSet,
        HierarchicalSearcher,
        Hierarchy,
        HierarchyModel,
        HierqdrantError,
        SearchHit,
        connect,
    )

    for name, module in PUBLIC_NAMES.items():
        assert name in hierqdrant.__all__, f"hierqdrant.__all__ lacks {name}"
        assert getattr(hierqdrant, name) is getattr(importlib.import_module(module), name), (
            f"hierqdrant.{name} is not {module}.{name}"
        )


def _command_names() -> list[str]:
    from hierqdrant_cli import app

    names = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]
    names += [g.name or "" for g in app.registered_groups]
    return [n for n in names if n]


def test_python_dash_m_lists_the_commands() -> None:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    result = subprocess.run(
        [sys.executable, "-m", "hierqdrant", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"python -m hierqdrant --help failed:\n{result.stderr}"
    help_text = result.stdout
    assert "Commands" in help_text, f"no command list in:\n{help_text}"
    commands_section = help_text[help_text.index("Commands") :]
    listed = set(re.findall(r"^[^\w\n]*(\w[\w-]*)\s{2,}", commands_section, flags=re.MULTILINE))
    expected = _command_names()
    assert {"ingest", "query", "info", "eval", "hierarchy"} <= set(expected)
    missing = [name for name in expected if name not in listed]
    assert not missing, f"python -m hierqdrant --help does not list {missing}:\n{textwrap.indent(help_text, '  ')}"
