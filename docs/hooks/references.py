"""MkDocs hook: fail the (strict) build on a page that names code that is not there.

Pages name modules and objects (`cae_ray.feast.overlay.annotate_all`) and repository files
(`deploy/rayjob.yaml`, `benchmarks/gate.py`). When code moves, those names go stale without
any broken link; this hook resolves each one against the source tree (statically: nothing is
imported) and logs a warning, which `mkdocs build --strict` turns into a failure, for every
one that no longer resolves.
"""

from __future__ import annotations

import ast
import functools
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.references")

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "cae_ray"
DOTTED = re.compile(rf"(?<![\w.]){PACKAGE}(?:\.[A-Za-z_]\w*)+")
FOLDERS = "cae_ray|tests|benchmarks|deploy|configs|pipelines|docs"
PATH = re.compile(rf"(?<![\w/.-])(?:{FOLDERS})/[\w./-]*\w")


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    where = page.file.src_uri
    for name in sorted(set(DOTTED.findall(markdown))):
        if not resolves(name):
            log.warning("%s names %s, which is not in the package", where, name)
    for path in sorted(set(PATH.findall(markdown))):
        if not (ROOT / path).exists():
            log.warning("%s names the file %s, which is not in the repository", where, path)
    return markdown


def resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module of the package, or a name defined in one (a class, a
    function, an assignment, an import, an entry of ``__all__``), or a member of such a class."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module = _module_file(parts[:cut])
        if module is not None:
            return _defines(module, parts[cut:])
    return False


def _module_file(parts: list[str]) -> Path | None:
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defines(module: Path, names: list[str]) -> bool:
    if not names:
        return True
    scope: list[ast.stmt] = _parsed(module).body
    for depth, name in enumerate(names):
        found = _definitions(scope).get(name)
        if found is None:
            return False
        if isinstance(found, ast.ClassDef):
            scope = found.body
        elif isinstance(found, ast.ImportFrom) and depth < len(names) - 1:
            return _imported(found, name, names[depth + 1 :])
        elif depth < len(names) - 1:
            return False
    return True


def _imported(node: ast.ImportFrom, name: str, members: list[str]) -> bool:
    """A member of a name a package module re-exports (``cae_ray.config.SelectorConfig.k``):
    looked up where the name is defined."""
    source = _module_file(node.module.split(".")) if node.module and node.level == 0 else None
    if source is None:
        return False
    original = next(a.name for a in node.names if (a.asname or a.name) == name)
    return _defines(source, [original, *members])


@functools.cache
def _parsed(module: Path) -> ast.Module:
    return ast.parse(module.read_text())


def _definitions(body: list[ast.stmt]) -> dict[str, ast.AST]:
    """Names bound at this level, looking into ``if``/``try`` blocks (``if TYPE_CHECKING:``)."""
    found: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        found[leaf.id] = node
            if _is_all(node) and isinstance(node.value, ast.List | ast.Tuple):
                for item in node.value.elts:
                    if isinstance(item, ast.Constant) and isinstance(item.value, str):
                        found.setdefault(item.value, node)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                found[(alias.asname or alias.name).split(".")[0]] = node
        elif isinstance(node, ast.If | ast.Try):
            inner = [*node.body, *node.orelse]
            found.update(_definitions(inner))
    return found


def _is_all(node: ast.Assign | ast.AnnAssign) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)
