"""The packed feature column and the shuffled windows read from it (no cluster needed)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cae_ray.batches import FEATURES, TARGET, ShuffledWindow, batches_of, pack, unpack, window_rows


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


def test_window_is_a_seeded_permutation_that_keeps_rows_with_their_targets() -> None:
    matrix = np.arange(40 * 3, dtype=np.float32).reshape(40, 3)
    table = packed_table(matrix, np.arange(40) * 10, chunks=4)
    window = ShuffledWindow(3, seed=5, with_target=True)(table)
    x, y = window[FEATURES].numpy(), window[TARGET].numpy()
    assert sorted(x[:, 0].tolist()) == matrix[:, 0].tolist()  # every row exactly once
    assert not np.array_equal(x, matrix)  # ... in a new order
    assert np.array_equal(x[:, 0] / 3 * 10, y)  # each target stays with its row
    again = ShuffledWindow(3, seed=5, with_target=True)(table)[FEATURES].numpy()
    other_epoch = ShuffledWindow(3, seed=6, with_target=True)(table)[FEATURES].numpy()
    assert np.array_equal(again, x) and not np.array_equal(other_epoch, x)
    assert TARGET not in ShuffledWindow(3, seed=5, with_target=False)(table)


def test_windows_are_cut_into_batches_and_sized_in_whole_batches() -> None:
    window = ShuffledWindow(3, seed=0, with_target=False)(
        packed_table(np.zeros((10, 3), np.float32), np.zeros(10), chunks=1)
    )
    sizes = [len(x) for x, y in batches_of([window, window], batch_size=4)]
    assert sizes == [4, 4, 2, 4, 4, 2]
    assert window_rows(n_features=10_000, batch_size=128) % 128 == 0
    assert window_rows(n_features=10_000_000, batch_size=128) == 128  # never below one batch
    assert window_rows(784, 128) * 784 * 4 <= 64 << 20
