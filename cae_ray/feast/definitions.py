"""Retire deprecated features from a Feast repo's Python definitions.

Feast reads its feature views from the repo's Python files, so a retired feature leaves the repo
for good only once its ``Field`` entry leaves the source. Where a view's ``schema=`` is a list of
literal ``Field(name="...")`` entries, those entries are cut out with libcst, which keeps every
other byte (layout, comments) as written. Features whose schema is built by code (a
comprehension, a helper, a variable) cannot be cut safely, so they are reported as "by code" and
dropped at import time elsewhere. No Feast or Ray here: planning must stay cheap and must never
run the user's definitions.
"""

from __future__ import annotations

import ast
import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import libcst as cst

from cae_ray.feast.compat import repo_ignore_patterns
from cae_ray.feast.errors import DefinitionsParseError

_Gap = cst.BaseParenthesizableWhitespace


@dataclass(frozen=True)
class SourceEdits:
    files: dict[Path, tuple[str, str]]
    """Each definitions file that changes: (its text before, its text after)."""
    literal: dict[str, list[str]]
    """Per feature view: the features removed from a literal schema list."""
    by_code: dict[str, list[str]]
    """Per feature view: the features not found as literal Field entries (built by code)."""
    defined_in: dict[str, Path]
    """Per feature view asked about: the file that defines it by its literal name, when one does."""

    def diff(self, repo: Path) -> str:
        """The unified diff of every changed file (paths relative to ``repo``, a/ and b/ prefixes
        like git), files in sorted order."""
        # relpath, not relative_to: a file reached through a symlink may lie outside the repo.
        names = {p: Path(os.path.relpath(p, repo.resolve())).as_posix() for p in self.files}
        return "".join(_file_diff(names[p], *self.files[p]) for p in sorted(self.files))


def definition_files(repo: Path) -> list[Path]:
    """The Python files Feast imports from the repo, resolved and sorted, by the installed Feast's
    own rules (``feast.repo_operations.get_repo_files``): every ``**/*.py`` but ``__init__.py`` and
    what .feastignore or Feast's fixed patterns match. Hidden folders other than those are read,
    as Feast reads them."""
    ignored = _ignored_files(repo, _feastignore(repo) + repo_ignore_patterns())
    found = {p.resolve() for p in repo.glob("**/*.py") if p.is_file() and p.name != "__init__.py"}
    return sorted(found - ignored)


def plan_source_edits(repo: Path, retire: dict[str, list[str]]) -> SourceEdits:
    """What removing the features ``retire`` (feature view name -> feature names) from the repo's
    definitions changes. Reads files, writes nothing."""
    wanted = {view: list(dict.fromkeys(names)) for view, names in retire.items()}
    files: dict[Path, tuple[str, str]] = {}
    defined_in: dict[str, Path] = {}
    removed: dict[str, set[str]] = {view: set() for view in wanted}
    for path in definition_files(repo):
        module = _parse(path)
        retirer = _Retirer(wanted)
        after = module.visit(retirer).code
        for view in retirer.views:
            defined_in.setdefault(view, path)
        for view, names in retirer.removed.items():
            removed[view] |= names
        if after != module.code:
            files[path] = (module.code, after)
    literal = {v: [n for n in names if n in removed[v]] for v, names in wanted.items()}
    by_code = {v: [n for n in names if n not in removed[v]] for v, names in wanted.items()}
    return SourceEdits(files, _nonempty(literal), _nonempty(by_code), defined_in)


def _nonempty(per_view: dict[str, list[str]]) -> dict[str, list[str]]:
    return {view: names for view, names in per_view.items() if names}


class _Retirer(cst.CSTTransformer):
    """Cuts the retired literal ``Field`` entries out of the retired views' schema lists."""

    def __init__(self, retire: dict[str, list[str]]) -> None:
        super().__init__()
        self.retire = retire
        self.views: set[str] = set()
        self.removed: dict[str, set[str]] = {}

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        view = _literal_name(updated_node, "FeatureView")
        if view is None or view not in self.retire:
            return updated_node
        self.views.add(view)
        args = [self._edit_schema(view, arg) for arg in updated_node.args]
        return updated_node.with_changes(args=args)

    def _edit_schema(self, view: str, arg: cst.Arg) -> cst.Arg:
        keyword = arg.keyword.value if arg.keyword else None
        if keyword != "schema" or not isinstance(arg.value, cst.List):
            return arg
        doomed = set(self.retire[view])
        names = [_field_name(e) for e in arg.value.elements]
        drop = [name in doomed for name in names]
        if not any(drop):
            return arg
        self.removed.setdefault(view, set()).update(n for n in names if n in doomed)
        return arg.with_changes(value=_drop_elements(arg.value, drop))


def _literal_name(call: cst.Call, callee_suffix: str) -> str | None:
    """The simple string literal passed as ``name=`` to a call of ``...<callee_suffix>``."""
    func = call.func
    callee = func.value if isinstance(func, cst.Name) else None
    if isinstance(func, cst.Attribute):
        callee = func.attr.value
    if callee is None or not callee.endswith(callee_suffix):
        return None
    for arg in call.args:
        if arg.keyword is not None and arg.keyword.value == "name":
            value = arg.value.evaluated_value if isinstance(arg.value, cst.SimpleString) else None
            return value if isinstance(value, str) else None
    return None


