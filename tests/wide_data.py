"""Synthetic wide Parquet tables with a known answer, written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cae_ray.demo import make_demo_data


def write_wide_parquet(
    directory: Path,
    *,
    rows: int = 2000,
    features: int = 100,
    informative: int = 10,
    files: int = 2,
    seed: int = 0,
) -> list[str]:
    """Write ``files`` Parquet files (an ``id``, columns f_0000..., a ``label``); return the
    names of the informative columns."""
    data = make_demo_data(rows=rows, features=features, informative=informative, seed=seed)
    table = pa.Table.from_pandas(data.frame, preserve_index=False)
    table = table.add_column(0, "id", pa.array(np.arange(rows)))
    table = table.append_column("label", pa.array(data.target))
    directory.mkdir(parents=True, exist_ok=True)
    for part, rows_of_part in enumerate(np.array_split(np.arange(rows), files)):
        pq.write_table(table.take(rows_of_part), directory / f"part-{part:03d}.parquet")
    return data.informative
