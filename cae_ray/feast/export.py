"""Feast -> Parquet: point-in-time correct training rows for ``prepare``, written in chunks.

    export(config, run) -> RUN_DIR/export/part-NNNNN.parquet + RUN_DIR/export/_manifest.json

The flow: open the repo's FeatureStore; resolve the views, ``view:feature`` refs or feature
service into feature references (naming any unknown one); fix the output schema once from
Feast's own types, so every part has the same schema even where a chunk's feature is all null;
number the entity rows and retrieve their features (and a label that ``data.target`` names as
``view:field``, point in time like them) chunk by chunk (``full_feature_names``, so
columns are ``view__feature`` and never collide); write each chunk as one part; write
``_manifest.json`` (each column's feature reference) last, so a manifest means a whole export.
A full disk removes the parts written so far and says how much room the export needs
(:class:`~cae_ray.storage.DiskFullError`).

Works on the ``file`` (dask) and ``duckdb`` offline stores, chunk by chunk in the driver
(``duckdb`` needs the ``duckdb`` extra), and on Feast's ``ray`` store, where the features go
from the cluster to Parquet without passing through the driver (``ray_export.py``).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from importlib.metadata import version
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cae_ray import storage
from cae_ray.artifacts import (
    EXPORT_DIR,
    EXPORT_INPUTS,
    RunDir,
    config_hash,
    digest,
)
from cae_ray.config import Config, FeastConfig
from cae_ray.feast.compat import check_duckdb_sources
from cae_ray.feast.entities import (
    FEAST_TIMESTAMP,
    ROW_ID,
    check_entity_columns,
    check_label_keys,
    distinct_entity_rows,
    entity_rows_in_range,
    join_keys,
    read_entities,
)
from cae_ray.feast.errors import (
    EntityRowsWithoutFeaturesError,
    FeastRetrievalError,
    MissingFeastConfigError,
)
from cae_ray.feast.ray_export import export_on_ray, prepare_ray_store
from cae_ray.feast.refs import FeatureRef, resolve_label, resolve_refs
from cae_ray.feast.store import is_ray_store, open_store
from cae_ray.records import ExportLabel, ExportManifest

logger = logging.getLogger(__name__)


def export(
    config: Config, run: RunDir, on_rows: Callable[[int, int], None] | None = None
) -> ExportManifest:
    """Retrieve the configured features for the entity rows; write Parquet and a manifest.
    ``on_rows(done, total)`` is called after each chunk (for progress bars)."""
    settings = _settings(config)
    out = run.path(EXPORT_DIR)
    store = open_store(settings.repo)
    if is_ray_store(store):
        prepare_ray_store(config, store)
    refs = resolve_refs(store, settings)
    check_duckdb_sources(store, (r.view for r in refs))
    label = None if config.feast_label is None else resolve_label(store, config.feast_label, refs)
    asked = [*refs, label] if label is not None else refs
    keys = join_keys(store, asked)
    if settings.entities is not None:
        entities = read_entities(settings.entities)
        check_entity_columns(settings, keys, entities)
    else:
        entities = entity_rows_in_range(store, refs, settings)
        check_label_keys(keys, entities, label)
    made_from = {
        "config_hash": config_hash(config, *EXPORT_INPUTS),
        "entities_fingerprint": digest(repr(entities.schema) + str(entities.num_rows)),
        # ``asked`` holds the label too: another label is another export
        "registry": digest(repr(sorted((r.ref, str(r.dtype)) for r in asked))),
    }
    done = ExportManifest.reusable(run, made_from)
    if done is not None:
        logger.info("export: reusing %s", out)
        return done

    started = time.perf_counter()
    numbered = entities.append_column(ROW_ID, pa.array(range(entities.num_rows), pa.int64()))
    schema = pa.schema([*numbered.schema, *(pa.field(r.column, r.dtype) for r in asked)])
    run.remove(EXPORT_DIR)  # parts of an earlier export, whole or killed half way
    try:
        if is_ray_store(store):
            parts = export_on_ray(
                config, store, numbered, asked, keys, settings.timestamp_column, schema, out
            )
            if on_rows is not None:
                on_rows(numbered.num_rows, numbered.num_rows)
        else:
            parts = _export_in_chunks(store, numbered, asked, keys, settings, schema, out, on_rows)
        manifest = ExportManifest(
            **made_from,
            repo=settings.repo,
            project=store.project,
            offline_store=store.config.offline_store.type,
            columns={r.column: r.ref for r in refs},  # the candidates: the label is not one
            value_bytes={r.column: _value_bytes(r.dtype) for r in refs if _value_bytes(r.dtype)},
            label=None if label is None else ExportLabel(ref=label.ref, column=label.column),
            entity_columns=entities.schema.names,
            row_key=ROW_ID,
            rows=numbered.num_rows,
            parts=parts,
            feast_version=version("feast"),
            seconds=time.perf_counter() - started,
            files=run.files(EXPORT_DIR),
        )
        manifest.write(run)  # last: a manifest means a whole export
    except Exception as e:
        if not storage.is_disk_full(e):
            raise
        run.remove(EXPORT_DIR)  # parts without a manifest are no export; the room goes back
        raise storage.disk_full(e, out, _export_bytes(numbered, asked), "writing the export") from e
    return manifest


def _export_bytes(rows: pa.Table, refs: list[FeatureRef]) -> int:
    """At most the bytes of the whole export: its values uncompressed (8 bytes for a value of
    variable width), and a little for the files' own structure."""
    width = sum(_value_bytes(r.dtype) or 8 for r in refs)
    return int(rows.nbytes) + rows.num_rows * width + _PARQUET_SLACK


