"""A real Feast feature repo on a temp dir, with values whose point-in-time answer is known."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cae_ray.feast.compat import feast_minor

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
T1 = T0 + timedelta(days=10)
"""Each driver's features have one value from T0 and another from T1."""

STATS = [f"s_{j:02d}" for j in range(6)]
EXTRA = ["trips", "rating"]

REGISTRIES = {
    "file": "registry: data/registry.db\n",
    "sql": "registry:\n  registry_type: sql\n  path: sqlite:///{repo}/data/registry.sqlite\n",
    # Relative: `feast apply` (run in the repo) resolves it against the repo.
    "sql-relative": "registry:\n  registry_type: sql\n  path: sqlite:///data/registry.sqlite\n",
}

FEATURE_STORE_YAML = """\
project: cae_ray_test
provider: local
online_store:
  type: sqlite
  path: data/online.db
offline_store:
  type: {offline_store}
{store_options}entity_key_serialization_version: 3
"""
OFFLINE_STORES = ["file", "duckdb"]
"""The offline stores the export is tested on chunk by chunk (``duckdb`` needs the ``duckdb``
extra); Feast's ``ray`` store has tests of its own (it needs a Ray cluster)."""
STORE_OPTIONS = {"ray": "  storage_path: data/ray_storage\n"}


def store_yaml(offline_store: str = "file") -> str:
    """feature_store.yaml without its registry (see ``REGISTRIES``)."""
    options = STORE_OPTIONS.get(offline_store, "")
    return FEATURE_STORE_YAML.format(offline_store=offline_store, store_options=options)


@dataclass(frozen=True)
class FeastRepo:
    path: Path
    entities: Path
    """Entity rows: driver_id, event_timestamp, label."""
    n_drivers: int
    offline_store: str = "file"


def stats_value(driver: int, feature: int, late: bool) -> float:
    """The value of driver_stats feature ``feature`` for ``driver``, as of T0 or T1."""
    return driver * 10.0 + feature + (0.5 if late else 0.0)


def make_feast_repo(
    directory: Path,
    n_drivers: int = 60,
    registry: str = "file",
    offline_store: str = "file",
    file_format: bool | None = None,
) -> FeastRepo:
    """Write the feature data, the repo's feature_store.yaml (with a file or a SQL registry,
    and the ``file``, ``duckdb`` or ``ray`` offline store) and apply its objects. The sources
    name their ``file_format`` when asked, and by default only where the installed Feast needs
    it (its DuckDB store before 0.64: see ``cae_ray.feast.compat.check_duckdb_sources``)."""
    from feast import (
        Entity,
        FeatureService,
        FeatureStore,
        FeatureView,
        Field,
        FileSource,
        ValueType,
    )
    from feast.data_format import ParquetFormat
    from feast.types import Float32, Int64

    if file_format is None:
        file_format = offline_store == "duckdb" and feast_minor() < (0, 64)
    formats: dict[str, Any] = {"file_format": ParquetFormat()} if file_format else {}
    repo = directory / "repo"
    (repo / "data").mkdir(parents=True)
    registry_yaml = REGISTRIES[registry].format(repo=repo.resolve())
    (repo / "feature_store.yaml").write_text(store_yaml(offline_store) + registry_yaml)
    drivers = np.arange(n_drivers)
    rows = []
    for late, when in ((False, T0), (True, T1)):
        for d in drivers:
            values = {s: np.float32(stats_value(int(d), j, late)) for j, s in enumerate(STATS)}
            rows.append({"driver_id": d, "event_timestamp": when, **values})
    pd.DataFrame(rows).to_parquet(repo / "data" / "driver_stats.parquet")
    extra = pd.DataFrame(
        {
            "driver_id": drivers,
            "event_timestamp": T0,
            "trips": drivers * 3,
            "rating": (drivers % 5).astype(np.float32),
        }
    )
    extra.to_parquet(repo / "data" / "driver_extra.parquet")

    driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
    stats = FeatureView(
        name="driver_stats",
        entities=[driver],
        ttl=timedelta(days=365),
        schema=[Field(name=s, dtype=Float32) for s in STATS],
        source=FileSource(
            path=str(repo / "data" / "driver_stats.parquet"),
            timestamp_field="event_timestamp",
            **formats,
        ),
    )
    extra_view = FeatureView(
        name="driver_extra",
        entities=[driver],
        ttl=timedelta(days=365),
        schema=[Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float32)],
        source=FileSource(
            path=str(repo / "data" / "driver_extra.parquet"),
            timestamp_field="event_timestamp",
            **formats,
        ),
    )
    service = FeatureService(name="driver_model", features=[stats[STATS[:3]], extra_view])
    cwd = os.getcwd()
    os.chdir(repo)  # as `feast apply` does: a relative SQLite registry lands in the repo
    try:
        FeatureStore(repo_path=str(repo)).apply([driver, stats, extra_view, service])
    finally:
        os.chdir(cwd)

    # Two rows per driver: one between T0 and T1 (sees T0 values), one after T1.
    entity_rows = pd.DataFrame(
        {
            "driver_id": np.repeat(drivers, 2),
            "event_timestamp": [T0 + timedelta(days=5), T1 + timedelta(days=1)] * n_drivers,
            "label": np.tile([0, 1], n_drivers),
        }
    )
    entities = directory / "entities.parquet"
    entity_rows.to_parquet(entities)
    return FeastRepo(repo, entities, n_drivers, offline_store)


