"""Wide Parquet in, one packed tensor column out.

The flow: :func:`inspect_dataset` reads only the Parquet schema and resolves the candidate
features (naming every bad column); :func:`compute_stats` makes one streaming pass with Ray
Data for per-feature count, nulls, mean, std, min and max; :func:`write_packed` applies the
null policy and standardisation, splits rows by a hashed key, and writes each split with all
features packed into one column (:mod:`cae_ray.runtime.batches`), so a batch of thousands of
features is one tensor rather than thousands (Ray's default collate makes one tensor per column:
~20x slower). Every read keeps file order, so the same inputs give the same rows in the same order.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from cae_ray import storage
from cae_ray.artifacts import digest
from cae_ray.config import AllNumericExcept, DataConfig
from cae_ray.errors import (
    DatasetNotFoundError,
    EmptyDatasetError,
    InfiniteValuesError,
    MissingColumnError,
    MissingDataConfigError,
    NoFeaturesMatchedError,
    NonNumericColumnsError,
    NullValuesRefusedError,
    TargetTaskMismatchError,
)
from cae_ray.runtime.batches import FEATURES, TARGET, pack, unpack
from cae_ray.runtime.compat import read_parquet
from cae_ray.selector.targets import (
    TargetInfo,
    check_classes,
    check_varies,
    decide_task,
    target_kind,
)

logger = logging.getLogger(__name__)

_MIX = np.random.default_rng(0x5EED).integers(1, 2**63, size=1 << 16, dtype=np.uint64) | 1


@dataclass(frozen=True)
class DatasetInfo:
    features: list[str]
    """Candidate features, in file order."""
    n_rows: int
    n_columns: int
    """Every column of the files, features or not."""
    fingerprint: str
    """Changes when the files, their sizes or the schema change."""


@dataclass(frozen=True)
class FeatureStats:
    names: list[str]
    count: np.ndarray
    nulls: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    infinite: np.ndarray
    """+inf and -inf values (they are not missing: no null policy fills them)."""

    def constant(self) -> list[str]:
        """Features with one value (or none): they carry no information."""
        flat = (self.std <= 1e-12) | (self.count == 0)
        return [n for n, c in zip(self.names, flat, strict=True) if c]

    def as_dict(self) -> dict[str, Any]:
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(self).items()}


# --- schema ------------------------------------------------------------------------------------


def open_parquet(path: str) -> pads.Dataset:
    filesystem, location = storage.filesystem(path)
    try:
        return pads.dataset(location, filesystem=filesystem, format="parquet")
    except (FileNotFoundError, pa.ArrowInvalid, OSError) as e:
        raise DatasetNotFoundError(path, str(e)) from e


def inspect_dataset(config: DataConfig) -> DatasetInfo:
    if config.path is None:  # preparation.source_data fills it in from the Feast export
        raise MissingDataConfigError("the data section")
    dataset = open_parquet(config.path)
    schema = dataset.schema
    for role, column in (("target", config.target), ("row_key", config.row_key)):
        if column is not None and column not in schema.names:
            raise MissingColumnError(column, role, schema.names)
    features = resolve_features(schema, config)
    n_rows = dataset.count_rows()
    if n_rows == 0:
        raise EmptyDatasetError(config.path)
    files = sorted(dataset.files)
    sizes = [info.size for info in dataset.filesystem.get_file_info(files)]
    fingerprint = digest(repr((files, sizes, schema.to_string())))
    return DatasetInfo(features, n_rows, len(schema.names), fingerprint)


def resolve_features(schema: pa.Schema, config: DataConfig) -> list[str]:
    """The candidate feature columns named by ``config.features``; all must be numeric."""
    reserved = {c for c in (config.target, config.row_key) if c}
    spec = config.features
    if isinstance(spec, list):
        missing = [c for c in spec if c not in schema.names]
        if missing:
            raise MissingColumnError(missing[0], "feature", schema.names, also=missing[1:])
        chosen = list(spec)
    elif isinstance(spec, str):
        chosen = [c for c in schema.names if fnmatch.fnmatchcase(c, spec) and c not in reserved]
    else:
        excluded = reserved | set(spec.all_numeric_except)
        chosen = [c for c in schema.names if c not in excluded and _numeric(schema.field(c).type)]
    bad = [c for c in chosen if not _numeric(schema.field(c).type)]
    if bad:
        raise NonNumericColumnsError(bad, [str(schema.field(c).type) for c in bad])
    if not chosen:
        raise NoFeaturesMatchedError(_describe(spec), schema.names)
    return chosen


def _numeric(dtype: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(dtype)
        or pa.types.is_floating(dtype)
        or pa.types.is_boolean(dtype)
        or pa.types.is_decimal(dtype)
    )


def _describe(spec: list[str] | str | AllNumericExcept) -> str:
    if isinstance(spec, AllNumericExcept):
        return f"all numeric columns except {spec.all_numeric_except}"
    return repr(spec)


def read_ordered(path: str) -> Any:
    """A Ray dataset of ``path`` whose blocks keep file order, so every run that reads the same
    files sees (and writes) the same rows in the same order."""
    filesystem, location = storage.filesystem(path)
    dataset = read_parquet(location, filesystem)
    dataset.context.execution_options.preserve_order = True  # shared by datasets derived from it
    return dataset


# --- statistics (one streaming pass) ------------------------------------------------------------


def _columns_as_matrix(batch: pa.Table, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(values, null mask), both (rows, features); nulls become NaN in a column-major fill."""
    values = np.empty((len(names), batch.num_rows), np.float64)
    for j, name in enumerate(names):
        column = batch.column(name)
        if column.null_count or not pa.types.is_floating(column.type):
            column = column.cast(pa.float64())
        values[j] = column.to_numpy(zero_copy_only=False)
    values = values.T
    return values, np.isnan(values)


