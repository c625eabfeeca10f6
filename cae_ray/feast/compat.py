"""What differs between the Feast releases cae-ray admits (``feast>=0.55,<1``), in one place.

Code elsewhere calls these instead of branching on Feast's version itself. Each shim names
the releases that need it; when the floor passes them, the shim goes. The tested range is
declared in :mod:`cae_ray.versions`. Nothing here imports Feast (the version comes from the
package metadata), so the planning code that uses it stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import version
from typing import Any

from cae_ray.feast.errors import FeastTooOldError
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


def ray_dataset(job: Any) -> Any:
    """The Ray offline store's answer as a Ray Dataset, left on the cluster. Feast 0.63 made
    the method public (``to_ray_dataset``); 0.55 to 0.62 have the same one as
    ``_get_ray_dataset``."""
    if feast_minor() >= (0, 63):
        return job.to_ray_dataset()
    return job._get_ray_dataset()


def check_duckdb_sources(store: Any, views: Iterable[str]) -> None:
    """Before Feast 0.64 the DuckDB offline store reads a FileSource only when its
    ``file_format`` is set; without one Feast fails deep in ibis (``'NoneType' object has no
    attribute 'mutate'``). 0.64 reads a ``.parquet`` path without it. Say so before exporting."""
    if feast_minor() >= (0, 64) or store.config.offline_store.type != "duckdb":
        return
    for view in dict.fromkeys(views):
        source = store.get_feature_view(view).batch_source
        if getattr(source, "file_format", True) is None:
            raise FeastTooOldError(
                version("feast"),
                "0.64",
                f"read the FileSource of feature view {view!r} with the DuckDB offline store: "
                "the source has no file_format",
                "give that FileSource file_format=ParquetFormat() (from feast.data_format) "
                "and `feast apply`",
            )
