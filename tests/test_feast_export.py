"""`cae-ray export` against a real Feast repo (local provider; file, DuckDB and Ray offline
stores)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cae_ray.artifacts import EXPORT_DIR, EXPORT_MANIFEST
from cae_ray.config import Config, validate_config
from cae_ray.errors import ConfigValidationError
from cae_ray.feast.compat import feast_minor
from cae_ray.feast.entities import ROW_ID
from cae_ray.feast.errors import (
    EmptyTimeRangeError,
    EntityColumnsMissingError,
    FeastRepoError,
    FeastTooOldError,
    MissingFeastExtraError,
    RayStoreStoragePathError,
    UnknownFeatureError,
    UnknownFeatureViewError,
)
from cae_ray.pipeline import export
from tests.feast_repo import (
    EXTRA,
    OFFLINE_STORES,
    STATS,
    T0,
    T1,
    FeastRepo,
    make_feast_repo,
    stats_value,
)

pytestmark = pytest.mark.feast


@pytest.fixture(scope="module")
def feast_repo(tmp_path_factory) -> FeastRepo:
    return make_feast_repo(tmp_path_factory.mktemp("feast"))


@pytest.fixture(scope="module", params=OFFLINE_STORES)
def store_repo(request, tmp_path_factory) -> FeastRepo:
    """The same repo on each offline store the export supports."""
    directory = tmp_path_factory.mktemp(f"feast-{request.param}")
    return make_feast_repo(directory, offline_store=request.param)


def feast_config(feast_repo: FeastRepo, **feast: Any) -> Config:
    section = {"repo": str(feast_repo.path), "entities": str(feast_repo.entities), "chunk_rows": 50}
    return validate_config({"feast": {**section, **feast}})


def assert_point_in_time_values(rows: Any) -> None:
    """Each row's driver_stats values are those as of its timestamp (T0's, or T1's after T1)."""
    late = rows["event_timestamp"] > T1
    for j, name in enumerate(STATS):
        expected = [
            stats_value(d, j, bool(t)) for d, t in zip(rows["driver_id"], late, strict=True)
        ]
        np.testing.assert_allclose(rows[f"driver_stats__{name}"], expected)


def test_export_is_point_in_time_correct_and_keeps_the_entity_order(store_repo, tmp_path) -> None:
    feast_repo = store_repo
    manifest = export(
        feast_config(feast_repo, features=["driver_stats", "driver_extra:trips"]), tmp_path
    )

    table = pq.read_table(tmp_path / EXPORT_DIR)
    columns = [f"driver_stats__{s}" for s in STATS] + ["driver_extra__trips"]
    assert manifest.columns == {
        **{f"driver_stats__{s}": f"driver_stats:{s}" for s in STATS},
        "driver_extra__trips": "driver_extra:trips",
    }
    assert table.schema.names == ["driver_id", "event_timestamp", "label", ROW_ID, *columns]
    assert table.schema.field("driver_stats__s_00").type == pa.float32()
    assert table.schema.field("driver_extra__trips").type == pa.int64()
    assert manifest.rows == table.num_rows == 2 * feast_repo.n_drivers
    assert manifest.parts == 3  # 120 rows in chunks of 50
    assert manifest.offline_store == feast_repo.offline_store

    rows = table.to_pandas()
    assert rows[ROW_ID].tolist() == list(range(len(rows)))
    entities = pq.read_table(feast_repo.entities).to_pandas()
    assert rows[entities.columns].equals(entities)  # the entity rows, as given and in order
    assert_point_in_time_values(rows)
    np.testing.assert_array_equal(rows["driver_extra__trips"], rows["driver_id"] * 3)