def rows_per_slice(n_features: int, target_bytes: int = 32 << 20) -> int:
    """Rows a UDF works on at a time, so its float64 working copy stays near ``target_bytes``:
    a whole block would need gigabytes per task on tables of tens of thousands of columns."""
    return int(min(4096, max(64, target_bytes // (8 * n_features))))


def row_slices(batch: pa.Table, rows: int) -> list[pa.Table]:
    """``batch`` in slices of ``rows`` (zero-copy); an empty batch is one empty slice.

    The UDFs take Ray's blocks whole (``batch_size=None``) and slice them themselves: asking
    Ray for small batches makes the read emit small blocks, each serialised column by column
    into the object store; whole blocks let Ray fuse the UDF with the read instead.
    """
    return [batch.slice(start, rows) for start in range(0, max(batch.num_rows, 1), rows)]


class BatchStats:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.rows = rows_per_slice(len(names))

    def __call__(self, batch: pa.Table) -> dict[str, np.ndarray]:
        parts = [self._stats(part) for part in row_slices(batch, self.rows)]
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def _stats(self, batch: pa.Table) -> dict[str, np.ndarray]:
        values, nulls = _columns_as_matrix(batch, self.names)
        count = (~nulls).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, np.nansum(values, axis=0) / np.maximum(count, 1), 0.0)
            m2 = np.nansum((values - mean) ** 2, axis=0)
            lo = np.where(count > 0, np.nanmin(np.where(nulls, np.inf, values), axis=0), np.inf)
            hi = np.where(count > 0, np.nanmax(np.where(nulls, -np.inf, values), axis=0), -np.inf)
        return {
            "count": count[None],
            "nulls": nulls.sum(axis=0)[None],
            "mean": mean[None],
            "m2": m2[None],
            "min": lo[None],
            "max": hi[None],
            "infinite": np.isinf(values).sum(axis=0)[None],
        }


def compute_stats(dataset: Any, names: list[str]) -> FeatureStats:
    """Per-feature statistics in one pass of Ray Data tasks over the dataset's blocks."""
    partial = dataset.map_batches(BatchStats(names), batch_format="pyarrow", batch_size=None)
    return merge_stats(names, partial.iter_batches(batch_format="numpy", batch_size=None))


def merge_stats(names: list[str], parts: Iterable[dict[str, np.ndarray]]) -> FeatureStats:
    """The statistics of the whole table from :class:`BatchStats`' partial ones (each a row per
    slice), merged in order with Chan's formula."""
    n = np.zeros(len(names))
    mean, m2, nulls = np.zeros(len(names)), np.zeros(len(names)), np.zeros(len(names))
    infinite = np.zeros(len(names))
    lo, hi = np.full(len(names), np.inf), np.full(len(names), -np.inf)
    for part in parts:
        for i in range(len(part["count"])):
            nb, mb = part["count"][i], part["mean"][i]
            total = n + nb
            delta = mb - mean
            with np.errstate(invalid="ignore", divide="ignore"):
                share = np.where(total > 0, nb / np.maximum(total, 1), 0.0)
            mean = mean + delta * share
            m2 = m2 + part["m2"][i] + delta**2 * n * share
            n = total
            nulls += part["nulls"][i]
            infinite += part["infinite"][i]
            lo, hi = np.minimum(lo, part["min"][i]), np.maximum(hi, part["max"][i])
    std = np.sqrt(m2 / np.maximum(n, 1))
    return FeatureStats(names, n, nulls, mean, std, lo, hi, infinite)


def check_values(stats: FeatureStats, policy: str) -> None:
    """Infinite values are an error naming the columns (whatever the null policy: they are no
    missing value to fill, and one makes the column's mean and the training loss infinite).
    Under ``refuse``, any missing value is an error too; under ``mean`` and ``zero`` they are
    filled, and all-null columns are constant and get dropped."""
    if stats.infinite.any():
        columns = [n for n, c in zip(stats.names, stats.infinite, strict=True) if c > 0]
        raise InfiniteValuesError(columns, stats.infinite[stats.infinite > 0].astype(int).tolist())
    with_nulls = [n for n, c in zip(stats.names, stats.nulls, strict=True) if c > 0]
    if policy == "refuse" and with_nulls:
        counts = stats.nulls[stats.nulls > 0].astype(int).tolist()
        raise NullValuesRefusedError(with_nulls, counts)


# --- target -------------------------------------------------------------------------------------


def resolve_dataset_target(dataset: Any, column: str | None, task: str) -> TargetInfo:
    """The task and encoding of the target column, from its distinct values (Ray Data)."""
    if column is None or task == "reconstruction":
        return reconstruction_target(task)
    return decide_target(
        column,
        task,
        dataset.unique(column),
        count_nulls=lambda: _null_count(dataset, column),
        stats=lambda: compute_stats(dataset.select_columns([column]), [column]),
    )


def reconstruction_target(task: str) -> TargetInfo:
    """No target column: reconstruction, unless the config asked for a supervised task."""
    if task in ("classification", "regression"):
        raise TargetTaskMismatchError(task, "data.target is not set", "set data.target")
    return TargetInfo("reconstruction")


def decide_target(
    column: str,
    task: str,
    distinct: list[Any],
    count_nulls: Callable[[], int],
    stats: Callable[[], FeatureStats],
) -> TargetInfo:
    """The target's task and encoding from its ``distinct`` values, by
    :func:`cae_ray.selector.targets.decide_task` (the estimator's rule too). ``count_nulls``
    and ``stats`` are passes over the column, made only when needed."""
    if any(v is None or (isinstance(v, float) and np.isnan(v)) for v in distinct):
        raise NullValuesRefusedError([column], [count_nulls()])
    values = np.asarray(distinct)
    if decide_task(task, target_kind(values, task), values) == "classification":
        classes = np.asarray(sorted(distinct)).tolist()
        check_classes(classes)
        return TargetInfo("classification", classes=classes)
    found = stats()
    check_varies(found.std[0], float(found.mean[0]))
    return TargetInfo("regression", mean=float(found.mean[0]), std=float(found.std[0]))


def _null_count(dataset: Any, column: str) -> int:
    """Nulls and NaNs of a column (only counted when there are some, for the error)."""
    batches = dataset.select_columns([column]).iter_batches(batch_format="pyarrow", batch_size=None)
    return sum(int(pc.sum(pc.is_null(b[column], nan_is_null=True)).as_py()) for b in batches)


# --- split and pack -----------------------------------------------------------------------------


def row_hash_fraction(batch: pa.Table, key: str | None, packed: np.ndarray) -> np.ndarray:
    """A number in [0, 1) per row, fixed by the row's key (or its feature values)."""
    if key is not None:
        hashed = pd.util.hash_array(batch.column(key).to_numpy(zero_copy_only=False))
    else:
        bits = np.ascontiguousarray(packed, np.float32).view(np.uint32).astype(np.uint64)
        width = bits.shape[1]
        mix = np.resize(_MIX, width)
        hashed = (bits * mix).sum(axis=1, dtype=np.uint64)
        hashed = pd.util.hash_array(hashed)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class Packer:
    """A Ray Data UDF: impute, scale, keep one split, and pack features into one column."""

    def __init__(
        self,
        config: DataConfig,
        stats: FeatureStats,
        keep: list[str],
        target: TargetInfo,
        split: str,
    ) -> None:
        index = {n: i for i, n in enumerate(stats.names)}
        rows = [index[n] for n in keep]
        self.names, self.config, self.target, self.split = keep, config, target, split
        self.fill = stats.mean[rows] if config.null_policy == "mean" else np.zeros(len(rows))
        standard = config.scaling == "standard"
        self.center = stats.mean[rows] if standard else np.zeros(len(rows))
        self.scale = stats.std[rows] if standard else np.ones(len(rows))
        self.rows = rows_per_slice(len(keep))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return pa.concat_tables([self._pack(part) for part in row_slices(batch, self.rows)])

    def _pack(self, batch: pa.Table) -> pa.Table:
        values, nulls = _columns_as_matrix(batch, self.names)
        values = np.where(nulls, self.fill, values)
        packed = ((values - self.center) / self.scale).astype(np.float32)
        held_out = row_hash_fraction(batch, self.config.row_key, packed) < (
            self.config.validation_fraction
        )
        rows = held_out if self.split == "validation" else ~held_out
        out = {FEATURES: pack(packed[rows])}
        if self.target.task != "reconstruction":
            assert self.config.target is not None
            raw = batch.column(self.config.target).to_numpy(zero_copy_only=False)[rows]
            out[TARGET] = pa.array(self._encode(raw))
        return pa.table(out)

    def _encode(self, raw: np.ndarray) -> np.ndarray:
        if self.target.classes is not None:
            lookup = {c: i for i, c in enumerate(self.target.classes)}
            return np.fromiter((lookup[v] for v in raw.tolist()), np.int64, len(raw))
        return ((raw.astype(np.float64) - self.target.mean) / self.target.std).astype(np.float32)


def write_packed(
    dataset: Any,
    config: DataConfig,
    stats: FeatureStats,
    keep: list[str],
    target: TargetInfo,
    splits: dict[str, str],
) -> dict[str, int]:
    """Write the ``train`` and ``validation`` splits to their directories; their row counts."""
    from cae_ray.runtime.parquet_sink import OrderedParquetSink, full_disk_unlogged

    counts = {}
    for split, directory in splits.items():
        packer = Packer(config, stats, keep, target, split)
        packed = dataset.map_batches(packer, batch_format="pyarrow", batch_size=None)
        storage.remove(directory)  # a killed earlier write left parts
        with full_disk_unlogged():  # the step raises it, typed
            packed.write_datasink(OrderedParquetSink(directory))  # see there: Ray's reorders
        counts[split] = int(pq_count(directory))
    return counts


def packed_bytes(rows: int, n_features: int) -> int:
    """At most the bytes of both packed splits: ``rows`` of ``n_features`` float32s and a target
    (written uncompressed), and a little for the files' own structure."""
    return rows * (4 * n_features + 8) + 2 * ROW_GROUP_SLACK


ROW_GROUP_SLACK = 64 * 1024
"""A split's Parquet footer, page headers and file-system blocks, and then some."""


def pq_count(path: str) -> int:
    return int(open_parquet(path).count_rows())


def split_files(path: str) -> dict[str, int]:
    """A packed split's Parquet files (locations, in name order: the rows' order) and sizes."""
    found = storage.files(path)
    return {storage.join(path, n): size for n, size in found.items() if n.endswith(".parquet")}


def read_split(
    path: str, n_features: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A packed split in memory, in file order: (features, target or None), at most ``limit``
    rows (the split's rows are in hashed order, so its first rows are a random sample)."""
    tables, rows = [], 0
    for file in split_files(path):
        table = storage.read_table(file)
        tables.append(table)
        rows += table.num_rows
        if limit is not None and rows >= limit:
            break
    table = pa.concat_tables(tables).slice(0, limit)
    x = unpack(table[FEATURES], n_features)
    y = table[TARGET].to_numpy() if TARGET in table.column_names else None
    return x, y
