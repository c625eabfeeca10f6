"""The prepare step's passes in the driver process, for tables too small to pay Ray Data's
start-up: each Ray Data pass costs seconds before it reads a row (tasks, an actor pool, a hash
shuffle for the target's distinct values), ~20 s for a table of a few hundred rows, when
pyarrow does the whole work here in under a second.

The passes use the Ray path's own UDFs (:class:`~cae_ray.runtime.data.BatchStats`,
:class:`~cae_ray.runtime.data.Packer`) over the files' record batches in file order, so the
statistics, the split of every row and the packed values are those of the Ray path; each split
is one Parquet file, written as the Ray path's sink writes its parts.

    where_to_prepare(config.scaling.prepare_in, rows, features) -> "driver" or "ray"
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from cae_ray import storage
from cae_ray.config import DataConfig
from cae_ray.runtime.data import (
    BatchStats,
    FeatureStats,
    Packer,
    decide_target,
    merge_stats,
    open_parquet,
    reconstruction_target,
    rows_per_slice,
)
from cae_ray.runtime.parquet_sink import part_name, write_part
from cae_ray.selector.targets import TargetInfo

DRIVER_CELLS = 32_000_000
"""``prepare_in: auto`` prepares tables of at most this many cells (rows x features: 256 MB as
float64, e.g. 32,000 rows x 1,000 features) in the driver, and larger ones with Ray Data, whose
tasks read and pack in parallel across the cluster."""


def where_to_prepare(prepare_in: str, rows: int, features: int) -> Literal["driver", "ray"]:
    """Where the prepare step reads the table: what the config says, or by its size."""
    if prepare_in == "auto":
        return "driver" if rows * features <= DRIVER_CELLS else "ray"
    return "driver" if prepare_in == "driver" else "ray"


def blocks(path: str, columns: list[str]) -> Iterator[pa.Table]:
    """``columns`` of the Parquet files under ``path``, in file order and row order, a few
    thousand rows at a time (one working copy stays near 32 MB, as in the Ray path's UDFs)."""
    dataset = open_parquet(path)
    rows = rows_per_slice(len(columns))
    for fragment in sorted(dataset.get_fragments(), key=lambda f: f.path):
        for batch in fragment.to_batches(columns=columns, batch_size=rows, use_threads=False):
            yield pa.Table.from_batches([batch])


def compute_stats(path: str, names: list[str]) -> FeatureStats:
    """Per-feature statistics in one pass (the Ray path's :func:`~.data.compute_stats`)."""
    per_slice = BatchStats(names)
    return merge_stats(names, (per_slice(block) for block in blocks(path, names)))


def resolve_target(path: str, column: str | None, task: str) -> TargetInfo:
    """The target's task and encoding (the Ray path's :func:`~.data.resolve_dataset_target`):
    one column, read whole."""
    if column is None or task == "reconstruction":
        return reconstruction_target(task)
    values = pa.concat_tables(blocks(path, [column]))[column]
    return decide_target(
        column,
        task,
        pc.unique(values).to_pylist(),
        count_nulls=lambda: int(pc.sum(pc.is_null(values, nan_is_null=True)).as_py()),
        stats=lambda: compute_stats(path, [column]),
    )


def write_packed(
    path: str,
    config: DataConfig,
    stats: FeatureStats,
    keep: list[str],
    target: TargetInfo,
    splits: dict[str, str],
) -> dict[str, int]:
    """Write the ``train`` and ``validation`` splits, one Parquet file each; their row counts."""
    columns = [*keep, *(c for c in (config.target, config.row_key) if c)]
    columns = list(dict.fromkeys(columns))
    counts = {}
    for split, directory in splits.items():
        packer = Packer(config, stats, keep, target, split)
        storage.remove(directory)  # a killed earlier write left parts
        where = storage.join(directory, part_name(0))
        counts[split] = write_part(where, (packer(block) for block in blocks(path, columns)))
    return counts
