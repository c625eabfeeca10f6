"""Synthetic wide Parquet tables with a known answer, written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_wide_parquet(
    directory: Path,
    *,
    rows: int = 2000,
    features: int = 100,
    informative: int = 10,
    files: int = 2,
    seed: int = 0,
) -> list[str]:
    """Write ``files`` Parquet files (columns f_0000..., a label and an id); return the
    informative column names (make_classification's first columns, then shuffled in)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=informative,
        n_redundant=0,
        n_repeated=0,
        shuffle=False,
        random_state=seed,
    )
    order = np.random.default_rng(seed).permutation(features)
    names = [f"f_{j:04d}" for j in range(features)]
    table = pa.table(
        {
            "id": np.arange(rows),
            **{names[j]: X[:, order[j]].astype(np.float32) for j in range(features)},
            "label": y,
        }
    )
    directory.mkdir(parents=True, exist_ok=True)
    for part, rows_of_part in enumerate(np.array_split(np.arange(rows), files)):
        pq.write_table(table.take(rows_of_part), directory / f"part-{part:03d}.parquet")
    return sorted(names[j] for j in range(features) if order[j] < informative)
