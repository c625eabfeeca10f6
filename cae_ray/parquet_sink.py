"""A Parquet sink for Ray Data that keeps the dataset's row order (the packed splits').

Same inputs, same rows in the same order: the selection depends on the order the workers read
the rows in, so a split written in another order makes another selection.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data import Datasink

from cae_ray.artifacts import replacing

ROW_GROUP_BYTES = 16 << 20
"""About the row groups Ray's sink wrote for the packed splits before (one per packing slice)."""


class OrderedParquetSink(Datasink[None]):
    """Each write task's blocks, in the order they come, as one Parquet file named by the
    task's index: the directory read in name order gives the rows in the dataset's order.

    Ray's own Parquet sink writes through pyarrow's threaded dataset writer, which writes a
    task's tables and their chunks in whatever order its threads finish: the packed split's
    row order (and with it the selection) changed from run to run.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def on_write_start(self, schema: pa.Schema | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, blocks: Iterable[Any], ctx: Any) -> None:
        tables = (block for block in blocks if block.num_rows)
        first = next(tables, None)
        if first is None:
            return
        path = self.directory / f"part-{ctx.task_idx:06d}.parquet"
        # Standardised floats barely compress, and snappy decoding cost 5x the read time of
        # plain pages; dictionaries and min/max of 4N-byte values only cost time and footer size.
        options = {"compression": "none", "use_dictionary": False, "write_statistics": False}
        with replacing(path) as partial, pq.ParquetWriter(partial, first.schema, **options) as out:
            for table in itertools.chain([first], tables):
                row_bytes = max(1, table.nbytes // table.num_rows)
                out.write_table(table, row_group_size=max(64, ROW_GROUP_BYTES // row_bytes))