def test_entity_rows_repeating_keys_and_time_each_get_their_features(store_repo, tmp_path) -> None:
    # The file store keeps one of the rows that share join keys and timestamp; DuckDB keys its
    # joins on them. Repeats, in a shuffled order and split across chunks, must all be answered.
    given = pq.read_table(store_repo.entities)
    order = np.random.default_rng(0).permutation(np.r_[np.arange(given.num_rows), [0, 0, 7, 7, 7]])
    rows_in = given.take(order)
    label = rows_in.schema.get_field_index("label")
    rows_in = rows_in.set_column(label, "label", pa.array(np.arange(rows_in.num_rows)))
    pq.write_table(rows_in, tmp_path / "repeats.parquet")
    config = feast_config(
        store_repo, features=["driver_stats"], entities=str(tmp_path / "repeats.parquet")
    )

    manifest = export(config, tmp_path / "run")
    rows = pq.read_table(tmp_path / "run" / EXPORT_DIR).to_pandas()
    assert manifest.rows == len(rows) == rows_in.num_rows
    assert rows["label"].tolist() == list(range(len(rows)))  # each row once, in the given order
    assert rows[ROW_ID].tolist() == list(range(len(rows)))
    assert_point_in_time_values(rows)


def test_a_second_export_reuses_the_first(feast_repo, tmp_path) -> None:
    config = feast_config(feast_repo, features=["driver_extra"])
    first = export(config, tmp_path)
    parts = sorted((tmp_path / EXPORT_DIR).glob("part-*.parquet"))
    stamps = [p.stat().st_mtime_ns for p in parts]

    assert export(config, tmp_path) == first
    assert [p.stat().st_mtime_ns for p in parts] == stamps


def test_export_of_a_feature_service(store_repo, tmp_path) -> None:
    manifest = export(feast_config(store_repo, feature_service="driver_model"), tmp_path)

    expected = [f"driver_stats:{s}" for s in STATS[:3]] + [f"driver_extra:{e}" for e in EXTRA]
    assert list(manifest.columns.values()) == expected
    saved = json.loads((tmp_path / EXPORT_MANIFEST).read_text())
    assert saved == manifest.as_json()


