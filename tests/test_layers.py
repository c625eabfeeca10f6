"""The package's layering rules, checked by parsing the source with :mod:`ast` (no imports).

The folders are the layers, bottom to top (:data:`LAYERS`): the base (``errors``, ``version``,
``versions``, ``extras``,
``config``, ``storage``, ``artifacts``, ``records``), ``selector/`` (torch only), ``gate/`` (the
gate's models and decision, no Ray), ``runtime/`` (Ray), ``steps/`` and ``feast/`` side by side
(the steps of a run over its run dir), ``report/``, the ``pipeline`` hub and the ``demo``, and
``cli/`` on top.

* **No import cycles** between ``cae_ray`` modules. A cycle makes import order matter and
  hides real dependencies; function-level imports count (they run when the function does),
  imports under ``if TYPE_CHECKING:`` do not (they never run).
* **Imports go down the layers**: a module imports its own folder and the layers below it,
  never a layer above nor a sibling of its own layer (``gate/`` and ``feast/`` know nothing of
  each other). So nothing below imports ``cli/`` or the pipeline.
* **``selector/`` and ``gate/`` stay free of Ray and Feast**: they import neither, at any level
  of a module, directly or through the ``cae_ray`` modules they import, so the estimator and the
  gate's models work (and are tested) without a cluster; the gate's gradient-boosted trees on
  Ray live in ``runtime/`` (:mod:`cae_ray.runtime.xgboost`), and the flow that chooses between
  them in ``steps/``.
* **Only the CLI imports the pipeline hub** (``cae_ray.pipeline``): it wires every step
  together. The adapters live in ``pipelines/`` at the repo root, outside the package, and are
  not parsed here. The package's own ``__init__`` is the one other importer: its lazy
  ``__getattr__`` hands the steps on as the public API (``cae_ray.run``, ...).
* ``import cae_ray`` and ``import cae_ray.cli`` load none of torch, Ray, Feast or scikit-learn,
  so the CLI starts fast and ``--help`` works anywhere (checked in a fresh interpreter).

Simplification: importing ``cae_ray.a.b`` also runs ``cae_ray/__init__.py`` and
``cae_ray/a/__init__.py``, but no edges are added for that. Every module would then depend on
``cae_ray/__init__.py`` (whose lazy ``__getattr__`` imports the pipeline), which reports cycles
that say nothing; a package's ``__init__`` is held to the same rules as any other module instead.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "cae_ray"
LAYERS = (
    ("errors", "version"),
    ("versions", "extras"),
    ("config", "storage"),
    ("artifacts",),
    ("records",),
    ("selector",),
    ("gate",),
    ("runtime",),
    ("steps", "feast"),
    ("report",),
    ("pipeline", "demo"),
    ("cli",),
)
"""Each layer's folders or top-level modules, bottom first."""
CORE = ("selector", "gate")
"""Folders that import neither Ray nor Feast (:data:`BANNED_IN_CORE`)."""
BANNED_IN_CORE = ("ray", "feast")
HUB = "pipeline"
HUB_IMPORTERS = ("cli",)

Graph = dict[str, dict[str, int]]
"""source module -> {imported module: line of its first import}."""


