"""The installed package's version: one source, the package metadata (pyproject.toml)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cae-ray")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
