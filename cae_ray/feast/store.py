"""Opening a Feast repo's FeatureStore, and the quirks of Feast's offline stores that every
part of cae-ray's Feast integration must know: which store a repo uses, the extras it needs,
and what Feast's Ray store changes process-wide.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from cae_ray.feast import backup, import_feast
from cae_ray.feast.errors import FeastApplyError, FeastRepoError, MissingFeastExtraError

RAY_STORE_TYPES = ("ray", "feast.offline_stores.contrib.ray_offline_store.ray.RayOfflineStore")
"""What feature_store.yaml may call Feast's Ray offline store."""
_STORE_EXTRAS = {"duckdb": ("duckdb", ["duckdb", "ibis"])}
"""Offline store type -> (the cae-ray extra that installs it, the packages Feast imports for it)."""


def is_ray_store(store: Any) -> bool:
    return store.config.offline_store.type in RAY_STORE_TYPES


def open_store(repo: str) -> Any:
    """The repo's FeatureStore, with its registry read fresh."""
    if not (Path(repo) / "feature_store.yaml").is_file():
        raise FeastRepoError(repo, "no feature_store.yaml there")
    _check_store_packages(repo)
    import_feast()  # keeps our warning filters
    from feast import FeatureStore
    from feast.repo_config import load_repo_config

    config = None
    try:
        config = load_repo_config(Path(repo), Path(repo) / "feature_store.yaml")
        registry_in_repo(config.registry, Path(repo))
        path = backup.registry_file(Path(repo), config.registry)
        if path is not None:  # a write cut short: Feast could not read it (recover() ends it)
            backup.repair(Path(repo), path)
        store = FeatureStore(repo_path=repo, config=config)
        store.refresh_registry()
    except Exception as e:  # Feast raises many kinds here: bad YAML, unreadable registry, ...
        where = None if config is None else getattr(config.registry, "path", None)
        registry = f" (registry {where})" if where else ""  # the path it resolved, if it did
        problem = f"{type(e).__name__}: {str(e).splitlines()[0]}{registry}"
        raise FeastRepoError(repo, problem) from e
    return store


def registry_in_repo(registry: Any, repo: Path) -> None:
    """A SQL registry's relative SQLite path, made absolute against the repo: `feast apply` runs
    in the repo and resolves it there, so cae-ray, run from anywhere, must read the same file
    (SQLAlchemy would resolve it against the working directory and find an empty registry)."""
    path = str(getattr(registry, "path", ""))
    if getattr(registry, "registry_type", None) != "sql" or not path.startswith("sqlite:///"):
        return
    database = Path(path.removeprefix("sqlite:///"))
    if not database.is_absolute():
        registry.path = f"sqlite:///{(repo / database).resolve()}"


def _check_store_packages(repo: str) -> None:
    """Name the cae-ray extra when the repo's offline store needs packages that are missing:
    Feast itself only says it could not import ``feast.infra.offline_stores.duckdb``."""
    try:
        settings = yaml.safe_load((Path(repo) / "feature_store.yaml").read_text())
        store_type = settings["offline_store"]["type"]
    except Exception:  # unreadable or unusual YAML (a plain string type, ...): Feast reports it
        return
    extra, packages = _STORE_EXTRAS.get(store_type, (None, []))
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if extra is not None and missing:
        raise MissingFeastExtraError(repo, f"offline_store type {store_type!r}", missing, extra)


def feast_apply(repo: Path) -> subprocess.CompletedProcess[str]:
    """`feast apply` in ``repo`` through Feast's own CLI, in its own process: it imports the
    repo's definitions and changes the working directory, which a library must not do."""
    return subprocess.run(
        [sys.executable, "-c", "from feast.cli.cli import cli; cli()", "apply"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )


PLAN = """
import json, sys
from pathlib import Path
sys.dont_write_bytecode = True
sys.path.insert(0, ".")  # the definitions import each other, as under `feast apply`
from feast import FeatureStore
from feast.repo_operations import parse_repo
store = FeatureStore(repo_path=".")
diff, _, _ = store.plan(parse_repo(Path(".").resolve()))
changes = [
    [str(d.feast_object_type.value), d.name, d.transition_type.name]
    for d in diff.feast_object_diffs
]
print(json.dumps(changes))
"""


def feast_plan_changes(repo: Path) -> list[tuple[str, str, str]]:
    """What `feast apply` in ``repo`` would do to the registry: (object type, name, CREATE /
    UPDATE / DELETE) for each object it would change, as Feast's own plan computes it (in its
    own process, like :func:`feast_apply`). The project itself is left out: its definitions
    need not name it."""
    done = subprocess.run(
        [sys.executable, "-c", PLAN], cwd=repo, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise FeastApplyError(str(repo), done.stdout + done.stderr)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return [
        (kind, name, transition)
        for kind, name, transition in found
        if transition != "UNCHANGED" and kind != "project"
    ]


def rows_of(job: Any) -> pa.Table | None:
    """A Feast retrieval job's rows, or None where Feast's ray store found none.

    The ray store asks its filtered dataset for a schema, and Ray has none for a dataset
    without rows: Feast then raises ``RuntimeError`` from that ``AttributeError``. Only that
    case means "no rows"; any other failure (and any other store's) is raised as it is.
    """
    try:
        table: pa.Table = job.to_arrow()
    except RuntimeError as e:
        cause = e.__cause__ or e.__context__
        if isinstance(cause, AttributeError) and "'names'" in str(cause):
            return None
        raise
    return table


@contextmanager
def feast_side_effects_undone() -> Iterator[None]:
    """Run Feast's Ray store, then put back what its Ray setup changes process-wide."""
    from ray.data import DataContext

    data_context = DataContext.get_current().copy()
    environ = dict(os.environ)
    levels = _ray_logger_levels()
    with warnings.catch_warnings():
        # Feast calls read_parquet(columns=...), deprecated in Ray 2.60: not ours to fix.
        warnings.filterwarnings("ignore", "`columns=` on `read_parquet`", DeprecationWarning)
        try:
            yield
        finally:
            DataContext._set_current(data_context)
            for name in set(os.environ) - set(environ):
                del os.environ[name]
            os.environ.update(environ)
            for name in _ray_logger_levels():
                logging.getLogger(name).setLevel(levels.get(name, logging.NOTSET))


def _ray_logger_levels() -> dict[str, int]:
    names = ["ray", *(n for n in logging.root.manager.loggerDict if n.startswith("ray."))]
    return {name: logging.getLogger(name).level for name in names}
