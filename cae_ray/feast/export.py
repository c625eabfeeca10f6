"""Feast -> Parquet: point-in-time correct training rows for ``prepare``, written in chunks.

    export(config, run_dir) -> run_dir/export/part-NNNNN.parquet + run_dir/export/_manifest.json

The flow: open the repo's FeatureStore; resolve the views, ``view:feature`` refs or feature
service into feature references (naming any unknown one); fix the output schema once from
Feast's own types, so every part has the same schema even where a chunk's feature is all null;
number the entity rows and retrieve their features chunk by chunk (``full_feature_names``, so
columns are ``view__feature`` and never collide); write each chunk as one part; write
``_manifest.json`` (each column's feature reference) last, so a manifest means a whole export.

Works on the ``file`` (dask) and ``duckdb`` offline stores, chunk by chunk in the driver
(``duckdb`` needs the ``duckdb`` extra), and on Feast's ``ray`` store, where the features go
from the cluster to Parquet without passing through the driver (``ray_export.py``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from cae_ray.config import Config, FeastConfig
from cae_ray.data import digest, open_parquet
from cae_ray.errors import (
    EmptyDatasetError,
    EmptyTimeRangeError,
    EntityColumnsMissingError,
    FeastRepoError,
    FeastRetrievalError,
    MissingFeastConfigError,
    MissingFeastExtraError,
    TimeRangeJoinKeysError,
    UnknownFeatureError,
    UnknownFeatureViewError,
)
from cae_ray.feast import import_feast
from cae_ray.feast.ray_export import (
    export_on_ray,
    feast_side_effects_undone,
    is_ray_store,
    prepare_ray_store,
    rows_of,
)
from cae_ray.pipeline import config_hash, read_json, write_json

logger = logging.getLogger(__name__)

EXPORT_DIR = "export"
MANIFEST = "_manifest.json"
"""Beside the parts; readers of the directory skip it (pyarrow ignores names starting with _)."""
_FEAST_TIMESTAMP = "event_timestamp"
ROW_ID = "cae_ray_row"
"""Added to every exported row: its position in the entity rows (a stable row key)."""
_STORE_EXTRAS = {"duckdb": ("duckdb", ["duckdb", "ibis"])}
"""Offline store type -> (the cae-ray extra that installs it, the packages Feast imports for it)."""


@dataclass(frozen=True)
class FeatureRef:
    view: str
    feature: str
    dtype: pa.DataType

    @property
    def ref(self) -> str:
        return f"{self.view}:{self.feature}"

    @property
    def column(self) -> str:
        return f"{self.view}__{self.feature}"


def export(
    config: Config,
    run_dir: str | os.PathLike[str],
    on_rows: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Retrieve the configured features for the entity rows; write Parquet and a manifest.
    ``on_rows(done, total)`` is called after each chunk (for progress bars)."""
    settings = _settings(config)
    out = Path(run_dir) / EXPORT_DIR
    store = open_store(settings.repo)
    if is_ray_store(store):
        prepare_ray_store(config, store)
    refs = resolve_refs(store, settings)
    keys = join_keys(store, refs)
    if settings.entities is not None:
        entities = read_entities(settings.entities)
        _check_entity_columns(settings, keys, entities)
    else:
        entities = entity_rows_in_range(store, refs, settings)
    wanted = {
        "config_hash": config_hash(config, "feast"),
        "entities_fingerprint": digest(repr(entities.schema) + str(entities.num_rows)),
        "registry": digest(repr(sorted((r.ref, str(r.dtype)) for r in refs))),
    }
    done = read_json(out / MANIFEST)
    if done is not None and all(done.get(k) == v for k, v in wanted.items()):
        logger.info("export: reusing %s", out)
        return done

    started = time.perf_counter()
    numbered = entities.append_column(ROW_ID, pa.array(range(entities.num_rows), pa.int64()))
    schema = pa.schema([*numbered.schema, *(pa.field(r.column, r.dtype) for r in refs)])
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("part-*.parquet"), *out.glob(".part-*"), out / MANIFEST]:
        stale.unlink(missing_ok=True)
    if is_ray_store(store):
        parts = export_on_ray(
            config, store, numbered, refs, keys, settings.timestamp_column, schema, out
        )
        if on_rows is not None:
            on_rows(numbered.num_rows, numbered.num_rows)
    else:
        parts = _export_in_chunks(store, numbered, refs, keys, settings, schema, out, on_rows)
    manifest = {
        **wanted,
        "repo": settings.repo,
        "project": store.project,
        "offline_store": store.config.offline_store.type,
        "columns": {r.column: r.ref for r in refs},
        "entity_columns": entities.schema.names,
        "row_key": ROW_ID,
        "rows": numbered.num_rows,
        "parts": parts,
        "feast_version": _feast_version(),
        "seconds": time.perf_counter() - started,
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _export_in_chunks(
    store: Any,
    rows: pa.Table,
    refs: list[FeatureRef],
    keys: list[str],
    settings: FeastConfig,
    schema: pa.Schema,
    out: Path,
    on_rows: Callable[[int, int], None] | None,
) -> int:
    """Retrieve ``settings.chunk_rows`` entity rows at a time in the driver; one part each."""
    parts = 0
    for start in range(0, rows.num_rows, settings.chunk_rows):
        chunk = rows.slice(start, settings.chunk_rows)
        table = retrieve(store, chunk, refs, keys, settings.timestamp_column).cast(schema)
        _write_part(table, out / f"part-{parts:05d}.parquet")
        parts += 1
        logger.info("export: %d of %d entity rows", start + chunk.num_rows, rows.num_rows)
        if on_rows is not None:
            on_rows(start + chunk.num_rows, rows.num_rows)
    return parts


def _settings(config: Config) -> FeastConfig:
    if config.feast is None:
        raise MissingFeastConfigError("the config", "`feast:` section")
    if not config.feast.has_entity_rows:
        raise MissingFeastConfigError(
            "the feast section", "`entities:` (entity rows to export) or `start:` (a time range)"
        )
    return config.feast


def open_store(repo: str) -> Any:
    """The repo's FeatureStore, with its registry read fresh."""
    if not (Path(repo) / "feature_store.yaml").is_file():
        raise FeastRepoError(repo, "no feature_store.yaml there")
    _check_store_packages(repo)
    import_feast()  # keeps our warning filters
    from feast import FeatureStore

    try:
        store = FeatureStore(repo_path=repo)
        store.refresh_registry()
    except Exception as e:  # Feast raises many kinds here: bad YAML, unreadable registry, ...
        raise FeastRepoError(repo, f"{type(e).__name__}: {str(e).splitlines()[0]}") from e
    return store


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


def resolve_refs(store: Any, settings: FeastConfig) -> list[FeatureRef]:
    """The feature references to export, in the order asked, with their Arrow types."""
    from feast.types import from_feast_to_pyarrow_type

    views = {fv.name: fv for fv in store.list_feature_views()}
    if settings.feature_service is not None:
        services = [s.name for s in store.list_feature_services()]
        if settings.feature_service not in services:
            raise UnknownFeatureViewError(settings.feature_service, services, "feature service")
        service = store.get_feature_service(settings.feature_service)
        wanted = [(p.name, [f.name for f in p.features]) for p in service.feature_view_projections]
    else:
        wanted = [_parse(item) for item in settings.features]
    refs: list[FeatureRef] = []
    for view_name, features in wanted:
        if view_name not in views:
            raise UnknownFeatureViewError(view_name, list(views))
        fields = {f.name: f for f in views[view_name].features}
        for name in features or list(fields):
            if name not in fields:
                raise UnknownFeatureError(view_name, name, list(fields))
            refs.append(FeatureRef(view_name, name, from_feast_to_pyarrow_type(fields[name].dtype)))
    return list(dict.fromkeys(refs))  # a feature asked for twice is exported once


def _parse(item: str) -> tuple[str, list[str]]:
    view, _, feature = item.partition(":")
    return view, [feature] if feature else []


def read_entities(path: str) -> pa.Table:
    table = open_parquet(path).to_table()
    if table.num_rows == 0:
        raise EmptyDatasetError(path)
    return table


def join_keys(store: Any, refs: list[FeatureRef]) -> list[str]:
    """The entity columns the referenced views join on, each once."""
    keys: list[str] = []
    for view in dict.fromkeys(r.view for r in refs):
        keys += [c.name for c in store.get_feature_view(view).entity_columns]
    return list(dict.fromkeys(keys))


def entity_rows_in_range(store: Any, refs: list[FeatureRef], settings: FeastConfig) -> pa.Table:
    """Every distinct (join keys, event timestamp) of the views' feature rows from
    ``settings.start`` to ``settings.end``, in time order: the entity rows of a time range."""
    views = [store.get_feature_view(name) for name in dict.fromkeys(r.view for r in refs)]
    keys_by_view = {fv.name: [c.name for c in fv.entity_columns] for fv in views}
    if len({tuple(keys) for keys in keys_by_view.values()}) > 1:
        raise TimeRangeJoinKeysError(keys_by_view)
    keys, timestamp = next(iter(keys_by_view.values())), settings.timestamp_column
    end = settings.end or datetime.now(timezone.utc)
    offline_store = store._get_provider().offline_store
    tables = []
    with feast_side_effects_undone() if is_ray_store(store) else nullcontext():
        for fv in views:
            source = fv.batch_source
            job = offline_store.pull_all_from_table_or_query(
                config=store.config,
                data_source=source,
                join_key_columns=keys,
                feature_name_columns=[],
                timestamp_field=source.timestamp_field,
                created_timestamp_column=source.created_timestamp_column or None,
                start_date=settings.start,
                end_date=end,
            )
            rows = rows_of(job)  # None: the ray store found no rows in the range
            if rows is not None:
                rows = rows.select([*keys, source.timestamp_field])
                tables.append(rows.rename_columns([*keys, timestamp]))
    rows = pa.concat_tables([t.cast(tables[0].schema) for t in tables]) if tables else pa.table({})
    rows = rows.drop_null()
    if rows.num_rows == 0:
        raise EmptyTimeRangeError(list(keys_by_view), settings.start, end)
    distinct = rows.group_by([*keys, timestamp], use_threads=False).aggregate([])
    return distinct.sort_by([(timestamp, "ascending"), *((k, "ascending") for k in keys)])


def _check_entity_columns(settings: FeastConfig, keys: list[str], entities: pa.Table) -> None:
    needed = [settings.timestamp_column, *keys]
    missing = [c for c in dict.fromkeys(needed) if c not in entities.schema.names]
    if missing:
        assert settings.entities is not None
        raise EntityColumnsMissingError(settings.entities, missing, entities.schema.names)


def retrieve(
    store: Any, chunk: pa.Table, refs: list[FeatureRef], keys: list[str], timestamp: str
) -> pa.Table:
    """The chunk's rows with their features as of each row's timestamp, in the chunk's order.

    Feast's stores know an entity row only by its join keys and timestamp: the file store keeps
    one of the rows that repeat them, DuckDB keys its joins on them. So Feast is asked once per
    distinct (keys, timestamp), numbered in ``ROW_ID``, and each row gets its distinct row's
    answer. Only the feature columns are taken from Feast's result: entity columns keep the
    user's own types (Feast may hand back a timestamp in another time zone, or ints as floats).
    """
    distinct, distinct_of_row = distinct_entity_rows(chunk, keys, timestamp)
    with warnings.catch_warnings():
        # ibis 12 calls duckdb's fetch_arrow_table, deprecated since duckdb 1.5: not ours to fix.
        warnings.filterwarnings("ignore", "fetch_arrow_table", DeprecationWarning)
        job = store.get_historical_features(
            entity_df=distinct, features=[r.ref for r in refs], full_feature_names=True
        )
        answers = job.to_arrow().sort_by(ROW_ID)
    _check_one_answer_each(store, answers, len(distinct))
    features = answers.select([r.column for r in refs]).take(distinct_of_row)
    return pa.Table.from_arrays(
        [*chunk.columns, *features.columns], names=[*chunk.schema.names, *features.schema.names]
    )


def distinct_entity_rows(
    rows: pa.Table, keys: list[str], timestamp: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """(The distinct (keys, timestamp) of ``rows`` as Feast's entity_df, numbered in ``ROW_ID``;
    for each row, the number of its distinct row)."""
    entity_df = rows.select([*keys, timestamp]).to_pandas()
    distinct_of_row = entity_df.groupby(list(entity_df.columns), sort=False, dropna=False).ngroup()
    first_rows = np.unique(distinct_of_row.to_numpy(), return_index=True)[1]
    distinct = entity_df.iloc[first_rows].reset_index(drop=True)
    distinct[ROW_ID] = np.arange(len(distinct), dtype=np.int64)
    if timestamp != _FEAST_TIMESTAMP:  # the name Feast looks for first
        distinct = distinct.rename(columns={timestamp: _FEAST_TIMESTAMP})
    return distinct, distinct_of_row.to_numpy()


def _check_one_answer_each(store: Any, answers: pa.Table, asked: int) -> None:
    """A store that dropped or repeated a row would shift every later row's features."""
    got = answers.column(ROW_ID).to_numpy()
    if not np.array_equal(got, np.arange(asked)):
        store_type = store.config.offline_store.type
        raise FeastRetrievalError(store_type, asked, len(got), len(np.unique(got)))


def _write_part(table: pa.Table, path: Path) -> None:
    partial = path.parent / f".{path.name}.partial"  # hidden from readers until complete
    pq.write_table(table, partial, compression="zstd", row_group_size=64 * 1024)
    os.replace(partial, path)


def _feast_version() -> str:
    from importlib.metadata import version

    return version("feast")
