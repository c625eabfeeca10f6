"""cae_ray.feast.definitions: retired features cut out of a Feast repo's Python definitions."""

from __future__ import annotations

import ast
import difflib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cae_ray.feast.compat import feast_minor
from cae_ray.feast.definitions import (
    DefinitionsParseError,
    SourceEdits,
    definition_files,
    plan_source_edits,
)

HEADER = """\
from feast import BatchFeatureView, FeatureView, Field
from feast.types import Float32, Int64
"""

DRIVER = """\
driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    schema=[  # what the model reads
        Field(name="conv_rate", dtype=Float32),  # deprecated in 2025
        # acceptance stays
        Field(name="acc_rate", dtype=Float32),
        Field(
            name="trips",  # per day
            dtype=Int64,
        ),  # the last one
    ],
    source=source,
)
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return tmp_path.resolve()


def write(repo: Path, name: str, text: str) -> Path:
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def one_view(schema: str, name: str = "v") -> str:
    return f'{HEADER}\nv = FeatureView(name="{name}", schema={schema}, ttl=None)\n'


def after_of(repo: Path, retire: dict[str, list[str]]) -> str:
    """The single changed file's text after, checked to be valid Python."""
    edits = plan_source_edits(repo, retire)
    [(_, after)] = edits.files.values()
    ast.parse(after)
    return after


def apply_patch(originals: dict[str, str], patch: str) -> dict[str, str]:
    """A small `patch -p1`: every context and "-" line must match the original exactly."""
    lines, i, result = patch.splitlines(keepends=True), 0, {}
    while i < len(lines):
        name = lines[i].removeprefix("--- a/").rstrip("\n")
        assert lines[i + 1] == f"+++ b/{name}\n"
        old, new, pos, i = originals[name].splitlines(keepends=True), [], 0, i + 2
        while i < len(lines) and lines[i].startswith("@@"):
            m = re.match(r"@@ -(\d+)(?:,(\d+))? \+\d+(?:,(\d+))? @@\n", lines[i])
            assert m, lines[i]
            old_n, new_n = int(m[2] or 1), int(m[3] or 1)
            start = int(m[1]) - (old_n > 0)
            new += old[pos:start]
            pos, i = start, i + 1
            hunk: list[tuple[str, str]] = []
            while old_n or new_n or (i < len(lines) and lines[i].startswith("\\")):
                tag, body = lines[i][0], lines[i][1:]
                i += 1
                if tag == "\\":  # the line before has no newline
                    hunk[-1] = (hunk[-1][0], hunk[-1][1].removesuffix("\n"))
                    continue
                hunk.append((tag, body))
                old_n, new_n = old_n - (tag in " -"), new_n - (tag in " +")
            for tag, body in hunk:
                if tag in " -":
                    assert old[pos] == body
                    pos += 1
                if tag in " +":
                    new.append(body)
        result[name] = "".join(new + old[pos:])
    return result


def git_apply(repo: Path, patch: str) -> None:
    """Applies the patch with git itself, when there is one."""
    if shutil.which("git"):
        subprocess.run(["git", "apply", "-"], cwd=repo, input=patch, text=True, check=True)


def test_multiline_list_with_comments(repo: Path) -> None:
    write(repo, "driver.py", HEADER + DRIVER)
    after = after_of(repo, {"driver_stats": ["conv_rate", "trips"]})
    # The removed entries' own line comments go; the list's and the standalone comment stay.
    assert after == HEADER + (
        "driver_stats = FeatureView(\n"
        '    name="driver_stats",\n'
        "    entities=[driver],\n"
        "    schema=[  # what the model reads\n"
        "        # acceptance stays\n"
        '        Field(name="acc_rate", dtype=Float32),\n'
        "    ],\n"
        "    source=source,\n"
        ")\n"
    )


@pytest.mark.parametrize(
    ("retired", "schema"),
    [
        (["a"], """[Field(name="b", dtype=Int64), Field(name='c')]"""),
        (["b"], """[Field(name="a", dtype=Int64), Field(name='c')]"""),
        (["c"], '[Field(name="a", dtype=Int64), Field(name="b", dtype=Int64)]'),
        (["a", "c"], '[Field(name="b", dtype=Int64)]'),
        (["a", "b", "c"], "[]"),
    ],
)
def test_one_line_list(repo: Path, retired: list[str], schema: str) -> None:
    fields = ['Field(name="a", dtype=Int64)', 'Field(name="b", dtype=Int64)', "Field(name='c')"]
    write(repo, "v.py", one_view(f"[{', '.join(fields)}]"))
    assert after_of(repo, {"v": retired}) == one_view(schema)


