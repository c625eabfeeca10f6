"""Entity rows: the (join keys, event timestamp) rows whose features an export retrieves, from a
file or from a time range of the views' own rows, numbered, and deduplicated for Feast.
"""

from __future__ import annotations

from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from cae_ray.config import FeastConfig
from cae_ray.errors import EmptyDatasetError
from cae_ray.feast.errors import (
    EmptyTimeRangeError,
    EntityColumnsMissingError,
    TimeRangeJoinKeysError,
)
from cae_ray.feast.refs import FeatureRef
from cae_ray.feast.store import feast_side_effects_undone, is_ray_store, rows_of
from cae_ray.runtime.data import open_parquet

ROW_ID = "cae_ray_row"
"""Added to every exported row: its position in the entity rows (a stable row key)."""
FEAST_TIMESTAMP = "event_timestamp"
"""The entity rows' timestamp column in what Feast is asked (the name it looks for first)."""


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


def check_entity_columns(settings: FeastConfig, keys: list[str], entities: pa.Table) -> None:
    needed = [settings.timestamp_column, *keys]
    missing = [c for c in dict.fromkeys(needed) if c not in entities.schema.names]
    if missing:
        assert settings.entities is not None
        raise EntityColumnsMissingError(settings.entities, missing, entities.schema.names)


def check_label_keys(keys: list[str], entities: pa.Table, label: FeatureRef | None) -> None:
    """Entity rows made from a time range hold the candidate views' join keys only: a label
    view that joins on others cannot be read for them."""
    missing = [k for k in keys if k not in entities.schema.names]
    if label is not None and missing:
        present = [k for k in keys if k not in missing]
        raise TimeRangeJoinKeysError({"the candidate views": present, label.view: keys})


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
    if timestamp != FEAST_TIMESTAMP:  # the name Feast looks for first
        distinct = distinct.rename(columns={timestamp: FEAST_TIMESTAMP})
    return distinct, distinct_of_row.to_numpy()