_PARQUET_SLACK = 64 * 1024
"""The footers, page headers and file-system blocks of a few Parquet files."""


def _value_bytes(dtype: pa.DataType) -> int:
    """The bytes of one value of a fixed-width type (0: variable width, strings say)."""
    try:
        return max(int(dtype.bit_width) // 8, 1)
    except ValueError:  # pyarrow: "Non-fixed width type"
        return 0


def _export_in_chunks(
    store: Any,
    rows: pa.Table,
    refs: list[FeatureRef],
    keys: list[str],
    settings: FeastConfig,
    schema: pa.Schema,
    out: str,
    on_rows: Callable[[int, int], None] | None,
) -> int:
    """Retrieve ``settings.chunk_rows`` entity rows at a time in the driver; one part each."""
    parts, unanswered = 0, []
    for start in range(0, rows.num_rows, settings.chunk_rows):
        chunk = rows.slice(start, settings.chunk_rows)
        try:
            table = retrieve(store, chunk, refs, keys, settings.timestamp_column).cast(schema)
        except EntityRowsWithoutFeaturesError as e:
            unanswered.append(e)  # go on: the error counts every such row, not one chunk's
            continue
        if not unanswered:  # the export is refused: no part after the first such chunk
            _write_part(table, storage.join(out, f"part-{parts:05d}.parquet"))
        parts += 1
        logger.info("export: %d of %d entity rows", start + chunk.num_rows, rows.num_rows)
        if on_rows is not None:
            on_rows(start + chunk.num_rows, rows.num_rows)
    if unanswered:
        count = sum(e.count for e in unanswered)
        examples = [example for e in unanswered for example in e.examples][:2]
        raise EntityRowsWithoutFeaturesError(count, rows.num_rows, examples, _ttls(store, refs))
    return parts


def _settings(config: Config) -> FeastConfig:
    if config.feast is None:
        raise MissingFeastConfigError("the config", "`feast:` section")
    if not config.feast.has_entity_rows:
        raise MissingFeastConfigError(
            "the feast section", "`entities:` (entity rows to export) or `start:` (a time range)"
        )
    return config.feast


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
    _check_one_answer_each(store, answers, distinct, distinct_of_row, refs)
    features = answers.select([r.column for r in refs]).take(distinct_of_row)
    return pa.Table.from_arrays(
        [*chunk.columns, *features.columns], names=[*chunk.schema.names, *features.schema.names]
    )


def _check_one_answer_each(
    store: Any,
    answers: pa.Table,
    distinct: pd.DataFrame,
    distinct_of_row: np.ndarray,
    refs: list[FeatureRef],
) -> None:
    """A store that dropped or repeated a row would shift every later row's features. The file
    store leaves out the rows it has no feature value for within the views' TTL: those are
    named (:class:`EntityRowsWithoutFeaturesError`); anything else is the store's fault."""
    got, asked = answers.column(ROW_ID).to_numpy(), len(distinct)
    if np.array_equal(got, np.arange(asked)):
        return
    if len(np.unique(got)) == len(got) and np.isin(got, np.arange(asked)).all():
        missing = np.setdiff1d(np.arange(asked), got)
        count = int(np.isin(distinct_of_row, missing).sum())
        examples = [_describe_row(distinct.iloc[i]) for i in missing[:2]]
        raise EntityRowsWithoutFeaturesError(
            count, len(distinct_of_row), examples, _ttls(store, refs)
        )
    store_type = store.config.offline_store.type
    raise FeastRetrievalError(store_type, asked, len(got), len(np.unique(got)))


def _describe_row(row: pd.Series) -> str:
    """An entity row as the user wrote it: its join keys and its event timestamp."""
    keys = [
        f"{name}={value}" for name, value in row.items() if name not in (FEAST_TIMESTAMP, ROW_ID)
    ]
    return f"{', '.join(keys)} at {row[FEAST_TIMESTAMP]}"


def _ttls(store: Any, refs: list[FeatureRef]) -> dict[str, str]:
    """Each view's TTL in words (Feast's 0 means no limit)."""
    views = (store.get_feature_view(name) for name in dict.fromkeys(r.view for r in refs))
    return {view.name: _duration(view.ttl) for view in views}


def _duration(ttl: timedelta | None) -> str:
    if not ttl:
        return "no limit"
    days, rest = divmod(ttl, timedelta(days=1))
    return f"{days} days" if not rest else str(ttl)


def _write_part(table: pa.Table, where: str) -> None:
    with storage.writing(where) as stream:  # hidden from readers until complete
        pq.write_table(table, stream, compression="zstd", row_group_size=64 * 1024)