def test_removing_the_last_keeps_the_trailing_comma(repo: Path) -> None:
    write(repo, "v.py", one_view("[\n    Field(name='a'),\n    Field(name='b'),  # b\n]"))
    assert after_of(repo, {"v": ["b"]}) == one_view("[\n    Field(name='a'),\n]")


def test_removing_the_last_without_trailing_comma(repo: Path) -> None:
    write(repo, "v.py", one_view("[\n    Field(name='a'),  # a\n    Field(name='b')  # b\n]"))
    # The new last entry takes no comma, and keeps its own comment.
    assert after_of(repo, {"v": ["b"]}) == one_view("[\n    Field(name='a')  # a\n]")


def test_removing_the_first(repo: Path) -> None:
    write(repo, "v.py", one_view("[  # lead\n    Field(name='a'),  # a\n    Field(name='b'),\n]"))
    assert after_of(repo, {"v": ["a"]}) == one_view("[  # lead\n    Field(name='b'),\n]")


def test_removing_the_first_of_a_hanging_list(repo: Path) -> None:
    write(repo, "v.py", one_view("[Field(name='a'),\n        Field(name='b')]"))
    # The remaining line stays as it was.
    assert after_of(repo, {"v": ["a"]}) == one_view("[\n        Field(name='b')]")
    assert after_of(repo, {"v": ["b"]}) == one_view("[Field(name='a')]")


def test_removing_all_leaves_an_empty_list(repo: Path) -> None:
    write(repo, "v.py", one_view("[\n    Field(name='a'),\n    Field(name='b'),\n]"))
    assert after_of(repo, {"v": ["a", "b"]}) == one_view("[]")


def test_removing_all_keeps_comment_lines(repo: Path) -> None:
    write(repo, "v.py", one_view("[\n    # kept\n    Field(name='a'),  # gone\n]"))
    assert after_of(repo, {"v": ["a"]}) == one_view("[\n    # kept\n]")


def test_mixed_list_keeps_the_starred_part(repo: Path) -> None:
    starred = "*[Field(name=c, dtype=Int64) for c in cols]"
    write(repo, "v.py", one_view(f'[Field(name="a", dtype=Int64), {starred}]'))
    edits = plan_source_edits(repo, {"v": ["a", "c1"]})
    [(_, after)] = edits.files.values()
    assert after == one_view(f"[{starred}]")
    assert edits.literal == {"v": ["a"]}
    assert edits.by_code == {"v": ["c1"]}


def test_two_views_in_one_file(repo: Path) -> None:
    views = [
        """x = FeatureView(name="x", schema=[Field(name="a"), Field(name="b")])\n""",
        """y = BatchFeatureView(name="y", schema=[Field(name="a"), Field(name="b")])\n""",
        """z = FeatureView(name="z", schema=[Field(name="a")])\n""",
    ]
    path = write(repo, "views.py", HEADER + "".join(views))
    edits = plan_source_edits(repo, {"x": ["a"], "y": ["b"]})
    after = [
        """x = FeatureView(name="x", schema=[Field(name="b")])\n""",
        """y = BatchFeatureView(name="y", schema=[Field(name="a")])\n""",
        views[2],  # z is not retired: its "a" stays
    ]
    assert edits.files == {path: (HEADER + "".join(views), HEADER + "".join(after))}
    assert edits.literal == {"x": ["a"], "y": ["b"]}
    assert edits.by_code == {}
    assert edits.defined_in == {"x": path, "y": path}


def test_two_files_literal_and_comprehension(repo: Path) -> None:
    literal = write(repo, "driver.py", HEADER + DRIVER)
    schema = "[Field(name=s, dtype=Float32) for s in S]"
    built = write(repo, "stats/views.py", one_view(schema, name="stats"))
    edits = plan_source_edits(repo, {"driver_stats": ["conv_rate"], "stats": ["s_01"]})
    assert list(edits.files) == [literal]
    assert edits.literal == {"driver_stats": ["conv_rate"]}
    assert edits.by_code == {"stats": ["s_01"]}
    assert edits.defined_in == {"driver_stats": literal, "stats": built}


