"""Reading a config file: its size and its aliases bounded, ``${NAME}`` references to the
environment substituted after parsing. :func:`cae_ray.config.load_config` validates what this
reads."""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cae_ray.errors import ConfigFileError, ConfigTooLargeError, UndefinedEnvVarError


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The YAML mapping in the config file at ``path``, environment references substituted;
    errors name the file and the fix."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigTooLargeError(
                source,
                f"it is {size:,} bytes",
                f"{MAX_CONFIG_BYTES:,} bytes, cae_ray.config.file.MAX_CONFIG_BYTES",
                "a config names settings, not data: write long feature lists as a glob "
                "('f_*') or {all_numeric_except: [...]}",
            )
        text = Path(path).read_text()
    except FileNotFoundError as e:
        raise ConfigFileError(source, "no such file", "check the path") from e
    except OSError as e:
        raise ConfigFileError(source, f"cannot be read ({e.strerror})", "check permissions") from e
    try:
        data = expand_env(text, source)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigFileError(
            source, f"not valid YAML ({where}{problem})", "fix the YAML syntax there"
        ) from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            source,
            f"the top level is a {type(data).__name__}, not a mapping",
            "write sections such as `selector:` and `training:` at the top level",
        )
    return data


_ENV_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class _Reference:
    name: str
    default: str | None
    line: int


def expand_env(text: str, source: str = "<string>") -> Any:
    """The YAML ``text`` parsed, with ``${NAME}`` and ``${NAME:-default}`` in its values replaced
    by the environment's values.

    A value is substituted after parsing, never pasted into the text: a ``#`` or a newline in
    it stays in the string instead of cutting it short or adding keys. A value that is one
    reference and nothing else is read as a YAML scalar (``k: ${K}`` with ``K=7`` is 7).
    """
    references: list[_Reference] = []

    def placeholder(match: re.Match[str]) -> str:
        line = text.count("\n", 0, match.start()) + 1
        references.append(_Reference(match.group(1), match.group(2), line))
        return f"{_PLACEHOLDER}{len(references) - 1}_"  # a plain scalar in any YAML context

    parsed = _bounded_load(_ENV_VAR.sub(placeholder, text), source)
    return _substituted(parsed, references, source)


MAX_CONFIG_BYTES = 16 << 20
"""The largest config file read (:func:`read_config_file`). A config names settings, not data:
a list of 100,000 feature names takes about 3 MB."""
MAX_CONFIG_VALUES = 1_000_000
"""The most YAML values (mappings, lists and scalars) a config may hold once every alias
(``*name``) is expanded: ten times an explicit list of 100,000 features, far below what an alias
bomb (nine levels of ``&a [*a, *a, ...]``, billions of values) expands to."""


def _bounded_load(text: str, source: str) -> Any:
    """``yaml.safe_load(text)``, refusing a document whose aliases expand past
    :data:`MAX_CONFIG_VALUES` or that refers to itself, before anything is built from it.

    PyYAML keeps an alias as a second reference to one object, so a bomb parses in
    milliseconds; it explodes in whatever walks the result (the substitution below, pydantic,
    the config hash). So the size is counted on the parsed node graph, each node once."""
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError as e:
            raise ConfigTooLargeError(
                source,
                "its values nest deeper than the YAML parser can follow",
                f"Python's recursion limit, {sys.getrecursionlimit():,} levels",
                "a config nests a few levels: flatten the lists or mappings that nest",
            ) from e
        if node is None:
            return None
        values = _expanded_size(node, source)
        if values > MAX_CONFIG_VALUES:
            raise _too_many_values(source, f"more than {MAX_CONFIG_VALUES:,}")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _too_many_values(source: str, count: str) -> ConfigTooLargeError:
    return ConfigTooLargeError(
        source,
        f"its anchors and aliases (&name, *name) expand to {count} YAML values",
        f"{MAX_CONFIG_VALUES:,} values, cae_ray.config.file.MAX_CONFIG_VALUES",
        "write the values out, or alias whole sections rather than nesting aliases in "
        "aliases; a feature list is better written as a glob ('f_*') or "
        "{all_numeric_except: [...]}",
    )


def _expanded_size(root: yaml.Node, source: str) -> int:
    """How many values the document under ``root`` holds with every alias expanded: each
    distinct node is counted once and its size reused wherever an alias repeats it."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the path being walked: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_counted = stack.pop()
        children = _children(node)
        if children_counted:
            size = 1 + sum(sizes[id(child)] for child in children)
            if size > MAX_CONFIG_VALUES:  # stop early: the rest only adds to it
                raise _too_many_values(source, f"more than {MAX_CONFIG_VALUES:,}")
            sizes[id(node)] = size
            open_nodes.discard(id(node))
            continue
        if id(node) in sizes:
            continue
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise ConfigFileError(
                    source,
                    f"an alias on line {child.start_mark.line + 1} refers to a value that holds "
                    "it, so its expansion never ends",
                    "alias a value outside the one that holds the alias",
                )
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_PLACEHOLDER = "cae_ray_environment_value_"
_PLACEHOLDERS = re.compile(rf"{_PLACEHOLDER}(\d+)_")


def _substituted(value: Any, references: list[_Reference], source: str) -> Any:
    if isinstance(value, dict):
        return {k: _substituted(v, references, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_substituted(v, references, source) for v in value]
    if not isinstance(value, str) or _PLACEHOLDER not in value:
        return value

    def environment(match: re.Match[str]) -> str:
        reference = references[int(match.group(1))]
        found = os.environ.get(reference.name, reference.default)
        if found is None:
            raise UndefinedEnvVarError(source, reference.name, reference.line)
        return found

    expanded = _PLACEHOLDERS.sub(environment, value)
    return _scalar(expanded) if _PLACEHOLDERS.fullmatch(value) else expanded


def _scalar(text: str) -> Any:
    """``text`` as YAML reads a plain scalar (7, 0.5, true, null, or the string itself)."""
    tag = yaml.resolver.Resolver().resolve(yaml.ScalarNode, text, (True, False))
    return yaml.SafeLoader("").construct_object(yaml.ScalarNode(tag, text))
