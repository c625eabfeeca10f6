"""What differs between the Feast releases cae-ray admits (``feast>=0.55,<1``), in one place.

Code elsewhere calls these instead of branching on Feast's version itself. Each shim names
the releases that need it; when the floor passes them, the shim goes. The tested range is
declared in :mod:`cae_ray.versions`. Nothing here imports Feast (the version comes from the
package metadata), so the planning code that uses it stays cheap.
"""

from __future__ import annotations

from importlib.metadata import version

from cae_ray.versions import minor


def feast_minor() -> tuple[int, int]:
    return minor(version("feast"))


def repo_ignore_patterns() -> list[str]:
    """The patterns ``feast.repo_operations.get_repo_files`` adds to the repo's .feastignore.

    Feast 0.62 made the cache folders' patterns match at any depth; up to 0.61 they match only
    at the repo's root, so Feast imports a nested ``.ipynb_checkpoints/x.py``."""
    fixed = [".git", ".feastignore", ".venv"]
    caches = [".ipynb_checkpoints", ".pytest_cache", "__pycache__"]
    if feast_minor() >= (0, 62):
        return fixed + [f"**/{name}" for name in caches]
    return fixed + caches