@pytest.mark.parametrize(
    "schema", ["SCHEMA", "make_schema()", "[*base]", "[*[Field(name='a', dtype=Int64)]]"]
)
def test_schema_built_by_code(repo: Path, schema: str) -> None:
    path = write(repo, "v.py", one_view(schema))
    edits = plan_source_edits(repo, {"v": ["a"]})
    assert edits == SourceEdits(files={}, literal={}, by_code={"v": ["a"]}, defined_in={"v": path})


@pytest.mark.parametrize("name", ['f"v"', '"v" "x"', "NAME", 'b"v"'])
def test_view_without_a_literal_name_is_not_found(repo: Path, name: str) -> None:
    write(repo, "v.py", f'{HEADER}\nv = FeatureView(name={name}, schema=[Field(name="a")])\n')
    edits = plan_source_edits(repo, {"v": ["a"], "vx": ["a"]})
    assert (edits.files, edits.defined_in) == ({}, {})
    assert edits.by_code == {"v": ["a"], "vx": ["a"]}


def test_a_view_no_file_defines(repo: Path) -> None:
    write(repo, "driver.py", HEADER + DRIVER)
    edits = plan_source_edits(repo, {"gone": ["x", "y"], "driver_stats": []})
    assert edits.files == {}
    assert edits.by_code == {"gone": ["x", "y"]}
    assert edits.defined_in == {"driver_stats": repo / "driver.py"}


def test_attribute_callees_and_other_view_kinds(repo: Path) -> None:
    text = (
        "import feast\n"
        "a = feast.FeatureView(name='a', schema=[feast.Field(name='x'), feast.Field(name='y')])\n"
        "s = StreamFeatureView(name='s', schema=[Field(name='x'), Field(name='y')])\n"
        "n = NotAView(name='a', schema=[Field(name='x')])\n"
    )
    write(repo, "v.py", text)
    after = after_of(repo, {"a": ["x"], "s": ["y"]})
    assert after == (
        "import feast\n"
        "a = feast.FeatureView(name='a', schema=[feast.Field(name='y')])\n"
        "s = StreamFeatureView(name='s', schema=[Field(name='x')])\n"
        "n = NotAView(name='a', schema=[Field(name='x')])\n"
    )


def test_duplicates_count_once_in_the_order_given(repo: Path) -> None:
    write(repo, "v.py", one_view('[Field(name="a"), Field(name="b"), Field(name="c")]'))
    edits = plan_source_edits(repo, {"v": ["z", "c", "a", "c", "z"]})
    assert edits.literal == {"v": ["c", "a"]}
    assert edits.by_code == {"v": ["z"]}


def test_crlf_and_untouched_bytes_survive(repo: Path) -> None:
    text = one_view('[\n    Field(name="a"),\n    Field(name="b"),\n]').replace("\n", "\r\n")
    path = repo / "v.py"
    path.write_bytes(text.encode())
    edits = plan_source_edits(repo, {"v": ["a"]})
    assert edits.files[path] == (text, text.replace('    Field(name="a"),\r\n', ""))
    assert path.read_bytes() == text.encode()  # plans write nothing


def test_feastignored_file_is_not_read(repo: Path) -> None:
    write(repo, ".feastignore", "# scratch work\nscratch/\nold_*.py  # legacy\n")
    write(repo, "scratch/broken.py", "this is not python (\n")
    write(repo, "old_views.py", one_view('[Field(name="a")]'))
    edits = plan_source_edits(repo, {"v": ["a"]})
    assert edits == SourceEdits(files={}, literal={}, by_code={"v": ["a"]}, defined_in={})


def make_tree(repo: Path) -> None:
    write(
        repo, ".feastignore", "  # comment only\n\nignored_dir\n**/skip_*.py\nfile.py # trailing\n"
    )
    names = (
        "a.py file.py pkg/__init__.py pkg/b.py pkg/skip_me.py ignored_dir/c.py .venv/lib/d.py"
        " sub/.venv/e.py .hidden/f.py .git/g.py venv/h.py x/__pycache__/i.py"
        " x/.ipynb_checkpoints/j.py .pytest_cache/k.py notes.txt"
    )
    for name in names.split():
        write(repo, name, "x = 1\n")