def _field_name(element: cst.BaseElement) -> str | None:
    # A starred element is built by code even when it holds literal Fields.
    if isinstance(element, cst.Element) and isinstance(element.value, cst.Call):
        return _literal_name(element.value, "Field")
    return None


def _drop_elements(lst: cst.List, drop: list[bool]) -> cst.List:
    elements = list(lst.elements)
    trailing = elements[-1].comma  # the list's trailing-comma style, kept by its new last element
    # gaps[k] is the whitespace before elements[k]; gaps[-1] the one before "]".
    gaps: list[_Gap] = [lst.lbracket.whitespace_after]
    gaps += [e.comma.whitespace_after for e in elements[:-1] if isinstance(e.comma, cst.Comma)]
    gaps.append(lst.rbracket.whitespace_before)
    # From the end, so "is it the last one left" is known when each element goes.
    for k in reversed(range(len(elements))):
        if drop[k]:
            gaps[k : k + 2] = [_merge(gaps[k], gaps[k + 1], at_end=k == len(elements) - 1)]
            del elements[k]
    if not elements:
        lead = gaps[0] if _has_comments(gaps[0]) else cst.SimpleWhitespace("")
        return lst.with_changes(
            elements=[],
            lbracket=lst.lbracket.with_changes(whitespace_after=lead),
            rbracket=lst.rbracket.with_changes(whitespace_before=cst.SimpleWhitespace("")),
        )
    kept = [
        e.with_changes(comma=_comma(e.comma, gap))
        for e, gap in zip(elements[:-1], gaps[1:-1], strict=True)
    ]
    kept.append(elements[-1].with_changes(comma=trailing))
    return lst.with_changes(
        elements=kept,
        lbracket=lst.lbracket.with_changes(whitespace_after=gaps[0]),
        rbracket=lst.rbracket.with_changes(whitespace_before=gaps[-1]),
    )


def _merge(before: _Gap, after: _Gap, at_end: bool) -> _Gap:
    """The whitespace left where an element was, from the gaps before and after it."""
    if isinstance(after, cst.ParenthesizedWhitespace):
        # The element's own line comment (after.first_line) goes with it; comment lines stay.
        if isinstance(before, cst.ParenthesizedWhitespace):
            lines = [*before.empty_lines, *after.empty_lines]
            return after.with_changes(first_line=before.first_line, empty_lines=lines)
        return after.with_changes(first_line=cst.TrailingWhitespace())
    # What follows sat on the element's line: it takes the element's place, except that "]"
    # hugs the new last element unless that would pull a comment into the line.
    return after if at_end and not _has_comments(before) else before


def _has_comments(gap: _Gap) -> bool:
    if not isinstance(gap, cst.ParenthesizedWhitespace):
        return False
    return gap.first_line.comment is not None or any(e.comment for e in gap.empty_lines)


def _comma(comma: cst.Comma | cst.MaybeSentinel, gap: _Gap) -> cst.Comma:
    return (comma if isinstance(comma, cst.Comma) else cst.Comma()).with_changes(
        whitespace_after=gap
    )


def _parse(path: Path) -> cst.Module:
    source = path.read_bytes()
    try:
        ast.parse(source, filename=str(path))  # first, for Python's own verdict and message
        return cst.parse_module(source)
    except cst.ParserSyntaxError as error:
        raise DefinitionsParseError(path, error.message) from error
    except SyntaxError as error:
        raise DefinitionsParseError(path, f"{error.msg} (line {error.lineno})") from error
    except ValueError as error:  # null bytes, on Pythons before 3.12
        raise DefinitionsParseError(path, str(error)) from error


def _feastignore(repo: Path) -> list[str]:
    """Feast's read_feastignore: one glob a line, "#" starts a comment, blank lines skipped."""
    path = repo / ".feastignore"
    if not path.is_file():
        return []
    patterns = (line.split("#", 1)[0].strip() for line in path.read_text().strip().split("\n"))
    return [p for p in patterns if p]


def _ignored_files(repo: Path, patterns: list[str]) -> set[Path]:
    """Feast's get_ignore_files: a matched file, or every ``**/*.py`` under a matched folder."""
    ignored: set[Path] = set()
    for pattern in set(patterns):
        for match in repo.glob(pattern):
            if match.is_file():
                ignored.add(match.resolve())
            else:
                ignored |= {p.resolve() for p in match.glob("**/*.py") if p.is_file()}
    return ignored


def _file_diff(name: str, before: str, after: str) -> str:
    lines = difflib.unified_diff(_lines(before), _lines(after), f"a/{name}", f"b/{name}")
    # As git does, mark a last line with no newline, so the diff still applies.
    marked = (
        line if line.endswith("\n") else f"{line}\n\\ No newline at end of file\n" for line in lines
    )
    return "".join(marked)


def _lines(text: str) -> list[str]:
    # Not str.splitlines: it also breaks at \f, \v and \x1c-\x1e, which are no line ends to git.
    parts = text.split("\n")
    return [f"{part}\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])
