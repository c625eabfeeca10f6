"""MkDocs hook: the parts of pages that are made from the code at build time, never copied.

A page asks for one with a marker line, which the hook replaces:

    <!-- generated: config-defaults -->    every config key with its default, as YAML
    <!-- generated: config-reference -->   one table per config section: key, type, default and
                                           the field's docstring (cae_ray.config)
    <!-- generated: errors -->             every error class cae-ray raises, with its exit code
    <!-- generated: modules -->            every module of the package, folder by folder, with
                                           its length and the first line of its docstring

So a new setting, a changed default or a new error shows up in the docs with no edit here.
"""

from __future__ import annotations

import ast
import importlib
import logging
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

if TYPE_CHECKING:
    from cae_ray.errors import CaeRayError

log = logging.getLogger("mkdocs.hooks.generated")

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj):`~?([^`]+)`")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        make = GENERATORS.get(match.group(1))
        if make is None:
            log.warning("unknown generated part %r (known: %s)", match.group(1), list(GENERATORS))
            return match.group(0)
        return make()

    return MARKER.sub(replace, markdown)


# --- the configuration ------------------------------------------------------------------------


def config_defaults() -> str:
    from cae_ray.config import Config

    lines = []
    for section, values in Config().model_dump(mode="json").items():
        if values is None:
            continue  # an optional section: nothing to default
        lines.append(f"{section}:")
        lines += [f"  {key}: {_yaml(value)}" for key, value in values.items()]
    return "```yaml\n" + "\n".join(lines) + "\n```"


def config_reference() -> str:
    from cae_ray.config import Config

    parts = []
    for name, field in Config.model_fields.items():
        section = _models(field.annotation)[0]
        optional = " An optional section: none by default." if field.default is None else ""
        parts.append(f"## `{name}`\n\n{_text(field.description)}{optional}\n")
        parts.append("| key | type | default | what it does |\n|---|---|---|---|")
        for key, setting in section.model_fields.items():
            parts.append(
                f"| `{name}.{key}` | {_type(setting)} | {_default(setting)} "
                f"| {_text(setting.description)} |"
            )
        parts.append("")
    return "\n".join(parts)


def _models(annotation: Any) -> list[type[BaseModel]]:
    found = [annotation, *get_args(annotation)]
    return [t for t in found if isinstance(t, type) and issubclass(t, BaseModel)]


def _type(field: FieldInfo) -> str:
    limits = {
        annotated_types.Ge: ("≥ {}", "ge"),
        annotated_types.Gt: ("> {}", "gt"),
        annotated_types.Le: ("≤ {}", "le"),
        annotated_types.Lt: ("< {}", "lt"),
        annotated_types.MinLen: ("at least {} characters", "min_length"),
    }
    bounds = []
    for rule in field.metadata:
        for kind, (shown, attribute) in limits.items():
            if isinstance(rule, kind):
                bounds.append(shown.format(getattr(rule, attribute)))
    return ", ".join([_annotation(field.annotation), *bounds])


def _annotation(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "`null`"
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin in (Union, types.UnionType):
        return " or ".join(_annotation(arg) for arg in args)
    if origin is list:
        return f"list of {_annotation(args[0])}"
    if origin is dict:
        return f"mapping of {_annotation(args[0])} to {_annotation(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        keys = ", ".join(f"{key}: ..." for key in annotation.model_fields)
        return f"`{{{keys}}}`"
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{_yaml(value)}`"


def _yaml(value: Any) -> str:
    """One value as YAML writes it on one line (`null`, `[200]`, `{}`, `auto`)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000)
    return text.strip().removesuffix("...").strip()


def _text(description: str | None) -> str:
    """A docstring as one table cell: one line, pipes escaped."""
    if not description:
        log.warning("a config field has no docstring: add one in cae_ray/config/")
        return ""
    return " ".join(description.split()).replace("|", "\\|")


# --- the errors ---------------------------------------------------------------------------------


def errors() -> str:
    """Every subclass of CaeRayError in an ``errors.py`` of the package (errors live beside the
    code that raises them, one module per folder), grouped by exit code."""
    from cae_ray.errors import EXIT_CODES, CaeRayError

    for path in sorted((ROOT / "cae_ray").rglob("errors.py")):
        importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
    rows = ["| error | exit code | when |", "|---|---|---|"]
    for cls in sorted(_subclasses(CaeRayError), key=lambda c: (c.exit_code, c.__name__)):
        module = cls.__module__
        summary = _own_docstring(cls)
        meaning = EXIT_CODES[cls.exit_code]
        rows.append(
            f"| `{cls.__name__}` <br><small>`{module}`</small> | {cls.exit_code} ({meaning}) "
            f"| {summary} |"
        )
    return "\n".join(rows)


def _subclasses(cls: type[CaeRayError]) -> list[type[CaeRayError]]:
    found: list[type[CaeRayError]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return list(dict.fromkeys(found))


def _own_docstring(cls: type) -> str:
    return _first_sentence(cls.__dict__.get("__doc__"))


# --- the modules ------------------------------------------------------------------------------


def modules() -> str:
    """One table per folder of the package, read from the source (nothing is imported)."""
    package = ROOT / "cae_ray"
    folders = sorted({path.parent for path in package.rglob("*.py")})
    parts = []
    for folder in folders:
        name = folder.relative_to(ROOT).as_posix()
        parts.append(f"**`{name}/`**\n\n| module | lines | what it holds |\n|---|---|---|")
        for path in sorted(folder.glob("*.py")):
            text = path.read_text()
            summary = _first_sentence(ast.get_docstring(ast.parse(text)))
            lines = text.count("\n")
            parts.append(f"| `{path.name}` | {lines} | {summary} |")
        parts.append("")
    return "\n".join(parts)


def _first_sentence(doc: str | None) -> str:
    """A docstring's first paragraph as one table cell, Sphinx roles as code spans."""
    if not doc:
        return ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return ROLE.sub(r"`\1`", paragraph).replace("|", "\\|")


GENERATORS: dict[str, Callable[[], str]] = {
    "config-defaults": config_defaults,
    "config-reference": config_reference,
    "errors": errors,
    "modules": modules,
}
