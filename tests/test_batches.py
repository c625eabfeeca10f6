"""The packed feature column and the shuffled windows read from it (no cluster needed)."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa

from cae_ray.runtime.batches import FEATURES, TARGET, ShuffledWindows, pack, unpack, window_rows


def packed_table(matrix: np.ndarray, target: np.ndarray, chunks: int) -> pa.Table:
    parts = np.array_split(np.arange(len(matrix)), chunks)
    tables = [pa.table({FEATURES: pack(matrix[p]), TARGET: pa.array(target[p])}) for p in parts]
    return pa.concat_tables(tables)


def test_pack_and_unpack_round_trip_across_chunks_and_slices() -> None:
    matrix = np.random.default_rng(0).standard_normal((50, 7)).astype(np.float32)
    table = packed_table(matrix, np.arange(50), chunks=3)
    assert table.column(FEATURES).num_chunks == 3
    assert np.array_equal(unpack(table.column(FEATURES), 7), matrix)
    assert np.array_equal(unpack(table.slice(13, 20).column(FEATURES), 7), matrix[13:33])
    assert unpack(table.slice(0, 0).column(FEATURES), 7).shape == (0, 7)


def blocks_of(matrix: np.ndarray, target: np.ndarray, sizes: list[int]) -> list[pa.Table]:
    """Ray-like blocks of these row counts, the first of two chunks (as after a concat)."""
    edges = np.cumsum([0, *sizes])
    tables = []
    for start, stop in itertools.pairwise(edges):
        tables.append(packed_table(matrix[start:stop], target[start:stop], chunks=2))
    return tables


WINDOW_BATCHES = 4


def one_epoch(blocks: list[pa.Table], n: int, batch: int, seed: int, target: bool) -> list:
    window_bytes = WINDOW_BATCHES * batch * n * 4
    windows = ShuffledWindows(n, batch, with_target=target, window_bytes=window_bytes)
    # Copies: a batch is valid until the window after next is filled.
    return [(x.clone(), None if y is None else y.clone()) for x, y in windows.epoch(blocks, seed)]


def test_windows_are_seeded_permutations_that_keep_rows_with_their_targets() -> None:
    n, batch = 3, 4
    window = WINDOW_BATCHES * batch
    rows = window * 2 + 10  # two whole windows and a partial one
    matrix = np.arange(rows * n, dtype=np.float32).reshape(rows, n)
    target = np.arange(rows) * 10
    blocks = blocks_of(matrix, target, [rows // 3, 7, rows - rows // 3 - 7])  # cut mid-window

    batches = one_epoch(blocks, n, batch, seed=5, target=True)
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    assert [len(b[0]) for b in batches][-3:] == [4, 4, 2]  # whole batches; the rest at the end
    assert sorted(x[:, 0].tolist()) == matrix[:, 0].tolist()  # every row exactly once
    assert not np.array_equal(x, matrix)  # ... in a new order
    assert np.array_equal(x[:, 0] / 3 * 10, y)  # each target stays with its row
    for start in range(0, rows, window):  # shuffled within windows of consecutive rows
        assert sorted(x[start : start + window, 0]) == matrix[start : start + window, 0].tolist()

    again = one_epoch(blocks, n, batch, seed=5, target=True)
    other_epoch = one_epoch(blocks, n, batch, seed=6, target=True)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(again, batches, strict=True))
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(other_epoch, batches, strict=True))
    assert all(y is None for _, y in one_epoch(blocks, n, batch, seed=5, target=False))


def test_the_windows_do_not_depend_on_how_rows_are_split_into_blocks() -> None:
    n, batch = 5, 8
    rows = WINDOW_BATCHES * batch * 3 + 100
    matrix = np.random.default_rng(0).standard_normal((rows, n)).astype(np.float32)
    sizes = [1, 30, 99, rows - 330, 200]
    one = one_epoch(blocks_of(matrix, np.zeros(rows), [rows]), n, batch, seed=1, target=False)
    many = one_epoch(blocks_of(matrix, np.zeros(rows), sizes), n, batch, seed=1, target=False)
    assert len(one) == len(many)
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(one, many, strict=True))


def test_window_sizes_are_whole_batches_of_about_64_mb() -> None:
    assert window_rows(n_features=10_000, batch_size=128) % 128 == 0
    assert window_rows(n_features=10_000_000, batch_size=128) == 128  # never below one batch
    assert window_rows(784, 128) * 784 * 4 <= 64 << 20


def test_a_shuffler_kept_across_epochs_gives_what_fresh_ones_give() -> None:
    n, batch = 4, 8
    rows = WINDOW_BATCHES * batch * 3 + 5
    matrix = np.random.default_rng(2).standard_normal((rows, n)).astype(np.float32)
    blocks = blocks_of(matrix, np.arange(rows), [rows // 2, rows - rows // 2])
    kept = ShuffledWindows(n, batch, with_target=True, window_bytes=WINDOW_BATCHES * batch * n * 4)
    for seed in (0, 1, 2):  # its two window buffers take turns across the epochs
        again = [(x.clone(), y) for x, y in kept.epoch(blocks, seed)]  # new targets each window
        fresh = one_epoch(blocks, n, batch, seed=seed, target=True)
        assert len(again) == len(fresh)
        for (x, y), (fx, fy) in zip(again, fresh, strict=True):
            assert y is not None and fy is not None
            assert np.array_equal(x, fx) and np.array_equal(y, fy)
