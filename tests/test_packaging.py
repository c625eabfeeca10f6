"""What `pip install cae-ray` promises: one version source, ranges (not single versions) that
the tested versions satisfy, a license file, type information, project links."""

from __future__ import annotations

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
