"""The prepare step: check the dataset, compute per-feature statistics, and write the packed
train and validation splits that select and validate read.

    prepare(config, run) -> RUN_DIR/data/train/, data/validation/ and data/prepared.json

The dataset is ``data.path``, or else the Feast export in the run dir (:func:`source_data`).
Finished work is reused when the config's data and head sections, the files' fingerprint and
the written splits are as they were. A full disk (raised in a Ray worker) removes the splits
written so far and says how much room they need (:class:`~cae_ray.storage.DiskFullError`).
"""

from __future__ import annotations

import logging
from typing import Any

from cae_ray import storage
from cae_ray.artifacts import (
    EXPORT_DIR,
    PREPARE_INPUTS,
    TRAIN_SPLIT,
    VALIDATION_SPLIT,
    RunDir,
    config_hash,
)
from cae_ray.config import AllNumericExcept, Config, DataConfig
from cae_ray.errors import LabelNotExportedError, MissingDataConfigError, NoExportError
from cae_ray.records import ExportManifest, Prepared, SplitRows
from cae_ray.runtime import driver_data
from cae_ray.runtime.cluster import connect
from cae_ray.runtime.data import (
    DatasetInfo,
    FeatureStats,
    check_values,
    compute_stats,
    inspect_dataset,
    packed_bytes,
    read_ordered,
    resolve_dataset_target,
    write_packed,
)
from cae_ray.runtime.driver_data import where_to_prepare
from cae_ray.selector.targets import TargetInfo

logger = logging.getLogger(__name__)


def prepare(config: Config, run: RunDir) -> Prepared:
    """Check the dataset, compute per-feature statistics, and write the packed splits."""
    data = source_data(config, run)
    info = inspect_dataset(data)
    config.selector.check_fits(len(info.features))  # before Ray starts: the schema says it
    made_from = {"config": config_hash(config, *PREPARE_INPUTS), "fingerprint": info.fingerprint}
    done = Prepared.reusable(run, made_from)
    if done is not None:
        logger.info("prepare: reusing %s", run.path("data"))
        return done

    # The cluster (and its GPUs) is checked before anything is written, even when the driver
    # prepares: select needs it next, and a run that cannot train should leave no splits.
    connect(config)
    in_driver = where_to_prepare(config.scaling.prepare_in, info.n_rows, len(info.features))
    logger.info(
        "prepare: statistics of %d features over %d rows (%s)",
        len(info.features),
        info.n_rows,
        "in the driver" if in_driver == "driver" else "Ray Data",
    )
    passes: _RayPasses | _DriverPasses = (
        _DriverPasses(str(data.path)) if in_driver == "driver" else _RayPasses(data, info)
    )
    stats = passes.stats(info.features)
    check_values(stats, data.null_policy)
    constant = stats.constant()
    keep = [n for n in info.features if n not in set(constant)]
    config.selector.check_fits(len(keep), constant)
    target = passes.target(data.target, config.head.task)
    splits = {"train": run.path(TRAIN_SPLIT), "validation": run.path(VALIDATION_SPLIT)}
    try:
        counts = passes.write_packed(data, stats, keep, target, splits)
        prepared = Prepared(
            **made_from,
            path=str(data.path),
            candidate_features=info.features,
            features=keep,
            dropped_constant=constant,
            target={"column": data.target, **target.as_dict()},
            rows=SplitRows(**counts),
            stats=stats.as_dict(),
            files=run.files(TRAIN_SPLIT, VALIDATION_SPLIT),
        )
        prepared.write(run)
    except Exception as e:  # a full disk, raised in a Ray worker: Ray wraps it
        if not storage.is_disk_full(e):
            raise
        for directory in splits.values():  # splits without prepared.json are not reused
            storage.remove(directory)
        needed = packed_bytes(info.n_rows, len(keep))
        raise storage.disk_full(e, run.path("data"), needed, "writing the packed splits") from e
    return prepared


class _RayPasses:
    """The passes over the table as Ray Data tasks across the cluster (large tables)."""

    def __init__(self, data: DataConfig, info: DatasetInfo) -> None:
        self.source = read_ordered(str(data.path))
        columns = [*info.features, *(c for c in (data.target, data.row_key) if c)]
        # Ray's Parquet reader matches every leaf column against every selected name
        # (quadratic: two minutes a pass at 10,000 columns), so the read is narrowed only where
        # that saves real work; otherwise the UDFs just take their columns by name.
        if len(columns) <= info.n_columns // 2:
            self.source = self.source.select_columns(columns)

    def stats(self, names: list[str]) -> FeatureStats:
        return compute_stats(self.source, names)

    def target(self, column: str | None, task: str) -> TargetInfo:
        return resolve_dataset_target(self.source, column, task)

    def write_packed(self, *how: Any) -> dict[str, int]:
        return write_packed(self.source, *how)


class _DriverPasses:
    """The same passes in this process, with pyarrow (:mod:`cae_ray.runtime.driver_data`)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def stats(self, names: list[str]) -> FeatureStats:
        return driver_data.compute_stats(self.path, names)

    def target(self, column: str | None, task: str) -> TargetInfo:
        return driver_data.resolve_target(self.path, column, task)

    def write_packed(self, *how: Any) -> dict[str, int]:
        return driver_data.write_packed(self.path, *how)


def source_data(config: Config, run: RunDir) -> DataConfig:
    """The dataset to select from: ``data.path``, or else the Feast export in the run dir, whose
    exported feature columns are the candidates (unless ``data.features`` names others). A
    target that names a Feast feature (``view:field``) is the export's column for it."""
    data = config.data
    if data is not None and data.path is not None:
        # Relative to the driver's working directory, which Ray workers do not share.
        update: dict[str, Any] = {"path": storage.location(data.path)}
        if config.feast_label is not None:
            update["target"] = _label_column(config.feast_label, run)
        return data.model_copy(update=update)
    if config.feast is None or not config.feast.has_entity_rows:
        raise MissingDataConfigError("the config")
    manifest = ExportManifest.read(run)
    if manifest is None:
        raise NoExportError(str(run))
    data = data or DataConfig()
    update = {"path": run.path(EXPORT_DIR)}
    update["row_key"] = data.row_key or manifest.row_key
    if data.features == AllNumericExcept():
        update["features"] = list(manifest.columns)
    if config.feast_label is not None:
        update["target"] = _label_column(config.feast_label, run)
    return data.model_copy(update=update)


def _label_column(label: str, run: RunDir) -> str:
    """The export's column of the Feast feature ``label`` (the manifest names it)."""
    manifest = ExportManifest.read(run)
    exported = manifest.label if manifest is not None else None
    if exported is None or exported.ref != label:
        raise LabelNotExportedError(str(run), label, exported.ref if exported else None)
    return exported.column
