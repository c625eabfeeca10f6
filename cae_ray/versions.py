"""The Ray and Feast releases cae-ray is tested with, declared once.

``pyproject.toml`` admits wider ranges (``ray>=2.51,<3``, ``feast>=0.55,<1``) so that next
month's minor release installs; CI runs the tests on both ends of the ranges below (``make
test`` and ``make test-oldest``). A version outside them works as far as anyone knows, but
nobody has run it: cae-ray says so once per process, as a warning, and carries on.

This module imports neither Ray nor Feast: it reads the installed versions from the package
metadata.
"""

from __future__ import annotations

import warnings
from functools import cache
from importlib.metadata import PackageNotFoundError, version

TESTED: dict[str, tuple[str, str]] = {
    "ray": ("2.51", "2.60"),
    "feast": ("0.55", "0.67"),
}
"""Per package: the oldest and the newest minor release the tests run on (both inclusive)."""


class UntestedVersionWarning(UserWarning):
    """The installed Ray or Feast lies outside the range cae-ray is tested with."""


def minor(text: str) -> tuple[int, int]:
    """``"2.51.2"`` -> ``(2, 51)``; pre-releases and local labels count as their minor."""
    major, _, rest = text.partition(".")
    digits = "".join(c for c in rest.partition(".")[0] if c.isdigit())
    return int(major), int(digits or 0)


def tested_range(package: str) -> str:
    """The tested range in words, e.g. ``"ray 2.51 to 2.60"``."""
    oldest, newest = TESTED[package]
    return f"{package} {oldest} to {newest}"


def is_tested(package: str, installed: str) -> bool:
    oldest, newest = TESTED[package]
    return minor(oldest) <= minor(installed) <= minor(newest)


@cache
def warn_if_untested(package: str) -> None:
    """Warn, once per process, when the installed ``package`` is outside its tested range."""
    try:
        installed = version(package)
    except PackageNotFoundError:  # not installed: whoever imports it raises the real error
        return
    if not is_tested(package, installed):
        warnings.warn(
            f"{package} {installed} is installed; cae-ray is tested with {tested_range(package)}. "
            "It may work, but nobody has run the tests on it: report what breaks.",
            UntestedVersionWarning,
            stacklevel=2,
        )
