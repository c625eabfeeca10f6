"""The tested Ray and Feast range: declared once (cae_ray/versions.py), admitted by
pyproject.toml, pinned at its old end by constraints/oldest.txt, and a warning, once, outside it.
`make test` runs this module on the newest versions and `make test-oldest` on the oldest."""

from __future__ import annotations

import warnings
from importlib.metadata import version

import pytest
import tomllib
from packaging.requirements import Requirement

from cae_ray import versions
from cae_ray.versions import TESTED, UntestedVersionWarning, is_tested, minor, warn_if_untested
from tests.conftest import ROOT

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(name: str) -> list[Requirement]:
    """Every requirement on ``name`` in pyproject.toml: the base and each extra."""
    texts = [
        *PROJECT["dependencies"],
        *(r for e in PROJECT["optional-dependencies"].values() for r in e),
    ]
    return [r for r in map(Requirement, texts) if r.name == name]


@pytest.mark.parametrize("package", sorted(TESTED))
def test_pyproject_admits_both_ends_of_the_tested_range_and_next_minors(package: str) -> None:
    (major, first), (_, last) = (minor(end) for end in TESTED[package])
    found = requirements(package)
    assert found, package
    for requirement in found:  # the extras repeat the same range
        spec = requirement.specifier
        assert spec.contains(f"{major}.{first}.0") and spec.contains(f"{major}.{last}.0")
        assert spec.contains(f"{major}.{last + 3}.0"), f"{requirement}: refuses next minors"
        assert not spec.contains(f"{major}.{first - 1}.0"), f"{requirement}: admits untested"


def test_the_oldest_constraints_pin_the_tested_floor() -> None:
    pins = {
        r.name: str(r.specifier).removeprefix("==")
        for line in (ROOT / "constraints" / "oldest.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
        for r in [Requirement(line.split("#")[0])]
    }
    for package, (oldest, _) in TESTED.items():
        assert minor(pins[package]) == minor(oldest), (package, pins[package])


@pytest.mark.parametrize("package", sorted(TESTED))
def test_the_installed_versions_are_inside_the_tested_range(package: str) -> None:
    """CI runs on both ends: a venv whose Ray or Feast left the range means TESTED is stale."""
    assert is_tested(package, version(package)), (package, version(package), TESTED[package])


def test_inside_the_range_nothing_is_said() -> None:
    warn_if_untested.cache_clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntestedVersionWarning)
        warn_if_untested("ray")
        warn_if_untested("feast")


def test_outside_the_range_a_warning_once_names_the_range(monkeypatch) -> None:
    installed = minor(version("ray"))
    # A tested range that ends two minors before the installed Ray: as if Ray were upgraded.
    monkeypatch.setitem(versions.TESTED, "ray", ("2.0", f"{installed[0]}.{installed[1] - 2}"))
    warn_if_untested.cache_clear()
    with pytest.warns(UntestedVersionWarning) as caught:
        for _ in range(3):
            warn_if_untested("ray")
    warn_if_untested.cache_clear()
    assert len(caught) == 1
    message = str(caught[0].message)
    assert f"ray {version('ray')} is installed" in message
    assert f"tested with ray 2.0 to {installed[0]}.{installed[1] - 2}" in message


def test_minor_reads_release_pre_release_and_local_versions() -> None:
    assert minor("2.51.2") == (2, 51)
    assert minor("0.67.0rc1") == (0, 67)
    assert minor("2.13.0+cpu") == (2, 13)
    assert minor("3.0") == (3, 0)
