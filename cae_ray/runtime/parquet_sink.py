"""A Parquet sink for Ray Data that keeps the dataset's row order (the packed splits'), and
Ray Data's writes kept quiet about a full disk.

Same inputs, same rows in the same order: the selection depends on the order the workers read
the rows in, so a split written in another order makes another selection.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow.parquet as pq
from ray.data import Datasink

from cae_ray import storage

ROW_GROUP_BYTES = 16 << 20
"""About the row groups Ray's sink wrote for the packed splits before (one per packing slice)."""


class OrderedParquetSink(Datasink[None]):
    """Each write task's blocks, in the order they come, as one Parquet file named by the
    task's index: the directory read in name order gives the rows in the dataset's order.

    Ray's own Parquet sink writes through pyarrow's threaded dataset writer, which writes a
    task's tables and their chunks in whatever order its threads finish: the packed split's
    row order (and with it the selection) changed from run to run.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = storage.location(directory)  # a local path or a URI

    def write(self, blocks: Iterable[Any], ctx: Any) -> None:
        write_part(storage.join(self.directory, part_name(ctx.task_idx)), blocks)


def part_name(index: int) -> str:
    """The file name of a split's ``index``-th part: name order is row order."""
    return f"part-{index:06d}.parquet"


def write_part(where: str, blocks: Iterable[Any]) -> int:
    """The non-empty ``blocks`` (pyarrow tables), in order, as the Parquet file ``where``; no file
    when they hold no row. Returns the rows written."""
    tables = (block for block in blocks if block.num_rows)
    first = next(tables, None)
    if first is None:
        return 0
    # Standardised floats barely compress, and snappy decoding cost 5x the read time of
    # plain pages; dictionaries and min/max of 4N-byte values only cost time and footer size.
    options = {"compression": "none", "use_dictionary": False, "write_statistics": False}
    rows = 0
    with (
        storage.writing(where) as stream,
        pq.ParquetWriter(stream, first.schema, **options) as out,
    ):
        for table in itertools.chain([first], tables):
            row_bytes = max(1, table.nbytes // table.num_rows)
            out.write_table(table, row_group_size=max(64, ROW_GROUP_BYTES // row_bytes))
            rows += table.num_rows
    return rows


RAY_DATA_ERROR_LOGGERS = (
    "ray.data._internal.execution.streaming_executor_state",
    "ray.data.exceptions",
)
"""Where Ray Data logs a failed task's traceback (calling it a Ray bug) before it raises."""


class _FullDiskUnlogged(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        # Ray Data logs from inside its `except` (some records without exc_info).
        error = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return error is None or not storage.is_disk_full(error)


@contextmanager
def full_disk_unlogged() -> Iterator[None]:
    """Around a Ray Data write: a full disk is not logged, traceback and all, by Ray Data; it
    is raised to the step, which says it in one line (:class:`~cae_ray.storage.DiskFullError`).
    Any other failure is logged as before."""
    loggers = [logging.getLogger(name) for name in RAY_DATA_ERROR_LOGGERS]
    unlogged = _FullDiskUnlogged()
    for logger in loggers:
        logger.addFilter(unlogged)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(unlogged)
