"""What `pip install cae-ray` promises: one version source, ranges (not single versions) that
the tested versions satisfy, a license file, type information, project links."""

from __future__ import annotations

import re
from importlib.metadata import metadata, version

import tomllib
from packaging.requirements import Requirement
from typer.testing import CliRunner

from cae_ray.cli import app
from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_version_comes_from_the_package_metadata() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"cae-ray {version('cae-ray')}"
    assert "version" not in PROJECT["project"].get("dynamic", [])  # pyproject is the source


def test_dependencies_are_tested_ranges_not_single_versions() -> None:
    extras = PROJECT["project"]["optional-dependencies"].values()
    for text in [*PROJECT["project"]["dependencies"], *(r for e in extras for r in e)]:
        requirement = Requirement(text)
        assert not any(s.operator == "==" for s in requirement.specifier), text
        if requirement.name in ("ray", "feast"):
            assert "<" in str(requirement.specifier), f"{text}: no upper bound"
            installed = version(requirement.name)
            assert requirement.specifier.contains(installed), f"{text} excludes {installed}"


def test_the_license_type_information_and_links_ship() -> None:
    assert PROJECT["build-system"]["requires"] == ["setuptools>=77"]  # SPDX license strings
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "cae_ray" / "py.typed").exists()
    assert "py.typed" in PROJECT["tool"]["setuptools"]["package-data"]["cae_ray"]
    assert {"Homepage", "Issues"} <= set(PROJECT["project"]["urls"])
    assert metadata("cae-ray")["License-Expression"] == "Apache-2.0"


def test_readme_images_render_on_a_package_index() -> None:
    """A package index shows the README without the repository beside it: each image is an
    absolute URL into the repository, naming a file that is there."""
    images = re.findall(r"!\[[^\]]*\]\(([^)\s]+)", (ROOT / "README.md").read_text())
    assert images
    base = "https://raw.githubusercontent.com/cae-ray/cae-ray/main/"
    for url in images:
        assert url.startswith(base), url
        assert (ROOT / url.removeprefix(base)).is_file(), url
    assert PROJECT["project"]["urls"]["Homepage"] == "https://github.com/cae-ray/cae-ray"


def test_readme_links_into_the_docs_name_pages_that_are_there() -> None:
    """The README is the front door on a package index too: its links into the documentation
    are absolute URLs of pages that exist in docs/ and are in the site's navigation."""
    readme = (ROOT / "README.md").read_text()
    base = "https://github.com/cae-ray/cae-ray/blob/main/docs/"
    pages = re.findall(r"\]\((" + re.escape(base) + r"[^)\s#]+)", readme)
    assert len(set(pages)) >= 8, pages
    navigation = (ROOT / "mkdocs.yml").read_text()
    for url in pages:
        page = url.removeprefix(base)
        assert (ROOT / "docs" / page).is_file(), url
        assert f": {page}\n" in navigation, f"{page} is not in mkdocs.yml's nav"


def test_every_library_the_package_imports_is_declared() -> None:
    """A module imported by cae_ray comes from a declared dependency (or an extra): one that
    arrives only as another package's dependency may leave with its next release."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    declared = {
        canonicalize_name(Requirement(text).name)
        for text in [
            *PROJECT["project"]["dependencies"],
            *(r for extra in PROJECT["project"]["optional-dependencies"].values() for r in extra),
        ]
    }
    declared |= {canonicalize_name("xgboost")}  # the xgboost extra installs xgboost-cpu
    imported: set[str] = set()
    for path in (ROOT / "cae_ray").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"cae_ray", "__future__"}
    providers = packages_distributions()
    undeclared = {
        module: providers.get(module)
        for module in sorted(third_party)
        if not declared & {canonicalize_name(d) for d in providers.get(module, [module])}
    }
    assert undeclared == {}
