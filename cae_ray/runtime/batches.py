"""The packed feature column: written once by ``prepare``, read every epoch by the workers.

All N features of a row are stored as one fixed-size binary value of N float32s. Parquet stores
that as FIXED_LEN_BYTE_ARRAY, which decodes at close to memory-copy speed; a fixed-size *list*
column (Ray's tensor type) decodes one value at a time, ~4x slower on wide rows (measured in
``benchmarks/throughput.py``). Reading back, a block's column is reinterpreted as a
``(rows, N)`` matrix without a copy, and the one copy we make is the row shuffle
(:class:`ShuffledWindows`).
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import torch

from cae_ray.selector.loop import Batch

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


def window_rows(n_features: int, batch_size: int, window_bytes: int = WINDOW_BYTES) -> int:
    """Rows per shuffle window: a whole number of batches, about ``window_bytes``."""
    batches = max(1, window_bytes // (n_features * 4 * batch_size))
    return batches * batch_size


_Segment = tuple[np.ndarray, np.ndarray | None]
"""Consecutive rows of one block: a (rows, N) view of its buffer, and their targets."""


class ShuffledWindows:
    """A worker's epochs of ``(x, y)`` batches from streams of packed blocks, shuffled within
    windows: ``epoch(blocks, seed)`` yields one epoch's batches.

    A window is ``window_rows`` consecutive rows (cut across block boundaries, the rest carried
    into the next window); its rows are shuffled with a seed of (``seed``, the window's first
    bytes), so an epoch is reproducible, and cut into batches. Each row is copied once, from
    the block's buffer (which Ray hands over without a copy) straight to its shuffled place.

    On CPU two window buffers take turns, kept for every epoch: a fresh 64 MB array comes from
    fresh pages (glibc maps them), and their first-touch page faults made a pass over a cached
    split ~2x slower. A batch therefore stays valid only until the next window after its own
    is filled; the training loop uses each batch once. With ``pin_memory`` each window comes
    from torch's pinned-memory cache, which does not hand a buffer out again while an
    asynchronous copy to the GPU still reads it.
    """

    def __init__(
        self,
        n_features: int,
        batch_size: int,
        *,
        with_target: bool,
        pin_memory: bool = False,
        window_bytes: int = WINDOW_BYTES,
    ) -> None:
        self.n_features, self.batch_size = n_features, batch_size
        self.with_target, self.pin_memory = with_target, pin_memory
        self.window_rows = window_rows(n_features, batch_size, window_bytes)
        self._buffers: list[torch.Tensor] = []

    def epoch(self, blocks: Iterable[pa.Table], seed: int) -> Iterator[Batch]:
        """One epoch's batches (one epoch at a time: the window buffers are shared)."""
        pending: deque[_Segment] = deque()
        pending_rows = 0
        for table in blocks:
            for segment in self._segments(table):
                pending.append(segment)
                pending_rows += len(segment[0])
            while pending_rows >= self.window_rows:
                yield from self._batches(*self._next_window(pending, self.window_rows, seed))
                pending_rows -= self.window_rows
        if pending_rows:
            yield from self._batches(*self._next_window(pending, pending_rows, seed))

    def _segments(self, table: pa.Table) -> list[_Segment]:
        views = _views(table.column(FEATURES), self.n_features)
        if not self.with_target:
            return [(view, None) for view in views]
        target, start, segments = table.column(TARGET).to_numpy(), 0, []
        for view in views:
            segments.append((view, target[start : start + len(view)]))
            start += len(view)
        return segments

    def _next_window(
        self, pending: deque[_Segment], rows: int, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Take ``rows`` rows off the front of ``pending`` into a window, shuffled."""
        window = self._window_buffer(rows)
        features = window.numpy()
        first = pending[0][0][0].tobytes()[:64]
        order = np.random.default_rng([seed, zlib.crc32(first)]).permutation(rows)
        destination = np.empty_like(order)
        destination[order] = np.arange(rows)
        targets, offset = [], 0
        while offset < rows:
            view, target = pending.popleft()
            take = min(len(view), rows - offset)
            if take < len(view):  # the rest starts the next window
                pending.appendleft((view[take:], None if target is None else target[take:]))
                view, target = view[:take], None if target is None else target[:take]
            features[destination[offset : offset + take]] = view
            if target is not None:
                targets.append(target)
            offset += take
        if not self.with_target:
            return window, None
        return window, torch.from_numpy(np.concatenate(targets)[order])

    def _window_buffer(self, rows: int) -> torch.Tensor:
        shape = (rows, self.n_features)
        if self.pin_memory:
            return torch.empty(shape, dtype=torch.float32, pin_memory=True)
        if len(self._buffers) < 2:
            self._buffers.append(torch.empty((self.window_rows, self.n_features)))
        self._buffers.reverse()  # the other one's turn
        return self._buffers[0][:rows]

    def _batches(self, x: torch.Tensor, y: torch.Tensor | None) -> Iterator[Batch]:
        for start in range(0, len(x), self.batch_size):
            stop = start + self.batch_size
            yield x[start:stop], None if y is None else y[start:stop]