@pytest.mark.parametrize(
    ("feast", "error", "message"),
    [
        ({"features": ["driver_stat"]}, UnknownFeatureViewError, "Did you mean 'driver_stats'"),
        ({"features": ["driver_stats:s_99"]}, UnknownFeatureError, "has no feature 's_99'"),
        ({"feature_service": "nope"}, UnknownFeatureViewError, "no feature service 'nope'"),
        (
            {"features": ["driver_stats"], "timestamp_column": "ts"},
            EntityColumnsMissingError,
            "lack column",
        ),
        (
            {"features": ["driver_stats"], "repo": "/no/such/repo"},
            FeastRepoError,
            "no feature_store",
        ),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(
    feast_repo, tmp_path, feast: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        export(feast_config(feast_repo, **feast), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_views_and_a_service_together_are_a_config_error(feast_repo) -> None:
    with pytest.raises(ConfigValidationError, match=r"either feast\.features"):
        feast_config(feast_repo, features=["driver_stats"], feature_service="driver_model")


def test_entity_rows_missing_a_join_key(feast_repo, tmp_path) -> None:
    rows = pq.read_table(feast_repo.entities).drop_columns(["driver_id"])
    pq.write_table(rows, tmp_path / "entities.parquet")
    config = feast_config(
        feast_repo, features=["driver_stats"], entities=str(tmp_path / "entities.parquet")
    )
    with pytest.raises(EntityColumnsMissingError, match="'driver_id'"):
        export(config, tmp_path / "run")
    assert not Path(tmp_path / "run").exists()


@pytest.mark.ray
def test_the_cli_export_feeds_prepare(ray_cluster, feast_repo, tmp_path) -> None:
    from typer.testing import CliRunner

    from cae_ray.cli import app
    from cae_ray.pipeline import prepare

    config = feast_config(feast_repo, features=["driver_stats"])
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    result = CliRunner().invoke(app, ["export", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "Exported 120 rows x 6 features" in " ".join(result.output.split())

    data = {"path": str(tmp_path / "run" / EXPORT_DIR), "features": "driver_stats__*"}
    selecting = validate_config(
        {
            "data": {**data, "target": "label", "row_key": ROW_ID},
            "selector": {"k": 2},
            "scaling": {"num_workers": 1, "resources_per_worker": {"CPU": 1}},
        }
    )
    prepared = prepare(selecting, tmp_path / "run")
    assert prepared.features == [f"driver_stats__{s}" for s in STATS]
    assert prepared.rows.train + prepared.rows.validation == 120


def test_the_cli_names_an_unknown_view(feast_repo, tmp_path) -> None:
    from typer.testing import CliRunner

    from cae_ray.cli import app
    from cae_ray.errors import EXIT_CONFIG

    path = tmp_path / "config.json"
    path.write_text(feast_config(feast_repo, features=["driver_stat"]).model_dump_json())
    result = CliRunner().invoke(app, ["export", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == EXIT_CONFIG
    assert "Did you mean 'driver_stats'" in " ".join(result.output.split())  # rich wraps lines


def test_an_unreadable_registry_is_named_and_left_alone(feast_repo, tmp_path) -> None:
    import shutil

    broken = tmp_path / "repo"
    shutil.copytree(feast_repo.path, broken)
    (broken / "data" / "registry.db").write_bytes(b"not a registry")
    config = feast_config(feast_repo, features=["driver_stats"], repo=str(broken))

    with pytest.raises(FeastRepoError, match="cannot open the Feast repo"):
        export(config, tmp_path / "run")
    assert (broken / "data" / "registry.db").read_bytes() == b"not a registry"
    assert not (tmp_path / "run").exists()


def test_a_duckdb_source_without_file_format_exports_or_names_the_feast_it_needs(
    tmp_path,
) -> None:
    pytest.importorskip("duckdb")
    repo = make_feast_repo(tmp_path / "feast", offline_store="duckdb", file_format=False)
    config = feast_config(repo, features=["driver_stats"])
    if feast_minor() >= (0, 64):  # reads a .parquet path without a file_format
        assert export(config, tmp_path / "run").rows == 2 * repo.n_drivers
        return
    with pytest.raises(FeastTooOldError, match=r"0\.64 or later.*file_format=ParquetFormat\(\)"):
        export(config, tmp_path / "run")
    assert not (tmp_path / "run" / EXPORT_DIR).exists()


def test_a_duckdb_repo_without_duckdb_names_the_extra(feast_repo, tmp_path, monkeypatch) -> None:
    import shutil
    import sys

    repo = tmp_path / "repo"
    shutil.copytree(feast_repo.path, repo)
    yaml_path = repo / "feature_store.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("type: file", "type: duckdb"))
    monkeypatch.setitem(sys.modules, "duckdb", None)  # as if duckdb were not installed
    config = feast_config(feast_repo, features=["driver_stats"], repo=str(repo))

    with pytest.raises(MissingFeastExtraError, match=r"pip install 'cae-ray\[duckdb\]'"):
        export(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_cli_names_the_missing_extra(feast_repo, tmp_path, monkeypatch) -> None:
    import shutil
    import sys

    from typer.testing import CliRunner

    from cae_ray.cli import app
    from cae_ray.errors import EXIT_CONFIG

    repo = tmp_path / "repo"
    shutil.copytree(feast_repo.path, repo)
    yaml_path = repo / "feature_store.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("type: file", "type: duckdb"))
    monkeypatch.setitem(sys.modules, "duckdb", None)
    path = tmp_path / "config.json"
    config = feast_config(feast_repo, features=["driver_stats"], repo=str(repo))
    path.write_text(config.model_dump_json())

    result = CliRunner().invoke(app, ["export", str(path), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == EXIT_CONFIG
    assert "pip install 'cae-ray[duckdb]'" in " ".join(result.output.split())


# --- Feast's Ray offline store ----------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_repo(tmp_path_factory) -> FeastRepo:
    return make_feast_repo(tmp_path_factory.mktemp("feast-ray"), offline_store="ray")


def context_state() -> dict[str, Any]:
    """What Feast's Ray setup changes process-wide, and the training after an export reads."""
    import logging
    import os

    from ray.data import DataContext

    context = DataContext.get_current()
    fields = [
        "shuffle_strategy",
        "enable_tensor_extension_casting",
        "enable_arrow_backed_pandas_conversion",
        "read_op_min_num_blocks",
        "enable_progress_bars",
        "target_max_block_size",
    ]
    return {  # Ray 2.51's DataContext lacks some of them
        **{f: getattr(context, f, None) for f in fields},
        "environ": dict(os.environ),
        "ray log level": logging.getLogger("ray").level,
        "ray.data log level": logging.getLogger("ray.data").level,
    }


@pytest.mark.ray
def test_the_ray_store_answers_every_row_on_the_cluster(ray_cluster, ray_repo, tmp_path) -> None:
    # Repeated (keys, timestamp) rows, shuffled: the ray store, too, answers such rows once.
    given = pq.read_table(ray_repo.entities)
    order = np.random.default_rng(1).permutation(np.r_[np.arange(given.num_rows), [3, 3, 9]])
    rows_in = given.take(order)
    label = rows_in.schema.get_field_index("label")
    rows_in = rows_in.set_column(label, "label", pa.array(np.arange(rows_in.num_rows)))
    pq.write_table(rows_in, tmp_path / "repeats.parquet")
    config = feast_config(
        ray_repo,
        features=["driver_stats", "driver_extra:trips"],
        entities=str(tmp_path / "repeats.parquet"),
    )
    before = context_state()

    manifest = export(config, tmp_path / "run")

    assert context_state() == before  # the training that follows in `cae-ray run` is unaffected
    out = tmp_path / "run" / EXPORT_DIR
    assert sorted(p.name for p in out.iterdir()) == [
        Path(EXPORT_MANIFEST).name,
        *(f"part-{i:05d}.parquet" for i in range(manifest.parts)),
    ]
    table = pq.read_table(out)
    assert manifest.offline_store == "ray"
    assert manifest.rows == table.num_rows == rows_in.num_rows
    assert table.schema.field("driver_stats__s_00").type == pa.float32()  # Feast gave float64
    assert table.schema.field("driver_extra__trips").type == pa.int64()
    rows = table.to_pandas().sort_values(ROW_ID).reset_index(drop=True)
    assert rows[ROW_ID].tolist() == list(range(len(rows)))  # each entity row exactly once
    assert rows[rows_in.schema.names].equals(rows_in.to_pandas())  # as given
    assert_point_in_time_values(rows)
    np.testing.assert_array_equal(rows["driver_extra__trips"], rows["driver_id"] * 3)


def test_a_ray_store_without_storage_path_is_refused_first(ray_repo, tmp_path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(ray_repo.path, repo)
    yaml_path = repo / "feature_store.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("  storage_path: data/ray_storage\n", ""))
    config = feast_config(ray_repo, features=["driver_stats"], repo=str(repo))

    with pytest.raises(RayStoreStoragePathError, match="storage_path: data/ray_storage"):
        export(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_unreachable_ray_address_of_the_store_is_named_and_nothing_written(
    ray_repo, tmp_path
) -> None:
    import shutil
    import subprocess
    import sys

    from cae_ray.errors import EXIT_CLUSTER

    repo = tmp_path / "repo"
    shutil.copytree(ray_repo.path, repo)
    yaml_path = repo / "feature_store.yaml"
    yaml_path.write_text(
        yaml_path.read_text().replace(
            "  storage_path: data/ray_storage\n",
            "  storage_path: data/ray_storage\n  ray_address: 127.0.0.1:1\n",
        )
    )
    path = tmp_path / "config.json"
    path.write_text(
        feast_config(ray_repo, features=["driver_stats"], repo=str(repo)).model_dump_json()
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a fresh process: no Ray

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cae_ray.cli",
            "export",
            str(path),
            "--run-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == EXIT_CLUSTER, done.stderr[-2000:]
    message = " ".join(done.stderr.split())
    assert "'127.0.0.1:1'" in message and "offline_store.ray_address in" in message
    assert not (tmp_path / "run").exists()


# --- a time range instead of entity rows ------------------------------------------------------


def range_config(feast_repo: FeastRepo, **feast: Any) -> Config:
    section = {"repo": str(feast_repo.path), "features": ["driver_stats", "driver_extra:trips"]}
    return validate_config({"feast": {**section, **feast}})


def test_a_time_range_exports_each_feature_row_as_of_its_time(store_repo, tmp_path) -> None:
    end = T1 + timedelta(days=1)
    config = range_config(store_repo, start=T0.isoformat(), end=end.isoformat())

    manifest = export(config, tmp_path)

    rows = pq.read_table(tmp_path / EXPORT_DIR).to_pandas()
    # driver_stats has a row at T0 and at T1 per driver, driver_extra one at T0: 2 times each.
    assert manifest.rows == len(rows) == 2 * store_repo.n_drivers
    assert manifest.entity_columns == ["driver_id", "event_timestamp"]
    assert rows["event_timestamp"].is_monotonic_increasing  # in time order
    assert not rows.duplicated(["driver_id", "event_timestamp"]).any()
    late = rows["event_timestamp"] >= T1  # each row sees the feature row of its own time
    for j, name in enumerate(STATS):
        pairs = zip(rows["driver_id"], late, strict=True)
        expected = [stats_value(d, j, bool(t)) for d, t in pairs]
        np.testing.assert_allclose(rows[f"driver_stats__{name}"], expected)
    np.testing.assert_array_equal(rows["driver_extra__trips"], rows["driver_id"] * 3)


def test_a_time_range_keeps_only_the_rows_inside_it(feast_repo, tmp_path) -> None:
    config = range_config(feast_repo, features=["driver_stats"], start=T1.isoformat())  # to now

    export(config, tmp_path)

    rows = pq.read_table(tmp_path / EXPORT_DIR).to_pandas()
    assert len(rows) == feast_repo.n_drivers and (rows["event_timestamp"] == T1).all()


def test_an_empty_time_range_is_named_and_nothing_is_written(feast_repo, tmp_path) -> None:
    config = range_config(feast_repo, start="2020-01-01", end="2020-12-31")
    with pytest.raises(EmptyTimeRangeError, match=r"widen feast\.start"):
        export(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.ray
def test_the_ray_store_takes_a_time_range_even_where_a_view_has_no_rows(
    ray_cluster, ray_repo, tmp_path
) -> None:
    # Feast's ray store fails on a view without rows in the range (driver_extra has none
    # after T0) rather than answering none: the other view's rows are still exported.
    config = range_config(ray_repo, start=T1.isoformat())

    export(config, tmp_path / "run")

    rows = pq.read_table(tmp_path / "run" / EXPORT_DIR).to_pandas()
    assert len(rows) == ray_repo.n_drivers and (rows["event_timestamp"] == T1).all()
    np.testing.assert_array_equal(rows["driver_extra__trips"], rows["driver_id"] * 3)

    empty = range_config(ray_repo, start="2020-01-01", end="2020-12-31")
    with pytest.raises(EmptyTimeRangeError, match=r"widen feast\.start"):
        export(empty, tmp_path / "empty")
    assert not (tmp_path / "empty").exists()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"entities": "rows.parquet", "start": "2026-01-01"}, "not both"),
        ({"end": "2026-01-01"}, "feast.end needs feast.start"),
        ({"start": "2026-02-01", "end": "2026-01-01"}, "is after feast.end"),
    ],
)
def test_bad_time_ranges_are_config_errors(feast_repo, section, message) -> None:
    with pytest.raises(ConfigValidationError, match=message):
        range_config(feast_repo, **section)


@pytest.mark.feast
def test_a_relative_sqlite_registry_is_read_from_the_repo_wherever_cae_ray_runs(
    tmp_path, monkeypatch
) -> None:
    from cae_ray.feast.store import open_store
    from tests.feast_repo import make_feast_repo

    repo = make_feast_repo(tmp_path / "made", n_drivers=4, registry="sql-relative")
    assert (repo.path / "data" / "registry.sqlite").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = open_store(str(repo.path))
    assert {v.name for v in store.list_feature_views()} == {"driver_stats", "driver_extra"}
    assert list(elsewhere.iterdir()) == []  # no empty registry made where it ran


def test_entity_rows_with_no_feature_value_in_the_ttl_are_named(feast_repo, tmp_path) -> None:
    """Rows dated in 2099, before the views' history, or a day before the first feature row: the
    file store leaves them out of its answer. The export names how many and shows two, with
    their timestamps and the TTL (it said "report it with the Feast version")."""
    import subprocess
    import sys
    from datetime import datetime, timezone

    import pandas as pd

    rows = pd.read_parquet(feast_repo.entities)
    rows.loc[3, "event_timestamp"] = datetime(2099, 1, 1, tzinfo=timezone.utc)
    rows.loc[8, "event_timestamp"] = T0 - timedelta(days=400)
    rows.loc[9, "event_timestamp"] = T0 - timedelta(days=1)
    entities = tmp_path / "entities.parquet"
    rows.to_parquet(entities)
    config = feast_config(feast_repo, features=["driver_stats"], entities=str(entities))
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    run_dir = tmp_path / "run"

    command = [sys.executable, "-m", "cae_ray.cli", "export", str(path), "--run-dir", str(run_dir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    message = " ".join(done.stderr.split())
    assert done.returncode == 3, done.stderr[-3000:]  # bad input, not "report it to Feast"
    assert "3 of the 120 entity rows have no feature value within the views' TTL" in message
    assert "driver_stats: 365 days" in message
    assert "driver_id=1 at 2099-01-01 00:00:00+00:00" in message
    assert "driver_id=4 at 2024-11-27 00:00:00+00:00" in message
    assert "Traceback" not in done.stderr and "report it" not in message
    assert not (run_dir / EXPORT_MANIFEST).exists()
    assert not list((run_dir / EXPORT_DIR).glob("part-*.parquet"))  # the export was refused


# --- a full disk --------------------------------------------------------------------------------
# The run dir's disk fills up while `cae-ray export` writes its parts or `cae-ray select`
# prepares its splits: a typed error (exit 2) names the file and the room, nothing cut short
# stays under its name, and the same command works once space is freed.


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory) -> FeastRepo:
    """4,000 entity rows: an export of about 135 kB in 4 parts, packed splits of about 130 kB."""
    return make_feast_repo(tmp_path_factory.mktemp("feast-big"), n_drivers=2000)


def cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from cae_ray.cli import app

    return CliRunner().invoke(app, list(args))


def files_beside(mount: Path, filler: Path) -> list[Path]:
    """Every file on the small disk but the filler: hidden partial files count."""
    return [p for p in mount.rglob("*") if p.is_file() and p != filler]


def refused_for_a_full_disk(result: Any, where: str, needs: str) -> None:
    """``result`` is the one-line DiskFullError (exit 2) naming ``where`` and up to how many
    bytes ``needs`` (what was being written), with its fix and no traceback of Ray's."""
    from cae_ray.errors import EXIT_CONFIG

    said = " ".join(result.output.split())
    assert result.exit_code == EXIT_CONFIG, result.output
    assert f"no space left on the disk holding {where}" in said, said
    assert f"{needs} needs up to" in said and "Fix: free" in said, said
    assert "Traceback" not in said and "RayTaskError" not in said, result.output


@pytest.mark.parametrize(
    ("leave", "cut_short"),
    [(0, ".cae_ray.lock"), (64 << 10, "export/part-0000")],
    ids=["no-room-for-the-lock", "room-for-one-part"],
)
def test_a_full_disk_stops_the_export_naming_the_file_and_leaves_no_part(
    big_repo, small_disk, tmp_path, leave: int, cut_short: str
) -> None:
    from cae_ray.errors import EXIT_CONFIG

    mount, fill = small_disk
    config = feast_config(big_repo, features=["driver_stats", "driver_extra"], chunk_rows=1000)
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    run = mount / "run"
    filler = fill(leave)

    full = cli("export", str(path), "--run-dir", str(run))
    said = " ".join(full.output.split())
    assert full.exit_code == EXIT_CONFIG, full.output
    assert f"no space left on the disk holding {run}/{cut_short}" in said, said
    assert "bytes free" in said and "needs up to" in said and "Fix: free" in said, said
    assert "Traceback" not in said and "OSError" not in said
    assert files_beside(mount, filler) == []  # no part, no manifest, no partial file, no lock

    filler.unlink()  # space freed: the same command works
    done = cli("export", str(path), "--run-dir", str(run))
    assert done.exit_code == 0, done.output
    manifest = json.loads((run / EXPORT_MANIFEST).read_text())
    assert manifest["rows"] == pq.read_table(run / EXPORT_DIR).num_rows == 4000


@pytest.mark.ray
def test_a_full_disk_stops_the_ray_store_export_and_leaves_no_part(
    ray_cluster, tmp_path_factory, small_disk, tmp_path
) -> None:
    """Feast's ray store: Ray Data writes the parts on the cluster, and Ray wraps the error."""
    repo = make_feast_repo(tmp_path_factory.mktemp("feast-ray-big"), 2000, offline_store="ray")
    mount, fill = small_disk
    path = tmp_path / "config.json"
    path.write_text(feast_config(repo, features=["driver_stats", "driver_extra"]).model_dump_json())
    run = mount / "run"
    filler = fill(64 << 10)

    full = cli("export", str(path), "--run-dir", str(run))
    refused_for_a_full_disk(full, f"{run}/export", "writing the export")
    assert files_beside(mount, filler) == []  # no part, no staged part, no manifest

    filler.unlink()
    done = cli("export", str(path), "--run-dir", str(run))
    assert done.exit_code == 0, done.output
    assert pq.read_table(run / EXPORT_DIR).num_rows == 4000


@pytest.mark.ray
@pytest.mark.parametrize("prepare_in", ["ray", "driver"])
def test_a_full_disk_stops_prepare_naming_the_split_and_leaves_no_part(
    ray_cluster, big_repo, small_disk, tmp_path, prepare_in
) -> None:
    from cae_ray.artifacts import PREPARED, SELECTION

    mount, fill = small_disk
    config = validate_config(
        {
            **feast_config(big_repo, features=["driver_stats"], chunk_rows=1000).model_dump(),
            "data": {"target": "label"},
            "selector": {"k": 2},
            "training": {"epochs": 1, "batch_size": 256},
            # Train local mode: the selection is not the point
            "scaling": {"num_workers": 0, "prepare_in": prepare_in},
        }
    )
    path = tmp_path / "config.json"
    path.write_text(config.model_dump_json())
    run = mount / "run"
    assert cli("export", str(path), "--run-dir", str(run)).exit_code == 0
    exported = sorted(files_beside(mount, mount / "filler"))
    filler = fill(64 << 10)  # the packed splits need about 130 kB

    full = cli("select", str(path), "--run-dir", str(run))
    refused_for_a_full_disk(full, f"{run}/data/", "writing the packed splits")
    assert sorted(files_beside(mount, filler)) == exported  # no split part, whole or cut short
    assert not (run / PREPARED).exists()

    filler.unlink()  # space freed: the same command works
    done = cli("select", str(path), "--run-dir", str(run))
    assert done.exit_code == 0, done.output
    prepared = json.loads((run / PREPARED).read_text())
    assert prepared["rows"]["train"] + prepared["rows"]["validation"] == 4000
    assert (run / SELECTION).exists()
