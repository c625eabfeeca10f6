"""A Parquet sink for Ray Data that keeps the dataset's row order (the packed splits').

Same inputs, same rows in the same order: the selection depends on the order the workers read
the rows in, so a split written in another order makes another selection.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
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
        tables = (block for block in blocks if block.num_rows)
        first = next(tables, None)
        if first is None:
            return
        where = storage.join(self.directory, f"part-{ctx.task_idx:06d}.parquet")
        # Standardised floats barely compress, and snappy decoding cost 5x the read time of
        # plain pages; dictionaries and min/max of 4N-byte values only cost time and footer size.
        options = {"compression": "none", "use_dictionary": False, "write_statistics": False}
        with (
            storage.writing(where) as stream,
            pq.ParquetWriter(stream, first.schema, **options) as out,
        ):
            for table in itertools.chain([first], tables):
                row_bytes = max(1, table.nbytes // table.num_rows)
                out.write_table(table, row_group_size=max(64, ROW_GROUP_BYTES // row_bytes))