DEFINITIONS = """\
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

from cae_ray.feast.overlay import annotate_all

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=timedelta(days=365),
    schema=[Field(name=s, dtype=Float32) for s in {stats!r}],
    source=FileSource(path={stats_path!r}, timestamp_field="event_timestamp"),
)
driver_extra = FeatureView(
    name="driver_extra",
    entities=[driver],
    ttl=timedelta(days=365),
    schema=[Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float32)],
    source=FileSource(path={extra_path!r}, timestamp_field="event_timestamp"),
)
driver_model = FeatureService(name="driver_model", features=[driver_stats[{kept!r}], driver_extra])

annotate_all(globals())
"""


def feast_cli(repo: Path, command: str) -> str:
    """``feast COMMAND`` through the real CLI, in its own process (as Feast's own tests do);
    its output."""
    import subprocess
    import sys

    feast = Path(sys.executable).parent / "feast"
    done = subprocess.run(
        [str(feast), *command.split()], cwd=repo, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def feast_apply(repo: Path) -> str:
    return feast_cli(repo, "apply")


def feast_plan(repo: Path) -> str:
    """What the next `feast apply` would change."""
    return feast_cli(repo, "plan")


def make_definitions_repo(directory: Path, like: FeastRepo) -> Path:
    """A repo defined in Python (with the overlay hook) over the data of ``like``, applied by
    the real `feast apply`."""
    repo = directory / "defined_repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(store_yaml() + REGISTRIES["file"])
    (repo / "definitions.py").write_text(
        DEFINITIONS.format(
            stats=STATS,
            stats_path=str(like.path / "data" / "driver_stats.parquet"),
            extra_path=str(like.path / "data" / "driver_extra.parquet"),
            kept=STATS[:3],
        )
    )
    feast_apply(repo)
    return repo


STATS_MODULE = """\
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32

from cae_ray.feast.overlay import annotate_all

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
# Wide views build their schema in code.
driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=timedelta(days=365),
    schema=[Field(name=s, dtype=Float32) for s in {stats!r}],
    source=FileSource(path={stats_path!r}, timestamp_field="event_timestamp"),
)

annotate_all(globals())
"""

EXTRA_MODULE = """\
from datetime import timedelta

from feast import FeatureView, Field, FileSource
from feast.types import Float32, Int64

from cae_ray.feast.overlay import annotate_all
from stats import driver

driver_extra = FeatureView(
    name="driver_extra",
    entities=[driver],
    ttl=timedelta(days=365),
    schema=[
        Field(name="trips", dtype=Int64),  # trips in the last 30 days
        Field(name="rating", dtype=Float32),  # the mean rating
    ],
    source=FileSource(path={extra_path!r}, timestamp_field="event_timestamp"),
)

annotate_all(globals())
"""

USERS_MODULE = """\
import pandas as pd
from feast import FeatureService, Field
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64

from extra import driver_extra
from stats import driver_stats

driver_model = FeatureService(name="driver_model", features=[driver_stats[["s_02"]]])


@on_demand_feature_view(
    sources=[driver_extra[["rating"]]], schema=[Field(name="rating_x2", dtype=Float64)]
)
def rating_x2(inputs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({{"rating_x2": inputs["rating"] * 2.0}})
"""


def make_two_module_repo(directory: Path, like: FeastRepo, users: bool = False) -> Path:
    """A repo over the data of ``like`` in two definitions modules: ``stats.py`` builds its
    schema with a comprehension, ``extra.py`` lists literal ``Field`` s (with comments); with
    ``users``, a third module holds a FeatureService reading ``driver_stats:s_02`` and an
    on-demand view reading ``driver_extra:rating``. Applied by the real `feast apply`."""
    repo = directory / "two_module_repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(store_yaml() + REGISTRIES["file"])
    data = like.path / "data"
    stats_path, extra_path = str(data / "driver_stats.parquet"), str(data / "driver_extra.parquet")
    (repo / "stats.py").write_text(STATS_MODULE.format(stats=STATS, stats_path=stats_path))
    (repo / "extra.py").write_text(EXTRA_MODULE.format(extra_path=extra_path))
    if users:
        (repo / "users.py").write_text(USERS_MODULE.format())
    feast_apply(repo)
    return repo


LABELLED_DEFINITIONS = """\
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64, String

from cae_ray.feast.overlay import annotate_all

driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)
driver_stats = FeatureView(
    name="driver_stats",
    entities=[driver],
    ttl=timedelta(days=365),
    schema=[Field(name=s, dtype=Float32) for s in {stats!r}],
    source=FileSource(path={stats_path!r}, timestamp_field="event_timestamp"),
)
driver_extra = FeatureView(
    name="driver_extra",
    entities=[driver],
    ttl=timedelta(days=365),
    schema=[Field(name="trips", dtype=Int64), Field(name="rating", dtype=Float32)],
    source=FileSource(path={extra_path!r}, timestamp_field="event_timestamp"),
)
# The labels live in the store too, in a view of their own.
driver_labels = FeatureView(
    name="driver_labels",
    entities=[driver],
    ttl=timedelta(days=365),
    schema=[
        Field(name="churned", dtype=Int64),
        Field(name="upsell", dtype=Int64),
        Field(name="segment", dtype=String),
    ],
    source=FileSource(path={labels_path!r}, timestamp_field="event_timestamp"),
)
# The team's own service, written by hand: it reads some of the features.
driver_model = FeatureService(name="driver_model", features=[driver_stats[{read!r}]])

annotate_all(globals())
"""
LABELLED_READ = ["s_00", "s_04"]
"""The features the team's own FeatureService ``driver_model`` reads in the labelled repo."""


def make_labelled_repo(directory: Path, like: FeastRepo) -> Path:
    """A repo defined in Python (with the overlay hook) over the data of ``like``, plus a label
    view ``driver_labels`` whose ``churned`` is, as of each entity row's time, the entity rows'
    own ``label`` (0 as of T0, 1 as of T1); ``upsell`` is the driver's parity, ``segment`` a
    string. Applied by the real `feast apply`."""
    repo = directory / "labelled_repo"
    (repo / "data").mkdir(parents=True)
    (repo / "feature_store.yaml").write_text(store_yaml() + REGISTRIES["file"])
    drivers = np.arange(like.n_drivers)
    labels = pd.DataFrame(
        {
            "driver_id": np.concatenate([drivers, drivers]),
            "event_timestamp": [T0] * like.n_drivers + [T1] * like.n_drivers,
            "churned": np.repeat([0, 1], like.n_drivers),
            "upsell": np.concatenate([drivers % 2, drivers % 2]),
            "segment": np.where(np.concatenate([drivers, drivers]) % 3 == 0, "a", "b"),
        }
    )
    labels.to_parquet(repo / "data" / "driver_labels.parquet")
    (repo / "definitions.py").write_text(
        LABELLED_DEFINITIONS.format(
            stats=STATS,
            stats_path=str(like.path / "data" / "driver_stats.parquet"),
            extra_path=str(like.path / "data" / "driver_extra.parquet"),
            labels_path=str(repo / "data" / "driver_labels.parquet"),
            read=LABELLED_READ,
        )
    )
    feast_apply(repo)
    return repo


def entities_without_label(like: FeastRepo, to: Path) -> Path:
    """``like``'s entity rows without their label column: join key and time only."""
    rows = pd.read_parquet(like.entities).drop(columns=["label"])
    rows.to_parquet(to)
    return to
