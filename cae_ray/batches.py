"""The packed feature column: written once by ``prepare``, read every epoch by the workers.

All N features of a row are stored as one fixed-size binary value of N float32s. Parquet stores
that as FIXED_LEN_BYTE_ARRAY, which decodes at close to memory-copy speed; a fixed-size *list*
column (Ray's tensor type) decodes one value at a time, ~4x slower on wide rows (measured in
``benchmarks/throughput.py``). Reading back, a block's column is reinterpreted as a
``(rows, N)`` matrix without a copy, and the one copy we make is the row shuffle.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

FEATURES, TARGET = "features", "target"
WINDOW_BYTES = 64 << 20
"""Rows are shuffled within windows of about this many bytes (at least one batch)."""


def pack(matrix: np.ndarray) -> pa.FixedSizeBinaryArray:
    """A (rows, N) matrix as one fixed-size binary value of N float32s per row."""
    matrix = np.ascontiguousarray(matrix, np.float32)
    width = matrix.shape[1] * 4
    return pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), len(matrix), [None, pa.py_buffer(matrix)]
    )


def _views(column: pa.ChunkedArray | pa.Array, n_features: int) -> list[np.ndarray]:
    """Each chunk as a read-only (rows, N) float32 view of its buffer."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    views = []
    for chunk in chunks:
        if len(chunk) == 0:
            continue
        values = np.frombuffer(
            chunk.buffers()[1],
            np.float32,
            count=len(chunk) * n_features,
            offset=chunk.offset * n_features * 4,
        )
        views.append(values.reshape(len(chunk), n_features))
    return views


def unpack(column: pa.ChunkedArray | pa.Array, n_features: int) -> np.ndarray:
    """The (rows, N) float32 matrix of a packed column (a copy, so it is writable)."""
    views = _views(column, n_features)
    if not views:
        return np.empty((0, n_features), np.float32)
    return np.concatenate(views)


def window_rows(n_features: int, batch_size: int) -> int:
    """Rows per shuffle window: a whole number of batches, about ``WINDOW_BYTES``."""
    batches = max(1, WINDOW_BYTES // (n_features * 4 * batch_size))
    return batches * batch_size


class ShuffledWindow(ArrowBatchCollateFn):
    """A Ray Data collate: a window of rows, shuffled, as a features tensor (and targets).

    Ray calls it from a thread pool, so it keeps no mutable state: each window's permutation
    is seeded by (seed, the window's first bytes), which makes epochs reproducible.
    """

    def __init__(self, n_features: int, seed: int, with_target: bool) -> None:
        self.n_features, self.seed, self.with_target = n_features, seed, with_target

    # Ray annotates the result as an unbound TypeVar, which no concrete type satisfies.
    def __call__(self, table: pa.Table) -> dict[str, torch.Tensor]:  # type: ignore[override]
        views = _views(table.column(FEATURES), self.n_features)
        rows = table.num_rows
        first = views[0][0].tobytes()[:64] if views else b""
        order = np.random.default_rng([self.seed, zlib.crc32(first)]).permutation(rows)
        destination = np.empty_like(order)
        destination[order] = np.arange(rows)
        features = np.empty((rows, self.n_features), np.float32)
        offset = 0
        for view in views:  # scatter each chunk straight to its shuffled rows: one copy
            features[destination[offset : offset + len(view)]] = view
            offset += len(view)
        out = {FEATURES: torch.from_numpy(features)}
        if self.with_target:
            target = table.column(TARGET).to_numpy()
            out[TARGET] = torch.from_numpy(np.ascontiguousarray(target[order]))
        return out


def batches_of(
    windows: Iterable[dict[str, torch.Tensor]], batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Cut shuffled windows into (features, target) batches; slices, no copies."""
    for window in windows:
        x, y = window[FEATURES], window.get(TARGET)
        for start in range(0, len(x), batch_size):
            stop = start + batch_size
            yield x[start:stop], None if y is None else y[start:stop]