@dataclass(frozen=True)
class Import:
    """One imported module: ``source`` imports ``target`` (a full dotted name) at ``line``."""

    source: str
    target: str
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`; never runs


# --- parsing ----------------------------------------------------------------------------------


def find_modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` (the directory ``root/package``): dotted name -> file.
    A package's ``__init__.py`` is the package itself (``cae_ray/feast/__init__.py`` is
    ``cae_ray.feast``)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_nodes(
    nodes: Iterable[ast.AST], type_only: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement below ``nodes`` (functions, methods, classes, any block), with
    whether it sits under ``if TYPE_CHECKING:`` (its ``else:`` branch runs, so it does not)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.body, True)
            yield from _import_nodes(node.orelse, type_only)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node), type_only)


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The module that ``from <base> import ...`` names, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def _targets(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]
) -> list[str]:
    """The modules one import statement loads. ``from a import b`` is ``a.b`` when that is a
    module (a submodule import) and ``a`` otherwise (``b`` is a name defined in ``a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = _from_base(node, module, is_package)
    # Only the submodule, not also its package: see "Simplification" in the module docstring.
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]


def parse_imports(root: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    """The modules of ``package`` under ``root`` and everything they import (any package)."""
    modules = find_modules(root, package)
    known = set(modules)
    imports = []
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, type_only in _import_nodes(tree.body):
            for target in dict.fromkeys(_targets(node, module, is_package, known)):
                imports.append(Import(module, target, node.lineno, type_only))
    return modules, imports


def top_level(name: str) -> str:
    return name.split(".")[0]


def package_edges(imports: Iterable[Import], package: str, runtime_only: bool) -> Graph:
    """The import graph within ``package``: source -> {target: line of its first import}."""
    graph: Graph = {}
    for imp in imports:
        if top_level(imp.target) != package or (runtime_only and imp.type_only):
            continue
        lines = graph.setdefault(imp.source, {})
        lines[imp.target] = min(lines.get(imp.target, imp.line), imp.line)
    return graph


# --- rule (a): no cycles --------------------------------------------------------------------


def find_cycles(graph: Graph) -> list[list[str]]:
    """Every elementary cycle, each once, starting at its smallest module name: for each start
    module, a depth-first search over larger names only back to the start. Fine for a few dozen
    modules; a self-import is a cycle of one."""
    cycles = []

    def extend(path: list[str]) -> None:
        for nxt in sorted(graph.get(path[-1], {})):
            if nxt == path[0]:
                cycles.append(list(path))
            elif nxt > path[0] and nxt not in path:
                extend([*path, nxt])

    for start in sorted(graph):
        extend([start])
    return cycles


def format_cycle(cycle: list[str], graph: Graph) -> str:
    """``a:12 -> b:7 -> a``: each ``module:line`` is where that module imports the next one."""
    hops = [f"{m}:{graph[m][n]}" for m, n in zip(cycle, [*cycle[1:], cycle[0]], strict=True)]
    return " -> ".join([*hops, cycle[0]])


def cycle_report(root: Path, package: str) -> list[str]:
    _, imports = parse_imports(root, package)
    graph = package_edges(imports, package, runtime_only=True)
    return [format_cycle(cycle, graph) for cycle in find_cycles(graph)]


# --- rule (b): the core imports neither Ray nor Feast ----------------------------------------


def _path_to_banned(start: str, graph: Graph, banned_by: dict[str, Import]) -> str | None:
    """The shortest import chain from ``start`` to a module that imports a banned package, as
    ``a:3 -> b:9 imports ray (b.py line 40)``, or ``None``."""
    came_from: dict[str, tuple[str, int] | None] = {start: None}
    queue = deque([start])
    while queue:
        module = queue.popleft()
        if module in banned_by:
            hops, node = [], module
            while (step := came_from[node]) is not None:
                hops.append(f"{step[0]}:{step[1]} -> ")
                node = step[0]
            imp = banned_by[module]
            return f"{''.join(reversed(hops))}{module} imports {imp.target} (line {imp.line})"
        for nxt, line in sorted(graph.get(module, {}).items()):
            if nxt not in came_from:
                came_from[nxt] = (module, line)
                queue.append(nxt)
    return None


def core_report(
    root: Path, package: str, core: Iterable[str], banned: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(the core modules checked, one chain per core module that reaches a banned import).
    A core module that does not exist yet is skipped; a core *package* counts with its
    submodules. Every import counts, function-level and ``TYPE_CHECKING`` ones included."""
    modules, imports = parse_imports(root, package)
    graph = package_edges(imports, package, runtime_only=False)
    banned_by: dict[str, Import] = {}
    for imp in imports:
        if top_level(imp.target) in banned:
            banned_by.setdefault(imp.source, imp)
    wanted = [f"{package}.{name}" for name in core]
    checked = [m for m in modules if any(m == w or m.startswith(w + ".") for w in wanted)]
    chains = [_path_to_banned(m, graph, banned_by) for m in checked]
    return checked, [chain for chain in chains if chain is not None]


# --- rule (b'): imports go down the layers ----------------------------------------------------