def test_definition_files_follow_feast_rules(repo: Path) -> None:
    make_tree(repo)
    found = [p.relative_to(repo).as_posix() for p in definition_files(repo)]
    # Feast skips .venv and .git only at the root, and reads other hidden folders and venv/;
    # before 0.62 it skipped the cache folders only at the root too.
    expected = [".hidden/f.py", "a.py", "pkg/b.py", "sub/.venv/e.py", "venv/h.py"]
    if feast_minor() < (0, 62):
        expected += ["x/.ipynb_checkpoints/j.py", "x/__pycache__/i.py"]
    assert found == expected


@pytest.mark.feast
def test_definition_files_match_feast_itself(repo: Path) -> None:
    repo_operations = pytest.importorskip("feast.repo_operations")
    make_tree(repo)
    assert definition_files(repo) == repo_operations.get_repo_files(repo)


def test_diff_is_a_unified_diff_that_applies(repo: Path) -> None:
    write(repo, "z_driver.py", HEADER + DRIVER)
    write(repo, "a/v.py", one_view('[Field(name="a"), Field(name="b")]'))
    edits = plan_source_edits(repo, {"driver_stats": ["acc_rate"], "v": ["b"]})
    diff = edits.diff(repo)
    names = ["a/v.py", "z_driver.py"]
    assert re.findall(r"^\+\+\+ b/(.*)$", diff, re.M) == names  # sorted, relative
    before = {n: edits.files[repo / n][0] for n in names}
    after = {n: edits.files[repo / n][1] for n in names}
    assert apply_patch(before, diff) == after
    changed = [
        line
        for line in diff.splitlines(True)
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert changed == [
        """-v = FeatureView(name="v", schema=[Field(name="a"), Field(name="b")], ttl=None)\n""",
        """+v = FeatureView(name="v", schema=[Field(name="a")], ttl=None)\n""",
        """-        Field(name="acc_rate", dtype=Float32),\n""",
    ]
    # The same "+" and "-" lines difflib finds, file by file.
    from_difflib = [
        line
        for n in names
        for line in difflib.unified_diff(before[n].splitlines(True), after[n].splitlines(True))
        if line[:1] in "+-" and line[:3] not in ("+++", "---")
    ]
    assert changed == from_difflib
    git_apply(repo, diff)
    assert {n: (repo / n).read_text() for n in names} == (after if shutil.which("git") else before)


def test_diff_marks_a_missing_final_newline(repo: Path) -> None:
    write(repo, "v.py", one_view('[Field(name="a"), Field(name="b")]').rstrip("\n"))
    edits = plan_source_edits(repo, {"v": ["b"]})
    diff = edits.diff(repo)
    assert diff.count("\\ No newline at end of file\n") == 2
    [(before, after)] = edits.files.values()
    assert apply_patch({"v.py": before}, diff) == {"v.py": after}
    git_apply(repo, diff)
    assert (repo / "v.py").read_text() == (after if shutil.which("git") else before)


def test_unparsable_file_message(repo: Path) -> None:
    path = write(repo, "bad.py", "x = (\n")
    with pytest.raises(DefinitionsParseError) as raised:
        plan_source_edits(repo, {})
    assert str(raised.value) == (
        f"cannot parse the Feast definitions file {path}: '(' was never closed (line 1). "
        f"Fix: make it valid Python (`python -m py_compile {path}`), then run again."
    )


@pytest.mark.parametrize("text", ["del f()\n", "x + 1 = 2\n", "def f():\n\tx = 1\n        y = 2\n"])
def test_unparsable_file_raises(repo: Path, text: str) -> None:
    path = write(repo, "bad.py", text)
    with pytest.raises(DefinitionsParseError) as raised:
        plan_source_edits(repo, {"v": ["a"]})
    message = str(raised.value)
    assert message.startswith(f"cannot parse the Feast definitions file {path}: ")
    assert message.endswith(
        f". Fix: make it valid Python (`python -m py_compile {path}`), then run again."
    )
    assert raised.value.path == path
