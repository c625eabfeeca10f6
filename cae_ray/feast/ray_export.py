"""Export through Feast's Ray offline store: the feature values stay on the cluster.

    export_on_ray(config, store, rows, refs, keys, timestamp, schema, out) -> parts written

Feast's ``ray`` store answers a pandas frame of entity rows with a lazy Ray Dataset. Its blocks
go from Ray's workers to Parquet in the run dir without passing through the driver; only the
entity rows (join keys, timestamps, the user's columns) and row numbers do. As on the other
stores, Feast is asked once per distinct (keys, timestamp) (the ray store, too, keeps one of
the rows that repeat them), and each entity row gets its distinct row's answer, here in a
``map_batches`` on the cluster. Rows are written in the cluster's order, not the entity rows'
order; ``cae_ray_row`` is each row's position in the entity rows.

Feast's Ray setup changes process-wide state when Ray is already running: Ray Data's global
``DataContext`` (shuffle strategy, tensor casting, pandas conversion), Ray's log levels,
environment variables and warning filters. ``cae-ray run`` trains in the same process right
after the export, so all of it is put back as it was
(:func:`cae_ray.feast.store.feast_side_effects_undone`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from cae_ray import storage
from cae_ray.config import Config, ray_address
from cae_ray.feast.compat import ray_dataset
from cae_ray.feast.entities import ROW_ID, distinct_entity_rows
from cae_ray.feast.errors import FeastRetrievalError, RayStoreStoragePathError
from cae_ray.feast.store import feast_side_effects_undone
from cae_ray.runtime.cluster import connect
from cae_ray.runtime.errors import RayUnreachableError

_STAGING = ".ray-staging"


def export_on_ray(
    config: Config,
    store: Any,
    rows: pa.Table,
    refs: list[Any],
    keys: list[str],
    timestamp: str,
    schema: pa.Schema,
    out: str,
) -> int:
    """Retrieve the features of ``rows`` (the numbered entity rows) on the cluster and write them
    as ``out/part-NNNNN.parquet`` with ``schema``; the number of parts."""
    import ray

    from cae_ray.runtime.parquet_sink import full_disk_unlogged  # imports Ray Data

    distinct, distinct_of_row = distinct_entity_rows(rows, keys, timestamp)
    # Each distinct row's entity rows, as slices of one array (CSR): starts[d]:starts[d + 1].
    rows_in_distinct_order = np.argsort(distinct_of_row, kind="stable")
    starts = np.r_[0, np.cumsum(np.bincount(distinct_of_row, minlength=len(distinct)))]
    staging = storage.join(out, _STAGING)
    storage.remove(staging)
    with feast_side_effects_undone():
        job = store.get_historical_features(
            entity_df=distinct, features=[r.ref for r in refs], full_feature_names=True
        )
        answers = ray_dataset(job)
        expanded = answers.map_batches(
            _answer_each_row,
            batch_format="pyarrow",
            fn_kwargs={
                # In the object store once, not in every task's arguments.
                "lookup": ray.put((rows, rows_in_distinct_order, starts)),
                "columns": [r.column for r in refs],
                "schema": schema,
                "row_id": ROW_ID,
            },
        )
        with full_disk_unlogged():  # the export raises it, typed
            expanded.write_parquet(staging, compression="zstd")
    written = [storage.join(staging, n) for n in storage.files(staging) if n.endswith(".parquet")]
    _check_each_row_once(store, written, rows.num_rows, len(distinct), ROW_ID)
    for part, where in enumerate(written):
        storage.move(where, storage.join(out, f"part-{part:05d}.parquet"))
    storage.remove(staging)
    return len(written)


def _answer_each_row(
    answers: pa.Table,
    *,
    lookup: Any,
    columns: list[str],
    schema: pa.Schema,
    row_id: str,
) -> pa.Table:
    """Feast's answers for distinct rows -> one output row per entity row that shares them:
    the user's entity columns as given, then the features, cast to the export's schema.
    ``lookup`` is the object ref of (numbered entity rows, their indices sorted by distinct
    row, where each distinct row's indices start)."""
    import ray

    rows, rows_in_distinct_order, starts = ray.get(lookup)
    distinct = answers.column(row_id).to_numpy()
    counts = starts[distinct + 1] - starts[distinct]
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    entity_rows = rows_in_distinct_order[np.repeat(starts[distinct], counts) + offsets]
    features = answers.select(columns).take(np.repeat(np.arange(len(distinct)), counts))
    table = rows.take(entity_rows)
    for name in columns:
        table = table.append_column(name, features.column(name))
    return table.cast(schema)


def _check_each_row_once(
    store: Any, parts: list[str], asked: int, distinct: int, row_id: str
) -> None:
    """A store that dropped or repeated a row would leave rows without features or twice."""
    ids = [storage.read_table(p, columns=[row_id])[0].to_numpy() for p in parts]
    got = np.sort(np.concatenate(ids))
    if not np.array_equal(got, np.arange(asked)):
        raise FeastRetrievalError(store.config.offline_store.type, asked, len(got), distinct)


def prepare_ray_store(config: Config, store: Any) -> None:
    """Before anything is written: a storage_path (Feast's ray store refuses to work without
    one, but only after the whole retrieval), and a cluster to run on."""
    if not getattr(store.config.offline_store, "storage_path", None):
        raise RayStoreStoragePathError(str(store.repo_path))
    _join_cluster(config, store)


def _join_cluster(config: Config, store: Any) -> None:
    """The cluster cae-ray is configured for (scaling.address or RAY_ADDRESS), else the ray
    store's own ray_address, else a local one: joined by us, so Feast does not start Ray with
    its own settings (all CPUs, Ray's default temp dir)."""
    feast_address = getattr(store.config.offline_store, "ray_address", None)
    if ray_address(config) is not None or not feast_address:
        connect(config)
        return
    scaling = config.scaling.model_copy(update={"address": feast_address})
    try:
        connect(config.model_copy(update={"scaling": scaling}))
    except RayUnreachableError as e:
        source = f"offline_store.ray_address in {store.repo_path}/feature_store.yaml"
        raise RayUnreachableError(e.address, e.reason, source) from e