def unit_of(module: str, package: str) -> str | None:
    """The folder or top-level module of ``package`` that ``module`` belongs to (None: the
    package's face)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == package else None


def layer_report(root: Path, package: str, layers: Sequence[Sequence[str]]) -> list[str]:
    """Every import that goes up the layers or sideways to another unit of the same layer, and
    every unit (folder or top-level module) that no layer names."""
    modules, imports = parse_imports(root, package)
    level = {unit: i for i, units in enumerate(layers) for unit in units}
    units = {unit for unit in (unit_of(m, package) for m in modules) if unit is not None}
    problems = [f"{unit} is in no layer: add it to LAYERS" for unit in sorted(units - set(level))]
    for imp in imports:
        if top_level(imp.target) != package:
            continue
        source, target = unit_of(imp.source, package), unit_of(imp.target, package)
        if source is None or target is None or source == target:
            continue
        if source in level and target in level and level[target] >= level[source]:
            where = "up" if level[target] > level[source] else "sideways"
            problems.append(
                f"{imp.source} imports {imp.target} (line {imp.line}): {where} from "
                f"{source} to {target}"
            )
    return problems


# --- rule (c): only the CLI imports the pipeline hub -----------------------------------------


def hub_report(root: Path, package: str, hub: str, allowed: Iterable[str]) -> list[str]:
    """Every import of ``package.hub`` (or a submodule, should it become a package) from a
    module other than ``allowed`` and the hub itself."""
    _, imports = parse_imports(root, package)
    hub_name = f"{package}.{hub}"
    exempt = [hub_name, *(f"{package}.{name}" for name in allowed)]

    def inside(module: str, names: Iterable[str]) -> bool:
        return any(module == n or module.startswith(n + ".") for n in names)

    return [
        f"{imp.source} imports {imp.target} (line {imp.line})"
        for imp in imports
        if inside(imp.target, [hub_name])
        and not inside(imp.source, exempt)
        and imp.source != package  # the package's face hands the steps on, lazily
    ]


# --- the rules, on the real package -----------------------------------------------------------


def test_the_package_is_found() -> None:
    modules, imports = parse_imports(ROOT, PACKAGE)
    assert {PACKAGE, f"{PACKAGE}.cli", f"{PACKAGE}.feast"} <= set(modules)
    assert package_edges(imports, PACKAGE, runtime_only=True)


def test_no_import_cycles() -> None:
    cycles = cycle_report(ROOT, PACKAGE)
    assert not cycles, "import cycles (module:line imports the next):\n" + "\n".join(cycles)


def test_core_imports_neither_ray_nor_feast() -> None:
    checked, chains = core_report(ROOT, PACKAGE, CORE, BANNED_IN_CORE)
    for folder in CORE:
        assert any(m.startswith(f"{PACKAGE}.{folder}.") for m in checked), f"no {folder}/ found"
    message = "the core reaches Ray/Feast (module:line imports the next):\n" + "\n".join(chains)
    assert not chains, message


def test_imports_go_down_the_layers() -> None:
    problems = layer_report(ROOT, PACKAGE, LAYERS)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_only_the_cli_imports_the_pipeline() -> None:
    violations = hub_report(ROOT, PACKAGE, HUB, HUB_IMPORTERS)
    assert not violations, f"only {HUB_IMPORTERS} may import the hub:\n" + "\n".join(violations)


def test_importing_the_package_and_cli_loads_no_heavy_dependency() -> None:
    code = (
        "import cae_ray, cae_ray.cli, sys; "
        "print(sorted(m for m in ('torch','ray','feast','sklearn') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- the checker can fail ---------------------------------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> None:
    """A fake package ``fake`` under ``root``: file name (``fake/a.py``) -> source."""
    for name, source in {"fake/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(source, encoding="utf-8")


def test_a_function_level_cycle_is_reported(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "fake/a.py": "def f():\n    from fake import b\n",
            "fake/b.py": "class C:\n    def g(self):\n        from . import a\n",
            # Type-only imports never run: no cycle between c and d.
            "fake/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import fake.d\n",
            "fake/d.py": "import fake.c\n",
        },
    )
    assert cycle_report(tmp_path, "fake") == ["fake.a:2 -> fake.b:3 -> fake.a"]


def test_a_core_module_reaching_ray_is_reported(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "fake/core.py": "def f():\n    import ray.train\n",
            "fake/other.py": "from fake.sub import helper\n",
            "fake/sub/__init__.py": "",
            "fake/sub/helper.py": "class H:\n    def m(self):\n        from feast import Entity\n",
            "fake/clean.py": "import fake.missing\n",
        },
    )
    checked, chains = core_report(
        tmp_path, "fake", ["core", "other", "clean", "gone"], ["ray", "feast"]
    )
    assert checked == ["fake.clean", "fake.core", "fake.other"]
    assert chains == [
        "fake.core imports ray.train (line 2)",
        "fake.other:1 -> fake.sub.helper imports feast (line 3)",
    ]


def test_an_import_of_the_hub_is_reported(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "fake/hub.py": "",
            "fake/cli.py": "def main():\n    from fake.hub import x\n",
            "fake/step.py": "def run():\n    from fake import hub\n",
        },
    )
    assert hub_report(tmp_path, "fake", "hub", ["cli"]) == ["fake.step imports fake.hub (line 2)"]


def test_an_import_up_or_sideways_and_an_unplaced_folder_are_reported(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "fake/base.py": "def f():\n    from fake.top import x\n",
            "fake/left/__init__.py": "",
            "fake/left/a.py": "import fake.right.b\nimport fake.left.c\nimport fake.base\n",
            "fake/left/c.py": "",
            "fake/right/__init__.py": "",
            "fake/right/b.py": "",
            "fake/top.py": "import fake.left.a\n",
            "fake/stray.py": "",
        },
    )
    layers = [("base",), ("left", "right"), ("top",)]
    assert layer_report(tmp_path, "fake", layers) == [
        "stray is in no layer: add it to LAYERS",
        "fake.base imports fake.top (line 2): up from base to top",
        "fake.left.a imports fake.right.b (line 1): sideways from left to right",
    ]
